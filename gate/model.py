"""The model under test: an unlearned checkpoint plus an optional candidate update.

Checkpoint forms: a diffusers folder; a single-file ``.safetensors`` (``from_single_file``, with
``--config`` naming a local diffusers folder for the architecture, since nothing is fetched); a
hub id resolved from the local cache only. Update forms (``gate.updates.UPDATE_KINDS``): none;
a LoRA ``.safetensors`` (diffusers, peft or kohya key names; or a folder holding one); a full
fine-tune as a diffusers folder; a bare UNet folder; a UNet or text-encoder state-dict file.

Untrusted weights are never unpickled: ``.ckpt/.bin/.pt/.pth`` files are refused unless
``allow_pickle``, and then read with ``torch.load(weights_only=True)``. Non-finite weights are
refused. Every input is identified by a content hash.
"""

from __future__ import annotations

from pathlib import Path

from gate.errors import BadInput
from gate.weights import (
    PICKLE_SUFFIXES,
    Identity,
    check_finite,
    content_hash,
    guard,
    read_safetensors_header,
    refuse_pickle,
)

__all__ = ["Identity", "apply_update", "load_checkpoint", "preflight_update", "resolve_checkpoint"]


def resolve_checkpoint(
    spec: str, *, config: str | None = None, allow_pickle: bool = False, flag: str = "--checkpoint"
) -> tuple[str, Path | None]:
    """(kind, path): kind is folder, single_file or hub; path is None for a hub id not on disk.
    Everything that can be told without loading is checked here (a single file needs ``config``)."""
    p = Path(spec)
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise BadInput(f"{flag} {spec}: a folder without model_index.json is not a diffusers pipeline")
        return "folder", p
    if p.suffix in (".safetensors", *PICKLE_SUFFIXES):
        if not p.is_file():
            raise BadInput(f"{flag} {spec}: no such file")
        refuse_pickle(p, allow_pickle, flag)
        if config is None:
            raise BadInput(
                f"{flag} {spec}: a single-file checkpoint needs --config FOLDER "
                "(a local diffusers folder of the same architecture); nothing is downloaded"
            )
        if p.suffix == ".safetensors":
            read_safetensors_header(p)  # truncated or corrupt files end here with a clear message
        return "single_file", p
    if "/" in spec and not p.exists() and spec.count("/") == 1:
        return "hub", None
    raise BadInput(
        f"{flag} {spec}: no such folder or file (give a diffusers folder, a .safetensors file or a cached hub id)"
    )


def load_checkpoint(
    spec: str,
    *,
    config: str | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
    dtype=None,
    flag: str = "--checkpoint",
):
    """Returns (pipeline, Identity)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from gate.pipeline import load_pipeline, quiet_hub_progress

    quiet_hub_progress()
    kind, path = resolve_checkpoint(spec, config=config, allow_pickle=allow_pickle, flag=flag)
    dtype = dtype or torch.float32
    what = f"{flag} {spec}"
    if kind == "folder":
        assert path is not None
        pipe = guard(lambda: load_pipeline(path, device=device, dtype=dtype, allow_pickle=allow_pickle), what, device)
        ident = Identity("diffusers-folder", str(path), content_hash(path))
    elif kind == "single_file":
        assert path is not None and config is not None
        pipe = guard(
            lambda: StableDiffusionPipeline.from_single_file(
                str(path), config=config, local_files_only=True, safety_checker=None, torch_dtype=dtype
            ).to(device),
            what,
            device,
        )
        pipe.set_progress_bar_config(disable=True)
        ident = Identity("single-file", str(path), content_hash(path), {"config": config})
        ident.extra["config_sha256"] = content_hash(config)
    else:  # a hub id, ORG/NAME[@REVISION], read from the local hub cache only (gate models fetch fills it)
        import os

        from gate.hub import cached_snapshot

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _, _, snap = cached_snapshot(spec, flag, allow_pickle)
        pipe = guard(lambda: load_pipeline(snap, device=device, dtype=dtype), f"{what} (hub id, local cache)", device)
        # the snapshot folder's name is the commit the cache holds for the revision asked for (@REV, or main)
        ident = Identity("hub-cache", spec, content_hash(snap), {"snapshot": snap.name, "revision": snap.name})
    check_finite(pipe.unet, f"{what} (unet)")
    check_finite(pipe.text_encoder, f"{what} (text encoder)")
    return pipe, ident


def preflight_update(pipe, spec: str | None, *, allow_pickle: bool = False) -> None:
    """Every check of ``apply_update`` that does not change ``pipe``: run before any image is
    generated, so that bad input ends the run at once."""
    if not spec:
        return
    from gate.updates import UPDATE_KINDS, update_kind

    UPDATE_KINDS[update_kind(spec)].preflight(pipe, Path(spec), allow_pickle)


def apply_update(pipe, spec: str | None, *, lora_scale: float = 1.0, allow_pickle: bool = False) -> Identity | None:
    """Applies the candidate update to ``pipe`` in place. Returns its identity (None for none)."""
    if not spec:
        return None
    from gate.updates import UPDATE_KINDS, update_kind

    kind = UPDATE_KINDS[update_kind(spec)]
    ident = kind.apply(pipe, Path(spec), lora_scale, allow_pickle)
    check_finite(pipe.unet, f"--update {spec} (unet)")
    check_finite(pipe.text_encoder, f"--update {spec} (text encoder)")
    return ident
