"""diffusers -> original Stable Diffusion ("ldm", CompVis / Stability) key layout, for writing a
pipeline folder as the single-file ``.safetensors`` checkpoint that SD releases and community
fine-tunes ship (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``).

The mapping is written from the two layouts' module structure:

* UNet: ``input_blocks.N`` holds the down path (conv_in, then per level ``layers_per_block``
  resnet [+ transformer] pairs and a downsampler), ``middle_block.0/1/2`` the mid block,
  ``output_blocks.N`` the up path (``layers_per_block + 1`` pairs per level, the upsampler last);
  resnets name ``in_layers.0/2``, ``emb_layers.1``, ``out_layers.0/3``, ``skip_connection``.
* VAE: ``encoder.down.i.block.j`` / ``decoder.up.(n-1-i).block.j`` (the decoder's levels are
  numbered from the bottom), ``mid.block_1/attn_1/block_2``, ``nin_shortcut``; the mid
  attention's q/k/v/proj_out are 1x1 convolutions (4-D weights).
* Text encoder: CLIP (SD 1.x) as ``cond_stage_model.transformer.text_model.*``; OpenCLIP
  (SD 2.x) as ``cond_stage_model.model.*`` with fused ``in_proj`` q/k/v, 24 blocks (SD 2.x uses
  the 23rd's output; the last block and ``text_projection`` are there, seeded, but unused).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNET, VAE, CLIP, OPEN_CLIP = (
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.transformer.",
    ("cond_stage_model.model."),
)
_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
           "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}  # fmt: skip
_VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def unet_prefixes(config: dict[str, Any], keys: set[str]) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, ldm prefix, is a resnet) for every block of a UNet2DConditionModel."""
    n, per = len(config["block_out_channels"]), config["layers_per_block"]
    out: list[tuple[str, str, bool]] = [
        ("time_embedding.linear_1.", "time_embed.0.", False), ("time_embedding.linear_2.", "time_embed.2.", False),
        ("conv_in.", "input_blocks.0.0.", False), ("conv_norm_out.", "out.0.", False), ("conv_out.", "out.2.", False),
        ("mid_block.resnets.0.", "middle_block.0.", True), ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
    ]  # fmt: skip

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    for i in range(n):
        for j in range(per):
            slot = (per + 1) * i + j + 1
            out.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{slot}.0.", True))
            out.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{slot}.1.", False))
        if i < n - 1:
            out.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(per + 1) * (i + 1)}.0.op.", False))
        attn = has(f"up_blocks.{i}.attentions.")
        for j in range(per + 1):
            slot = (per + 1) * i + j
            out.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{slot}.0.", True))
            out.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{slot}.1.", False))
        if i < n - 1:
            slot = (per + 1) * i + per
            out.append((f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{slot}.{2 if attn else 1}.conv.", False))
    return out


def unet_to_ldm(state: dict, config: dict[str, Any]) -> dict:
    prefixes = sorted(unet_prefixes(config, set(state)), key=lambda t: -len(t[0]))
    out = {}
    for k, v in state.items():
        for src, dst, resnet in prefixes:
            if k.startswith(src):
                rest = k[len(src) :]
                if resnet:
                    rest = next((new + rest[len(old) :] for old, new in _RESNET.items() if rest.startswith(old)), rest)
                out[UNET + dst + rest] = v
                break
        else:
            raise KeyError(f"UNet key {k}: no ldm name")
    return out


def vae_to_ldm(state: dict, config: dict[str, Any]) -> dict:
    n = len(config["block_out_channels"])
    pre: list[tuple[str, str, str]] = []  # (diffusers prefix, ldm prefix, inner renames: resnet / attn / none)
    for side in ("encoder", "decoder"):
        pre += [(f"{side}.conv_norm_out.", f"{side}.norm_out.", ""),
                (f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.", "r"),
                (f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.", "r"),
                (f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.", "a")]  # fmt: skip
    for i in range(n):
        pre += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", "r"),
                (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", ""),
                (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.", "r"),
                (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.", "")]  # fmt: skip
    out = {}
    for k, v in state.items():
        hit = next(((s, d, r) for s, d, r in pre if k.startswith(s)), None)
        if hit is None:
            out[VAE + k] = v  # conv_in, conv_out, quant_conv, post_quant_conv: the same names
            continue
        src, dst, inner = hit
        rest = k[len(src) :]
        if inner == "r":
            rest = rest.replace("conv_shortcut.", "nin_shortcut.")
        elif inner == "a":
            old = next(o for o in _VAE_ATTN if rest.startswith(o))
            rest = _VAE_ATTN[old] + rest[len(old) :]
            if rest.endswith("weight") and old != "group_norm." and v.ndim == 2:
                v = v[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        out[VAE + dst + rest] = v
    return out


def clip_to_ldm(state: dict) -> dict:
    """SD 1.x: the HF CLIP text model under ``cond_stage_model.transformer.text_model.``."""
    return {CLIP + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


def open_clip_to_ldm(state: dict, config: dict[str, Any], *, seed: int = 5) -> dict:
    """SD 2.x: the OpenCLIP text tower's own names, with the unused last block and projection."""
    import torch

    s = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {OPEN_CLIP + "token_embedding.weight": s["embeddings.token_embedding.weight"],
           OPEN_CLIP + "positional_embedding": s["embeddings.position_embedding.weight"],
           OPEN_CLIP + "ln_final.weight": s["final_layer_norm.weight"],
           OPEN_CLIP + "ln_final.bias": s["final_layer_norm.bias"]}  # fmt: skip
    layers = config["num_hidden_layers"]
    for i in range(layers):
        a, b = f"encoder.layers.{i}.", f"{OPEN_CLIP}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[b + f"attn.in_proj_{part}"] = torch.cat([s[a + f"self_attn.{p}_proj.{part}"] for p in "qkv"])
            out[b + f"attn.out_proj.{part}"] = s[a + f"self_attn.out_proj.{part}"]
            out[b + f"ln_1.{part}"] = s[a + f"layer_norm1.{part}"]
            out[b + f"ln_2.{part}"] = s[a + f"layer_norm2.{part}"]
            out[b + f"mlp.c_fc.{part}"] = s[a + f"mlp.fc1.{part}"]
            out[b + f"mlp.c_proj.{part}"] = s[a + f"mlp.fc2.{part}"]
    # the 24th block and the projection that SD 2.x never uses: seeded copies of block 0's shapes
    g = torch.Generator().manual_seed(seed)
    first = f"{OPEN_CLIP}transformer.resblocks.0."
    for k in [k for k in out if k.startswith(first)]:
        out[k.replace(".resblocks.0.", f".resblocks.{layers}.")] = torch.randn(out[k].shape, generator=g) * 0.02
    width = config["hidden_size"]
    out[OPEN_CLIP + "text_projection"] = torch.randn(width, width, generator=g) * width**-0.5
    out[OPEN_CLIP + "logit_scale"] = torch.tensor(4.6052)
    return out


def make_single_file(folder: Path | str, out_file: Path | str) -> Path:
    """The pipeline folder's UNet, VAE and text encoder as one ldm-layout safetensors file (fp32),
    which ``StableDiffusionPipeline.from_single_file(out_file, config=folder)`` reads back."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    te_cfg = json.loads((folder / "text_encoder" / "config.json").read_text())
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    state = unet_to_ldm(load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")), unet_cfg)
    state.update(vae_to_ldm(load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")), vae_cfg))
    te = load_file(str(folder / "text_encoder" / "model.safetensors"))
    state.update(clip_to_ldm(te) if te_cfg["hidden_act"] == "quick_gelu" else open_clip_to_ldm(te, te_cfg))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_file), metadata={"format": "pt"})
    return out_file
