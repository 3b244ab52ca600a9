"""Applying a candidate update to a pipeline, refusing anything that does not fit it.

One table, ``UPDATE_KINDS``, says for each kind of update how it is recognised, what is checked
before any image is made (``preflight``) and how it is applied (``apply``); ``gate.model``'s
``preflight_update`` and ``apply_update`` both read it, so the two can never disagree.

A LoRA is checked against the model before it is loaded: every LoRA module must name a layer
of this UNet / text encoder, with matching input and output sizes. diffusers on its own
skips keys it cannot place (a warning, then a silently unchanged model); for a safety gate
that would pass an update that was never applied, so it is an error here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gate.errors import BadInput
from gate.weights import Identity, content_hash, guard, read_safetensors_header, refuse_pickle

_PEFT = re.compile(r"^(unet|text_encoder)\.(.+)\.(lora_A|lora_B|lora\.down|lora\.up)(\.[^.]+)?\.weight$")


def lora_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        cands = sorted(path.glob("*.safetensors"))
        if not cands:
            raise BadInput(f"{path}: no .safetensors LoRA file in this folder")
        if len(cands) > 1:
            names = [c.name for c in cands]
            if "pytorch_lora_weights.safetensors" in names:
                return path / "pytorch_lora_weights.safetensors"
            raise BadInput(f"{path}: several .safetensors files ({', '.join(names)}); name the LoRA file")
        return cands[0]
    if not path.is_file():
        raise BadInput(f"{path}: no such LoRA file")
    if path.suffix != ".safetensors":
        raise BadInput(f"{path}: LoRA files must be .safetensors (pickled weights are never loaded)")
    return path


def check_lora_fits(pipe, path: Path) -> dict[str, int]:
    """Raises BadInput unless every diffusers/peft-format LoRA module of ``path`` fits ``pipe``.
    Returns the number of LoRA modules per component."""
    keys, shapes, _ = read_safetensors_header(path)
    modules: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(dict)
    other = []
    for k in keys:
        m = _PEFT.match(k)
        if m:
            comp, mod, kind = m.group(1), m.group(2), m.group(3)
            modules[(comp, mod)]["down" if kind in ("lora_A", "lora.down") else "up"] = shapes[k]
        elif "alpha" not in k:
            other.append(k)
    if not modules and not other:
        raise BadInput(f"{path}: holds no LoRA weights")
    if other and not modules:
        return {"unconverted": len(other)}  # another key format (kohya); checked after diffusers converts it
    components = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    named = {c: dict(m.named_modules()) for c, m in components.items()}
    problems = []
    for (comp, mod), sh in modules.items():
        layer = named[comp].get(mod)
        if layer is None or not hasattr(layer, "weight"):
            problems.append(f"{comp}.{mod}: no such layer in this model")
            continue
        w = layer.weight
        out_f, in_f = w.shape[0], w.shape[1]
        if "down" in sh and sh["down"][1] != in_f:
            problems.append(f"{comp}.{mod}: LoRA input size {sh['down'][1]}, layer takes {in_f}")
        if "up" in sh and sh["up"][0] != out_f:
            problems.append(f"{comp}.{mod}: LoRA output size {sh['up'][0]}, layer gives {out_f}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise BadInput(
            f"{path}: this LoRA was built for another architecture ({shown}); use a LoRA trained on this model"
        )
    counts: dict[str, int] = defaultdict(int)
    for comp, _ in modules:
        counts[comp] += 1
    return dict(counts)


def load_lora(pipe, path: Path, *, scale: float = 1.0, adapter_name: str = "candidate") -> dict[str, int]:
    """Checks, loads and (at ``scale``) activates a LoRA on ``pipe``. Safetensors only."""
    path = lora_file(path)
    counts = check_lora_fits(pipe, path)
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()  # diffusers warns for each component a LoRA leaves alone; fit is checked above
    try:
        pipe.load_lora_weights(
            str(path.parent),
            weight_name=path.name,
            adapter_name=adapter_name,
            use_safetensors=True,
            local_files_only=True,
        )
    except (ValueError, RuntimeError, KeyError) as e:
        raise BadInput(f"{path}: this LoRA does not fit the model ({type(e).__name__}: {str(e)[:300]})") from None
    finally:
        dlog.set_verbosity(level)
    injected = sum(1 for n, _ in pipe.unet.named_modules() if n.endswith(f"lora_A.{adapter_name}"))
    injected += sum(1 for n, _ in pipe.text_encoder.named_modules() if n.endswith(f"lora_A.{adapter_name}"))
    if injected == 0:
        raise BadInput(f"{path}: none of this LoRA's layers match the model; use a LoRA trained on this model")
    pipe.set_adapters([adapter_name], adapter_weights=[scale])
    return counts


# ---------------------------------------------------------------------------------------
# full weights: a diffusers pipeline folder, a bare UNet folder, a state-dict file


def _load_full_folder(pipe, folder: Path) -> None:
    from transformers import CLIPTextModel

    root = folder
    unet_dir = root / "unet"
    if not unet_dir.is_dir():
        raise BadInput(f"--update {folder}: no unet/ subfolder")
    unet = _read_unet(unet_dir, f"--update {folder} (unet)")
    _same_architecture(pipe, unet, folder)
    pipe.unet.load_state_dict(unet.state_dict())
    te_dir = root / "text_encoder"
    if te_dir.is_dir():
        te = guard(
            lambda: CLIPTextModel.from_pretrained(str(te_dir), local_files_only=True),
            f"--update {folder} (text encoder)",
        )
        _load_strict(pipe.text_encoder, te.state_dict(), f"--update {folder} (text encoder)")


def _load_state_file(pipe, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

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


def _load_unet_folder(pipe, folder: Path) -> None:
    unet = _read_unet(folder, f"--update {folder}")
    _same_architecture(pipe, unet, folder)
    pipe.unet.load_state_dict(unet.state_dict())


def _read_unet(folder: Path, what: str):
    from diffusers import UNet2DConditionModel

    return guard(lambda: UNet2DConditionModel.from_pretrained(str(folder), local_files_only=True), what)


def _same_architecture(pipe, unet, folder: Path) -> None:
    # keys such as _name_or_path and _diffusers_version record where and how a folder was saved,
    # not the architecture; every other key must match
    keys = {k for k in set(unet.config) | set(pipe.unet.config) if k == "_class_name" or not k.startswith("_")}
    diff = sorted(k for k in keys if unet.config.get(k) != pipe.unet.config.get(k))
    if diff:
        raise BadInput(
            f"--update {folder}: its UNet is another architecture than the checkpoint's "
            f"(differs in {', '.join(diff[:5])})"
        )


def _unet_config_fits(pipe, folder: Path) -> None:
    """Preflight of a UNet folder: its config.json must describe the checkpoint's architecture."""
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"--update {folder}: unreadable config.json ({type(e).__name__})") from None
    own = dict(pipe.unet.config)
    diff = sorted(k for k in cfg if not k.startswith("_") and k in own and _norm(cfg[k]) != _norm(own[k]))
    if diff:
        raise BadInput(
            f"--update {folder}: its UNet is another architecture than the checkpoint's "
            f"(differs in {', '.join(diff[:5])})"
        )


def _norm(v):
    return list(v) if isinstance(v, tuple | list) else v


def _state_file_fits(pipe, p: Path) -> None:
    if p.suffix != ".safetensors":
        return  # a pickle (allowed by the user) is checked when it is read, with weights_only=True
    keys, shapes, _ = read_safetensors_header(p)
    own = {**{f"unet.{k}": v.shape for k, v in pipe.unet.state_dict().items()},
           **{f"text_encoder.{k}": v.shape for k, v in pipe.text_encoder.state_dict().items()}}  # fmt: skip
    for k in keys:
        full = k if k.startswith(("unet.", "text_encoder.")) else f"unet.{k}"
        if full not in own or tuple(own[full]) != tuple(shapes[k]):
            raise BadInput(f"--update {p}: tensor {k} does not fit this model (unknown key or other shape)")


# ---------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class UpdateKind:
    name: str
    describe: str
    preflight: Callable[[object, Path, bool], None]  # (pipe, path, allow_pickle): raises BadInput
    apply: Callable[[object, Path, float, bool], Identity]  # (pipe, path, lora_scale, allow_pickle)


def _lora_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    check_lora_fits(pipe, lora_file(p))


def _lora_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    f = lora_file(p)
    counts = load_lora(pipe, f, scale=scale)
    return Identity("lora", str(f), content_hash(f), {"scale": scale, "modules": counts})


def _full_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    if not (p / "unet" / "config.json").is_file():
        raise BadInput(f"--update {p}: no unet/config.json in this diffusers folder")
    _unet_config_fits(pipe, p / "unet")


def _full_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    _load_full_folder(pipe, p)
    return Identity("full-folder", str(p), content_hash(p))


def _unet_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    _load_unet_folder(pipe, p)
    return Identity("unet-folder", str(p), content_hash(p))


def _weights_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    refuse_pickle(p, allow_pickle, "--update")
    _state_file_fits(pipe, p)


def _weights_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    refuse_pickle(p, allow_pickle, "--update")
    _load_state_file(pipe, p)
    return Identity("weights-file", str(p), content_hash(p))


UPDATE_KINDS: dict[str, UpdateKind] = {
    "lora": UpdateKind(
        "lora", "a LoRA .safetensors (diffusers, peft or kohya keys), or a folder holding one",
        _lora_preflight, _lora_apply,
    ),
    "full-folder": UpdateKind(
        "full-folder", "a fine-tuned diffusers pipeline folder (unet/, optionally text_encoder/)",
        _full_preflight, _full_apply,
    ),
    "unet-folder": UpdateKind(
        "unet-folder", "a bare UNet folder (config.json + diffusion_pytorch_model.safetensors)",
        lambda pipe, p, allow_pickle: _unet_config_fits(pipe, p), _unet_apply,
    ),
    "weights": UpdateKind(
        "weights", "a UNet / text-encoder state dict (.safetensors; pickles only with --allow-pickle)",
        _weights_preflight, _weights_apply,
    ),
}  # fmt: skip


def update_kind(spec: str) -> str:
    """Which row of ``UPDATE_KINDS`` an ``--update`` is, from its files (nothing is loaded)."""
    from gate.weights import PICKLE_SUFFIXES

    p = Path(spec)
    if p.is_dir():
        if (p / "model_index.json").is_file() or (p / "unet").is_dir():
            return "full-folder"
        if (p / "config.json").is_file() and any(p.glob("diffusion_pytorch_model*.safetensors")):
            return "unet-folder"
        if any(p.glob("*.safetensors")):
            return "lora"
        raise BadInput(f"--update {spec}: a folder with neither a diffusers model, a UNet nor a .safetensors LoRA")
    if not p.is_file():
        raise BadInput(f"--update {spec}: no such file or folder")
    if p.suffix in PICKLE_SUFFIXES:
        return "weights"
    if p.suffix != ".safetensors":
        raise BadInput(f"--update {spec}: unknown file type {p.suffix!r} (give .safetensors or a diffusers folder)")
    keys, _, _ = read_safetensors_header(p)
    return "lora" if any("lora" in k for k in keys) else "weights"
