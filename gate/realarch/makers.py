"""Candidate updates for a pipeline folder, in the forms users bring them: a diffusers/peft LoRA,
a kohya LoRA, a bare fine-tuned UNet folder, an original-SD single-file checkpoint (``gate.realarch.ldm``)
and a random open_clip ViT-L-14. Each is deterministic (seeded), finite and has a nonzero effect.
"""

from __future__ import annotations

import re
from pathlib import Path

ATTN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
_UNET_ATTN = re.compile(r"^(.+\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0))\.weight$")
_TE_ATTN = re.compile(r"^(.*encoder\.layers\.\d+\.self_attn\.(?:q_proj|k_proj|v_proj|out_proj))\.weight$")


def _unet(folder: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(Path(folder) / "unet"), local_files_only=True)


def _shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)


def make_peft_lora(folder: Path | str, out: Path | str, *, rank: int = 4, seed: int = 1, scale: float = 0.02) -> Path:
    """A diffusers/peft LoRA on every attention projection of the UNet (``unet.add_adapter`` +
    ``StableDiffusionPipeline.save_lora_weights``), lora_B drawn at ``scale`` so it is not zero.
    Returns ``out`` (a folder with ``pytorch_lora_weights.safetensors``)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = _unet(Path(folder))
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(ATTN_TARGETS))
    unet.add_adapter(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=get_peft_model_state_dict(unet), unet_lora_adapter_metadata=config.to_dict(),
        safe_serialization=True, weight_name="pytorch_lora_weights.safetensors",
    )  # fmt: skip
    return Path(out)


def kohya_names(folder: Path | str, *, text_encoder: bool = True) -> dict[str, tuple[int, int]]:
    """kohya module name -> (in, out) for every UNet attn1/attn2 to_q/to_k/to_v/to_out.0 and (with
    ``text_encoder``) every text-encoder self-attention projection, read from the folder's headers."""
    folder = Path(folder)
    names: dict[str, tuple[int, int]] = {}
    for key, shape in sorted(_shapes(folder / "unet" / "diffusion_pytorch_model.safetensors").items()):
        m = _UNET_ATTN.match(key)
        if m:
            names["lora_unet_" + m.group(1).replace(".", "_")] = (shape[1], shape[0])
    if text_encoder:
        for key, shape in sorted(_shapes(folder / "text_encoder" / "model.safetensors").items()):
            m = _TE_ATTN.match(key)
            if m:
                path = m.group(1) if m.group(1).startswith("text_model.") else "text_model." + m.group(1)
                names["lora_te_" + path.replace(".", "_")] = (shape[1], shape[0])
    return names


def make_kohya_lora(
    folder: Path | str, out_file: Path | str, *, rank: int = 4, text_encoder: bool = True, seed: int = 2,
    scale: float = 0.02, extra: dict[str, tuple[int, int]] | None = None,
) -> Path:  # fmt: skip
    """A kohya-ss (sd-scripts) LoRA file: ``lora_unet_<module_path>.lora_down.weight`` /
    ``.lora_up.weight`` / ``.alpha`` for every UNet attention projection, and ``lora_te_...`` for
    the text encoder's. ``extra`` adds modules by kohya name -> (in, out) (e.g. ones the model
    does not have, to test refusals)."""
    import torch
    from safetensors.torch import save_file

    names = {**kohya_names(folder, text_encoder=text_encoder), **(extra or {})}
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, (n_in, n_out) in names.items():
        state[f"{name}.lora_down.weight"] = torch.randn(rank, n_in, generator=g) / n_in**0.5
        state[f"{name}.lora_up.weight"] = torch.randn(n_out, rank, generator=g) * scale
        state[f"{name}.alpha"] = torch.tensor(float(rank))
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
            "ss_text_encoder_lr": "0" if not text_encoder else "5e-05"}  # fmt: skip
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_file), metadata=meta)
    return out_file


def make_unet_folder(folder: Path | str, out: Path | str, *, seed: int = 3, scale: float = 1e-2) -> Path:
    """A bare fine-tuned UNet (``UNet2DConditionModel.save_pretrained``): every weight moved by
    ``scale`` times its own spread, in seeded random directions."""
    import torch

    unet = _unet(Path(folder))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            spread = float(p.std()) if p.numel() > 1 else 1.0
            p.add_(torch.randn(p.shape, generator=g) * (scale * (spread or 1.0)))
    unet.save_pretrained(str(out), safe_serialization=True)
    return Path(out)


def make_open_clip_l14(out_file: Path | str, *, seed: int = 4) -> Path:
    """open_clip's ViT-L-14 with random weights (``pretrained=None``), as a safetensors state dict
    that ``open_clip.create_model_and_transforms("ViT-L-14", pretrained=out_file)`` loads."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-L-14", pretrained=None)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_file), metadata={"format": "pt", "model": "ViT-L-14", "seed": str(seed)})
    return out_file
