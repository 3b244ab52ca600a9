"""Applying a candidate update to a pipeline, refusing anything that does not fit it.

A LoRA is checked against the model before it is loaded: every LoRA module must name a layer
of this UNet / text encoder, with matching input and output sizes. diffusers on its own
skips keys it cannot place (a warning, then a silently unchanged model); for a safety gate
that would pass an update that was never applied, so it is an error here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from gate.errors import BadInput

_PEFT = re.compile(r"^(unet|text_encoder)\.(.+)\.(lora_A|lora_B|lora\.down|lora\.up)(\.[^.]+)?\.weight$")


def read_safetensors_header(path: Path) -> tuple[list[str], dict[str, list[int]], dict[str, str]]:
    """Keys, shapes and metadata of a safetensors file, without loading tensors or running code."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise BadInput(f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); re-export it") from None
    return keys, shapes, meta


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
