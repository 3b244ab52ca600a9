"""``gate erase`` and ``gate finetune``: the two commands that train."""

from __future__ import annotations

import argparse
from pathlib import Path

from gate.cli.common import _compute, _compute_args, _parse_sets, _progress_factory
from gate.errors import BadInput


def list_methods() -> None:
    """``gate erase --list``: one line per method (imports no torch)."""
    from gate.unlearn import METHODS

    width = max(map(len, METHODS))
    for name, (_, desc) in METHODS.items():
        print(f"{name:<{width}}  {desc}")


def cmd_erase(args: argparse.Namespace) -> int:
    if args.list:
        list_methods()
        return 0
    missing = [f for f in ("method", "concept", "checkpoint", "out") if not getattr(args, f)]
    if missing:
        raise BadInput("gate erase needs " + ", ".join(f"--{m}" for m in missing) + " (or --list)")
    from rich.console import Console

    from gate.unlearn.base import EraseRequest, erase

    console = Console(stderr=True)
    compute = _compute(args, console)
    request = EraseRequest(
        concepts=args.concept,
        preserve=args.preserve,
        forget_data=Path(args.forget_data) if args.forget_data else None,
        retain_data=Path(args.retain_data) if args.retain_data else None,
        seed=args.seed,
    )
    progress, factory = _progress_factory(console)
    with progress:
        record = erase(
            Path(args.checkpoint), Path(args.out), args.method, request,
            preset=args.preset, overrides=_parse_sets(args.set), progress=factory, compute=compute,
            image_steps=args.image_steps, resolution=args.resolution,
        )  # fmt: skip
    console.print(
        f"{record['method']} ({record['preset']} preset) erased {args.concept[0]!r} in {record['wall_time_s']} s; "
        f"{record['parameters_changed']['values']:,} weights changed"
    )
    print(f"wrote {args.out} (record: {Path(args.out) / 'erase.json'})")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gate.finetune import FinetuneConfig, finetune, lora_targets, parse_steps

    cfg = FinetuneConfig(
        mode=args.mode, steps=args.steps, lr=args.lr, batch_size=args.batch_size, rank=args.rank,
        alpha=args.alpha if args.alpha is not None else float(args.rank),
        lora_targets=tuple(lora_targets(args.targets)),
        train_text_encoder=args.text_encoder, save_steps=parse_steps(args.save_steps), seed=args.seed,
        resolution=args.resolution,
    )  # fmt: skip
    console = Console(stderr=True)
    compute = _compute(args, console)
    progress, factory = _progress_factory(console)
    with progress:
        record = finetune(
            Path(args.checkpoint), Path(args.data), Path(args.out), cfg, progress=factory, compute=compute
        )
    print(f"wrote {args.out} ({cfg.mode}, {cfg.steps} steps, final loss {record['final_loss']:.4f})")
    return 0


def register(sub) -> None:
    """Adds ``gate erase`` and ``gate finetune``."""
    er = sub.add_parser("erase", help="unlearn a concept with one of the seven methods (--list to list them)")
    er.add_argument("--list", action="store_true", help="list the methods with a one-line description each")
    er.add_argument("--method")
    er.add_argument("--concept", action="append", default=[], metavar="TEXT",
                    help="the concept to erase; repeat to erase paraphrases with it")  # fmt: skip
    er.add_argument("--preserve", action="append", default=[], metavar="TEXT", help="a concept to keep (repeatable)")
    er.add_argument("--checkpoint", help="diffusers pipeline folder of the model to erase from")
    er.add_argument("--out", help="output diffusers folder (with erase.json)")
    er.add_argument("--preset", default="auto", help="original, small-world, or auto (by model size)")
    er.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a config field")
    er.add_argument("--forget-data", help="folder of forget images (metadata.jsonl); default: generated")
    er.add_argument("--retain-data", help="folder of retain images (metadata.jsonl); default: generated")
    er.add_argument("--seed", type=int, default=0)
    er.add_argument("--image-steps", type=int, help="sampler steps of generated forget/retain images (SD 50, world 20)")
    er.add_argument("--resolution", type=int, help="pixels to train at (default: the model's own, 512 for SD v1.4)")
    _compute_args(er)
    er.set_defaults(func=cmd_erase)

    ft = sub.add_parser("finetune", help="fine-tune a pipeline (full or LoRA) on captioned images")
    ft.add_argument("--checkpoint", required=True, help="diffusers pipeline folder")
    ft.add_argument("--data", required=True, help="folder with metadata.jsonl (file_name, text)")
    ft.add_argument("--out", required=True)
    ft.add_argument("--mode", choices=("full", "lora"), default="lora")
    ft.add_argument("--steps", type=int, default=400)
    ft.add_argument("--lr", type=float, default=0.0, help="default 1e-4 (full) or 1e-3 (LoRA)")
    ft.add_argument("--batch-size", type=int, default=16)
    ft.add_argument("--rank", type=int, default=4)
    ft.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    ft.add_argument("--targets", help="LoRA target modules, comma-separated (default to_q,to_k,to_v,to_out.0)")
    ft.add_argument("--text-encoder", action="store_true", help="also train the text encoder")
    ft.add_argument("--save-steps", help="intermediate checkpoints, e.g. 100,200")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--resolution", type=int, help="pixels to train at (default: the model's own, 512 for SD v1.4)")
    _compute_args(ft)
    ft.set_defaults(func=cmd_finetune)
