"""Loading diffusers Stable Diffusion pipelines, offline, with explicit device and dtype."""

from __future__ import annotations

from pathlib import Path

from gate.errors import BadInput


def load_pipeline(folder: Path | str, device: str = "cpu", dtype=None, allow_pickle: bool = False):
    """A ``StableDiffusionPipeline`` from a diffusers folder, never touching the network. Weights
    are read from safetensors only; a folder whose components hold only pickles (``.bin``) is
    refused unless ``allow_pickle`` (then torch reads them with ``weights_only=True``)."""
    import torch
    from diffusers import StableDiffusionPipeline

    quiet_hub_progress()
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise BadInput(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
    if not allow_pickle:
        refuse_pickled_components(folder)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False, local_files_only=True,
        dtype=dtype or torch.float32, use_safetensors=None if allow_pickle else True,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def quiet_hub_progress() -> None:
    """diffusers and transformers print tqdm bars when loading and saving; the gate has its own."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def refuse_pickled_components(folder: Path) -> None:
    """A component folder with pickled weights and no safetensors is refused by name."""
    for comp in ("unet", "text_encoder", "vae"):
        d = folder / comp
        if d.is_dir() and not any(d.glob("*.safetensors")):
            pickles = [f.name for f in d.iterdir() if f.suffix in (".bin", ".ckpt", ".pt", ".pth", ".pkl")]
            if pickles:
                raise BadInput(
                    f"{folder}: {comp}/ holds only pickled weights ({pickles[0]}); pickles can run code and are "
                    "refused. Convert it to safetensors, or pass --allow-pickle to read it with weights_only=True"
                )
