"""The model under test: an unlearned checkpoint plus an optional candidate update.

Checkpoint forms: a diffusers folder; a single-file ``.safetensors`` (``from_single_file``, with
``--config`` naming a local diffusers folder for the architecture, since nothing is fetched); a
hub id resolved from the local cache only. Update forms: none; a LoRA ``.safetensors`` (diffusers,
peft or kohya key names; or a folder holding one); a full fine-tune as a diffusers folder; a UNet
or text-encoder ``.safetensors`` state dict.

Untrusted weights are never unpickled: ``.ckpt/.bin/.pt/.pth`` files are refused unless
``allow_pickle``, and then read with ``torch.load(weights_only=True)``. Non-finite weights are
refused. Every input is identified by a content hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import BadInput

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
RECORDS = ("erase.json", "finetune.json", "build.json", "MODEL_CARD.md")


@dataclass
class Identity:
    kind: str
    path: str
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256, **self.extra}


def _refuse_pickle(path: Path, allow_pickle: bool, what: str) -> None:
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise BadInput(
            f"{what} {path}: a pickle file; pickles can run code and are refused. Convert it to .safetensors, "
            "or pass --allow-pickle to read it with torch.load(weights_only=True)"
        )


def _hash(path: Path) -> str:
    from gate.sd import hash_tree

    return hash_tree(path, skip=RECORDS)


def resolve_checkpoint(spec: str, *, config: str | None = None, allow_pickle: bool = False) -> tuple[str, Path | None]:
    """(kind, path): kind is folder, single_file or hub; path is None for a hub id not on disk."""
    p = Path(spec)
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise BadInput(f"--checkpoint {spec}: a folder without model_index.json is not a diffusers pipeline")
        return "folder", p
    if p.suffix in (".safetensors", *PICKLE_SUFFIXES):
        if not p.is_file():
            raise BadInput(f"--checkpoint {spec}: no such file")
        _refuse_pickle(p, allow_pickle, "--checkpoint")
        return "single_file", p
    if "/" in spec and not p.exists() and spec.count("/") == 1:
        return "hub", None
    raise BadInput(
        f"--checkpoint {spec}: no such folder or file (give a diffusers folder, a .safetensors file or a cached hub id)"
    )


def check_finite(module, what: str) -> None:
    import torch

    for name, t in module.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadInput(f"{what}: weight {name} holds NaN or infinite values; the file is corrupt or diverged")


def load_checkpoint(
    spec: str, *, config: str | None = None, allow_pickle: bool = False, device: str = "cpu", dtype=None
):
    """Returns (pipeline, Identity)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from gate.pipeline import load_pipeline, quiet_hub_progress

    quiet_hub_progress()
    kind, path = resolve_checkpoint(spec, config=config, allow_pickle=allow_pickle)
    dtype = dtype or torch.float32
    if kind == "folder":
        assert path is not None
        pipe = _guard(lambda: load_pipeline(path, device=device, dtype=dtype), f"--checkpoint {spec}")
        ident = Identity("diffusers-folder", str(path), _hash(path))
    elif kind == "single_file":
        assert path is not None
        if config is None:
            raise BadInput(
                f"--checkpoint {spec}: a single-file checkpoint needs --config FOLDER "
                "(a local diffusers folder of the same architecture); nothing is downloaded"
            )
        if path.suffix == ".safetensors":
            from gate.updates import read_safetensors_header

            read_safetensors_header(path)  # truncated or corrupt files end here with a clear message
        pipe = _guard(
            lambda: StableDiffusionPipeline.from_single_file(
                str(path), config=config, local_files_only=True, safety_checker=None, torch_dtype=dtype
            ),
            f"--checkpoint {spec}",
        ).to(device)
        pipe.set_progress_bar_config(disable=True)
        ident = Identity("single-file", str(path), _hash(path), {"config": config})
    else:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        pipe = _guard(
            lambda: StableDiffusionPipeline.from_pretrained(
                spec, local_files_only=True, safety_checker=None, dtype=dtype
            ),
            f"--checkpoint {spec} (hub id, local cache only)",
        ).to(device)
        pipe.set_progress_bar_config(disable=True)
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(spec, local_files_only=True))
        ident = Identity("hub-cache", spec, _hash(snap), {"snapshot": snap.name})
    check_finite(pipe.unet, f"--checkpoint {spec} (unet)")
    check_finite(pipe.text_encoder, f"--checkpoint {spec} (text encoder)")
    return pipe, ident


def _guard(fn, what: str):
    try:
        return fn()
    except BadInput:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise BadInput(f"{what}: cannot be loaded ({type(e).__name__}: {msg})") from None


def update_kind(spec: str) -> str:
    p = Path(spec)
    if p.is_dir():
        if (p / "model_index.json").is_file() or (p / "unet").is_dir():
            return "full-folder"
        if any(p.glob("*.safetensors")):
            return "lora"
        raise BadInput(f"--update {spec}: a folder with neither a diffusers model nor a .safetensors LoRA")
    if not p.is_file():
        raise BadInput(f"--update {spec}: no such file or folder")
    if p.suffix in PICKLE_SUFFIXES:
        return "weights"
    if p.suffix != ".safetensors":
        raise BadInput(f"--update {spec}: unknown file type {p.suffix!r} (give .safetensors or a diffusers folder)")
    from gate.updates import read_safetensors_header

    keys, _, _ = read_safetensors_header(p)
    return "lora" if any("lora" in k for k in keys) else "weights"


def preflight_update(pipe, spec: str | None, *, allow_pickle: bool = False) -> None:
    """Every check of ``apply_update`` that does not change ``pipe``: run before any image is
    generated, so that bad input ends the run at once."""
    if not spec:
        return
    kind = update_kind(spec)
    p = Path(spec)
    if kind == "lora":
        from gate.updates import check_lora_fits, lora_file

        check_lora_fits(pipe, lora_file(p))
    elif kind == "weights":
        _refuse_pickle(p, allow_pickle, "--update")
        if p.suffix == ".safetensors":
            from gate.updates import read_safetensors_header

            keys, shapes, _ = read_safetensors_header(p)
            own = {**{f"unet.{k}": v.shape for k, v in pipe.unet.state_dict().items()},
                   **{f"text_encoder.{k}": v.shape for k, v in pipe.text_encoder.state_dict().items()}}  # fmt: skip
            for k in keys:
                full = k if k.startswith(("unet.", "text_encoder.")) else f"unet.{k}"
                if full not in own or tuple(own[full]) != tuple(shapes[k]):
                    raise BadInput(f"--update {spec}: tensor {k} does not fit this model (unknown key or other shape)")
    elif not (p / "unet" / "config.json").is_file():
        raise BadInput(f"--update {spec}: no unet/config.json in this diffusers folder")


def apply_update(pipe, spec: str | None, *, lora_scale: float = 1.0, allow_pickle: bool = False) -> Identity | None:
    """Applies the candidate update to ``pipe`` in place. Returns its identity (None for none)."""
    if not spec:
        return None
    kind = update_kind(spec)
    p = Path(spec)
    if kind == "lora":
        from gate.updates import load_lora, lora_file

        f = lora_file(p)
        counts = load_lora(pipe, f, scale=lora_scale)
        ident = Identity("lora", str(f), _hash(f), {"scale": lora_scale, "modules": counts})
    elif kind == "full-folder":
        _load_full_folder(pipe, p)
        ident = Identity("full-folder", str(p), _hash(p))
    else:
        _refuse_pickle(p, allow_pickle, "--update")
        _load_state_file(pipe, p)
        ident = Identity("weights-file", str(p), _hash(p))
    check_finite(pipe.unet, f"--update {spec} (unet)")
    check_finite(pipe.text_encoder, f"--update {spec} (text encoder)")
    return ident


def _load_full_folder(pipe, folder: Path) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    root = folder
    unet_dir = root / "unet"
    if not unet_dir.is_dir():
        raise BadInput(f"--update {folder}: no unet/ subfolder")
    unet = _guard(
        lambda: UNet2DConditionModel.from_pretrained(str(unet_dir), local_files_only=True), f"--update {folder} (unet)"
    )
    # keys such as _name_or_path and _diffusers_version record where and how a folder was saved,
    # not the architecture; every other key must match
    keys = {k for k in set(unet.config) | set(pipe.unet.config) if k == "_class_name" or not k.startswith("_")}
    diff = sorted(k for k in keys if unet.config.get(k) != pipe.unet.config.get(k))
    if diff:
        raise BadInput(
            f"--update {folder}: its UNet is another architecture than the checkpoint's "
            f"(differs in {', '.join(diff[:5])})"
        )
    pipe.unet.load_state_dict(unet.state_dict())
    te_dir = root / "text_encoder"
    if te_dir.is_dir():
        te = _guard(
            lambda: CLIPTextModel.from_pretrained(str(te_dir), local_files_only=True),
            f"--update {folder} (text encoder)",
        )
        _load_strict(pipe.text_encoder, te.state_dict(), f"--update {folder} (text encoder)")


def _load_state_file(pipe, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from gate.updates import read_safetensors_header

        read_safetensors_header(path)
        state = load_file(str(path))
    else:
        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise BadInput(f"--update {path}: not a plain tensor state dict ({type(e).__name__}); refused") from None
        if not isinstance(state, dict):
            raise BadInput(f"--update {path}: expected a state dict of tensors")
    unet_keys = {k.removeprefix("unet."): v for k, v in state.items() if not k.startswith("text_encoder.")}
    te_keys = {k.removeprefix("text_encoder."): v for k, v in state.items() if k.startswith("text_encoder.")}
    if unet_keys:
        _load_strict(pipe.unet, unet_keys, f"--update {path} (unet)", partial=True)
    if te_keys:
        _load_strict(pipe.text_encoder, te_keys, f"--update {path} (text encoder)", partial=True)


def _load_strict(module, state: dict, what: str, partial: bool = False) -> None:
    own = module.state_dict()
    unknown = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [] if partial else [k for k in own if k not in state]
    if unknown or wrong or missing:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown keys (e.g. {unknown[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        raise BadInput(f"{what}: does not fit this model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=False)
