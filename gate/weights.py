"""Reading weights that came from someone else: identities by content hash, safetensors headers
read without loading, pickles refused, non-finite values refused, and load errors turned into
messages that say which input failed (bad input, exit 2) or that memory ran out (exit 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gate.errors import BadInput, OutOfMemory, is_out_of_memory

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
# records written beside weights (provenance, not weights): left out of content hashes
RECORDS = ("erase.json", "finetune.json", "build.json", "MODEL_CARD.md")
# identity fields that say where an input is, not what it is
_PLACE = ("path", "snapshot", "config")

T = TypeVar("T")


@dataclass
class Identity:
    kind: str
    path: str
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256, **self.extra}

    def content_key(self) -> dict[str, Any]:
        """What the input is, never where it is: the same model in another checkout, runner
        workspace or CI folder has the same key (cache keys are built from this)."""
        return {k: v for k, v in self.as_dict().items() if k not in _PLACE}


def content_hash(path: Path | str) -> str:
    from gate.provenance import hash_tree

    return hash_tree(Path(path), skip=RECORDS)


def refuse_pickle(path: Path, allow_pickle: bool, what: str) -> None:
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise BadInput(
            f"{what} {path}: a pickle file; pickles can run code and are refused. Convert it to .safetensors, "
            "or pass --allow-pickle to read it with torch.load(weights_only=True)"
        )


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


def guard(fn: Callable[[], T], what: str, device: str = "cpu") -> T:
    """Runs a load; a failure that the input explains is bad input (exit 2), running out of
    memory is the tool's (exit 3, with what to try), anything else propagates as it is."""
    try:
        return fn()
    except BadInput:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, MemoryError) as e:
        if is_out_of_memory(e):
            raise OutOfMemory(f"loading {what}", device) from None
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise BadInput(f"{what}: cannot be loaded ({type(e).__name__}: {msg})") from None


def check_finite(module, what: str) -> None:
    import torch

    for name, t in module.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadInput(f"{what}: weight {name} holds NaN or infinite values; the file is corrupt or diverged")
