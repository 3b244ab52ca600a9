"""``python -m gate.realarch``: build the real-architecture tier's models and updates ahead of a
test run (CI can cache the folder), or on their own. Each target is made once, atomically.

    python -m gate.realarch ensure sd14 CACHE_DIR           prints the pipeline folder
    python -m gate.realarch peft-lora FOLDER OUT            a diffusers/peft LoRA folder
    python -m gate.realarch kohya-lora FOLDER OUT.safetensors
    python -m gate.realarch unet-folder FOLDER OUT
    python -m gate.realarch single-file FOLDER OUT.safetensors
    python -m gate.realarch open-clip-l14 OUT.safetensors
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from gate.realarch import (
    ARCHS,
    ensure,
    made,
    make_kohya_lora,
    make_open_clip_l14,
    make_peft_lora,
    make_single_file,
    make_unet_folder,
)

MAKERS: dict[str, tuple[Callable[..., Path], str]] = {
    "peft-lora": (make_peft_lora, "a diffusers/peft LoRA folder for a pipeline folder"),
    "kohya-lora": (make_kohya_lora, "a kohya LoRA file for a pipeline folder"),
    "unet-folder": (make_unet_folder, "a bare fine-tuned UNet folder for a pipeline folder"),
    "single-file": (make_single_file, "a pipeline folder as an original-SD single-file checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gate.realarch",
        description="Build the real-architecture tier's models and updates (each once, atomically).",
    )
    sub = ap.add_subparsers(dest="what", required=True)
    en = sub.add_parser("ensure", help="build a pipeline folder once into CACHE_DIR")
    en.add_argument("arch", choices=sorted(ARCHS))
    en.add_argument("cache_dir")
    for name, (_, what) in MAKERS.items():
        p = sub.add_parser(name, help=what)
        p.add_argument("folder")
        p.add_argument("out")
    oc = sub.add_parser("open-clip-l14", help="an open_clip ViT-L-14 with random weights")
    oc.add_argument("out")
    args = ap.parse_args(argv)
    from gate.pipeline import quiet_hub_progress

    quiet_hub_progress()
    if args.what == "ensure":
        out = ensure(args.arch, args.cache_dir)
    elif args.what == "open-clip-l14":
        out = made(Path(args.out), make_open_clip_l14)
    else:
        make = MAKERS[args.what][0]
        out = made(Path(args.out), lambda tmp: make(args.folder, tmp))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
