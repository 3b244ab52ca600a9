"""Loading diffusers Stable Diffusion pipelines, offline, with explicit device and dtype."""

from __future__ import annotations

from pathlib import Path

from gate.errors import BadInput


def load_pipeline(folder: Path | str, device: str = "cpu", dtype=None):
    """A ``StableDiffusionPipeline`` from a diffusers folder, never touching the network."""
    import torch
    from diffusers import StableDiffusionPipeline

    quiet_hub_progress()
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise BadInput(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False, local_files_only=True,
        dtype=dtype or torch.float32,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def quiet_hub_progress() -> None:
    """diffusers and transformers print tqdm bars when loading and saving; the gate has its own."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
