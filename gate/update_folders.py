"""Full-weight updates from folders: a fine-tuned diffusers pipeline folder and a bare UNet
folder, checked against the model's architecture (config.json) before any image and read with
diffusers' own loaders, safetensors only unless the user allows pickles (``gate.updates`` puts
them in its table).
"""

from __future__ import annotations

import json
from pathlib import Path

from gate.lora import (
    _refusal,
)
from gate.weights import PICKLE_SUFFIXES, guard

# ---------------------------------------------------------------------------------------
# full weights: a diffusers pipeline folder, a bare UNet folder, a state-dict file

FULL, UNET_DIR = "a diffusers pipeline folder", "a bare UNet folder"


def _weights_of(folder: Path, allow_pickle: bool, where: tuple[str, Path, str]) -> bool:
    """True when ``folder`` holds safetensors weights; pickles only with ``allow_pickle``."""
    flag, path, form = where
    if any(folder.glob("*.safetensors")):
        return True
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] if folder.is_dir() else []
    label = "it" if folder == path else f"its {folder.name}/"
    if pickles and not allow_pickle:
        raise _refusal(
            flag,
            path,
            form,
            f"{label} holds only pickle weights ({', '.join(pickles)}); pickles "
            "can run code and are refused: convert them to .safetensors, or pass --allow-pickle",
        )
    if not pickles:
        raise _refusal(flag, path, form, f"{label} holds no weights file")
    return False


def _read_unet(folder: Path, where: tuple[str, Path, str], allow_pickle: bool = False):
    from diffusers import UNet2DConditionModel

    safe = _weights_of(folder, allow_pickle, where)
    flag, path, form = where
    return guard(
        lambda: UNet2DConditionModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=safe),
        f"{flag} {path} ({form}{', unet' if folder != path else ''})",
    )


def _arch_diff(own: dict, cfg: dict) -> list[str]:
    # keys such as _name_or_path and _diffusers_version record where and how a folder was saved,
    # not the architecture; every other key both configs have must match
    return sorted(k for k in cfg if not k.startswith("_") and k in own and _norm(cfg[k]) != _norm(own[k]))


def _norm(v):
    return list(v) if isinstance(v, tuple | list) else v


def _config(path: Path, where: tuple[str, Path, str]) -> dict:
    flag, p, form = where
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _refusal(
            flag, p, form, f"unreadable {path.relative_to(p) if path != p else path.name} ({type(e).__name__})"
        ) from None


def _unet_config_fits(pipe, folder: Path, where: tuple[str, Path, str]) -> None:
    """Preflight of a UNet folder: its config.json must describe the checkpoint's architecture."""
    cfg = _config(folder / "config.json", where)
    diff = _arch_diff(dict(pipe.unet.config), cfg)
    if diff:
        raise _refusal(
            *where, f"its UNet is another architecture than the checkpoint's (differs in {', '.join(diff[:5])})"
        )


def _text_config_fits(pipe, folder: Path, where: tuple[str, Path, str]) -> None:
    cfg = _config(folder / "config.json", where)
    own = pipe.text_encoder.config.to_dict()
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
        "hidden_act",
        "projection_dim",
    )
    diff = [k for k in keys if k in cfg and k in own and cfg[k] != own[k]]
    if diff:
        raise _refusal(
            *where, f"its text encoder is another architecture than the checkpoint's (differs in {', '.join(diff[:5])})"
        )


def _same_architecture(pipe, unet, where: tuple[str, Path, str]) -> None:
    own = {k: v for k, v in pipe.unet.config.items() if k == "_class_name" or not k.startswith("_")}
    cfg = {k: v for k, v in unet.config.items() if k == "_class_name" or not k.startswith("_")}
    diff = sorted(k for k in set(own) | set(cfg) if _norm(own.get(k)) != _norm(cfg.get(k)))
    if diff:
        raise _refusal(
            *where, f"its UNet is another architecture than the checkpoint's (differs in {', '.join(diff[:5])})"
        )


def _full_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    where = ("--update", p, FULL)
    if not (p / "unet").is_dir():
        raise _refusal(*where, "no unet/ subfolder")
    if not (p / "unet" / "config.json").is_file():
        raise _refusal(*where, "no unet/config.json in this diffusers folder")
    _unet_config_fits(pipe, p / "unet", where)
    _weights_of(p / "unet", allow_pickle, where)
    if (p / "text_encoder").is_dir():
        _text_config_fits(pipe, p / "text_encoder", where)
        _weights_of(p / "text_encoder", allow_pickle, where)


def _load_full_folder(pipe, p: Path, allow_pickle: bool) -> None:
    from transformers import CLIPTextModel

    where = ("--update", p, FULL)
    _full_preflight(pipe, p, allow_pickle)
    unet = _read_unet(p / "unet", where, allow_pickle)
    _same_architecture(pipe, unet, where)
    pipe.unet.load_state_dict(unet.state_dict())
    te_dir = p / "text_encoder"
    if te_dir.is_dir():
        safe = _weights_of(te_dir, allow_pickle, where)
        te = guard(
            lambda: CLIPTextModel.from_pretrained(str(te_dir), local_files_only=True, use_safetensors=safe),
            f"--update {p} ({FULL}, text encoder)",
        )
        _load_strict(pipe.text_encoder, te.state_dict(), where, "text encoder")


def _load_unet_folder(pipe, p: Path, allow_pickle: bool) -> None:
    where = ("--update", p, UNET_DIR)
    unet = _read_unet(p, where, allow_pickle)
    _same_architecture(pipe, unet, where)
    pipe.unet.load_state_dict(unet.state_dict())


def _load_strict(module, state: dict, where: tuple[str, Path, str], part: str, partial: bool = False) -> None:
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
        raise _refusal(*where, f"its {part} does not fit this model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=False)
