"""The small world's zoo: unlearned models and candidate updates with known outcomes.

Each entry is a folder here with ``entry.json`` and small safetensors files:

* an unlearned model is stored as a *delta*: the UNet tensors its method changed
  (``unet_delta.safetensors``), applied on top of the shipped world (``base: world``);
* a candidate update is a LoRA (``pytorch_lora_weights.safetensors``, used as ``--update``
  directly) or a UNet state-dict file, with the unlearned entry it was trained on (``base``).

``materialize(name)`` turns an unlearned entry into an ordinary diffusers folder under the cache
(``$GATE_ZOO_CACHE`` or ``~/.cache/resurgence-gate/zoo``), once; the folder name carries the
content hash, so a changed entry never reuses a stale folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from gate.errors import BadInput

ZOO = Path(__file__).resolve().parent
DELTA = "unet_delta.safetensors"
LORA = "pytorch_lora_weights.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get("GATE_ZOO_CACHE", Path.home() / ".cache" / "resurgence-gate" / "zoo"))


def entries() -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(ZOO.glob("*/entry.json")):
        out[p.parent.name] = json.loads(p.read_text())
    return out


def entry(name: str) -> dict[str, Any]:
    found = entries()
    if name not in found:
        raise BadInput(f"zoo entry {name!r} not found (entries: {', '.join(found) or 'none'})")
    return found[name]


def materialize(name: str) -> Path:
    """A diffusers folder for an unlearned entry (or ``world`` for the original model)."""
    from gate.world.clip import ASSETS

    if name == "world":
        return ASSETS / "sd"
    e = entry(name)
    if e["kind"] != "unlearned":
        raise BadInput(f"zoo entry {name!r} is a {e['kind']}, not a model; use its file as --update")
    from gate.provenance import hash_tree

    folder = ZOO / name
    digest = hash_tree(folder)[:16]
    target = cache_root() / f"{name}-{digest}"
    if (target / "model_index.json").is_file():
        return target
    base = materialize(e.get("base", "world"))
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("erase.json", "finetune.json"))
    _apply_delta(tmp / "unet", folder / DELTA)
    shutil.copy(folder / "entry.json", tmp / "zoo-entry.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _apply_delta(unet_dir: Path, delta: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    patch = load_file(str(delta))
    unknown = [k for k in patch if k not in state]
    if unknown:
        raise BadInput(f"{delta}: tensors not in the base UNet (e.g. {unknown[0]})")
    state.update(patch)
    save_file(state, str(weights), metadata={"format": "pt"})


def write_delta(base_unet, new_unet, out: Path) -> int:
    """Saves the tensors of ``new_unet`` that differ from ``base_unet``. Returns their count."""
    import torch
    from safetensors.torch import save_file

    base = base_unet.state_dict()
    changed = {k: v.detach().contiguous() for k, v in new_unet.state_dict().items() if not torch.equal(v, base[k])}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(changed, str(out), metadata={"format": "pt"})
    return len(changed)


def update_path(name: str) -> Path:
    e = entry(name)
    if e["kind"] != "candidate":
        raise BadInput(f"zoo entry {name!r} is not a candidate update")
    return ZOO / name / e["file"]
