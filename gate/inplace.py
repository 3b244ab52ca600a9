"""Weights swapped in place: another model's UNet, text encoder or VAE read into the modules a
pipeline already holds, one tensor at a time, straight from its safetensors files.

This is how a check at Stable Diffusion size keeps one pipeline in memory: the pre-screen and
the original model's images use the loaded unlearned pipeline with the original's weights read
into it, and the unlearned weights are read back afterwards (bit for bit: the same files, the
same cast). Peak memory grows by one tensor, not by a model. Inputs that are not diffusers
folders on disk (a single-file checkpoint) have no per-component files; for those
``pipeline_folder`` returns None and callers fall back to loading a copy (documented there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gate.errors import BadInput

WEIGHT_NAMES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
}


def pipeline_folder(spec: str, *, config: str | None = None, allow_pickle: bool = False, flag: str = "") -> Path | None:
    """The diffusers folder behind a checkpoint spec (a folder, or a hub id's cached snapshot);
    None for a single-file checkpoint."""
    from gate.model import resolve_checkpoint

    kind, path = resolve_checkpoint(spec, config=config, allow_pickle=allow_pickle, flag=flag or "--checkpoint")
    if kind == "folder":
        return path
    if kind == "hub":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    return None


def component_files(folder: Path, component: str) -> list[Path]:
    """The safetensors files of one component of a diffusers folder (one file, or the shards an
    index names). Pickled weights are never read here."""
    d = Path(folder) / component
    stem = WEIGHT_NAMES.get(component, "model")
    single = d / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    index = d / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise BadInput(f"{index}: unreadable shard index ({type(e).__name__})") from None
        return [d / n for n in names]
    raise BadInput(f"{d}: no {stem}.safetensors (weights are read from safetensors only)")


class LazyState(Mapping[str, Any]):
    """A component's tensors by name, read from its files on access (nothing is loaded up front).

    Each read opens the file, copies the one tensor out and closes it again: a handle kept open
    would keep every page it has read mapped into the process (resident memory as large as the
    files), while a closed one leaves them to the page cache, which the kernel reclaims."""

    def __init__(self, files: list[Path]) -> None:
        from safetensors import safe_open

        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                        self._where[k] = f
                        self._shapes[k] = tuple(h.get_slice(k).get_shape())
            except Exception as e:
                raise BadInput(f"{f}: not a readable safetensors file ({type(e).__name__}: {e})") from None

    def __getitem__(self, key: str):
        from safetensors import safe_open

        with safe_open(str(self._where[key]), framework="pt") as h:
            return h.get_tensor(key).clone()  # owns its memory once the file is closed

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]


def component_state(folder: Path, component: str) -> LazyState:
    return LazyState(component_files(folder, component))


def load_into(module, state: Mapping[str, Any], what: str) -> None:
    """Copies every tensor of ``state`` into ``module``'s own parameters and buffers, cast to
    their dtype and device, one at a time. Every tensor of the module's state dict must be
    given, with its shape, and nothing else (a model of another architecture is bad input)."""
    import torch

    own = module.state_dict(keep_vars=True)
    names = set(state)
    missing = [k for k in own if k not in names]
    unknown = [k for k in names if k not in own]
    if missing or unknown:
        ex = (missing or unknown)[0]
        raise BadInput(
            f"{what}: does not fit the loaded model ({len(missing)} missing and {len(unknown)} unknown tensors, "
            f"e.g. {ex}); is it the same architecture?"
        )
    with torch.no_grad():
        for k, dst in own.items():
            src = state[k]
            if tuple(src.shape) != tuple(dst.shape):
                raise BadInput(f"{what}: tensor {k} has shape {tuple(src.shape)}, the model's is {tuple(dst.shape)}")
            dst.copy_(src.to(dtype=dst.dtype))


def fingerprint(module) -> float:
    """A cheap checksum of a module's weights (sum of every value, per tensor): equal
    before and after a swap and restore, or the restore did not give the same model back."""
    import torch

    total = 0.0
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                total += float(t.sum(dtype=torch.float32))
    return total


def swap_components(pipe, folder: Path, components: tuple[str, ...], what: str) -> None:
    """Reads ``components`` of the diffusers folder ``folder`` into ``pipe`` in place."""
    from gate.weights import check_finite

    for comp in components:
        load_into(getattr(pipe, comp), component_state(folder, comp), f"{what} ({comp})")
        check_finite(getattr(pipe, comp), f"{what} ({comp})")
