"""Architectures of the small world's models, as configs of the real classes.

* the text-to-image model is a diffusers ``StableDiffusionPipeline``: ``CLIPTextModel`` and
  ``CLIPTokenizer`` (the world's vocabulary), ``AutoencoderKL`` (32x32 RGB <-> 16x16x4
  latents, the same 4 latent channels as SD), ``UNet2DConditionModel`` with SD's block types,
  so its modules carry SD's names (``...transformer_blocks.0.attn2.to_k``), and a DDIM scheduler;
* the concept detector is an open_clip ``CLIP`` from a custom model config (ViT on 32x32
  images, open_clip's standard BPE tokenizer that ships in its wheel).

Sizes are chosen for 2 CPU cores: every number below was picked so that ``gate world build``
fits its time budget (see ``gate/world/build.py`` for the step counts).
"""

from __future__ import annotations

from typing import Any

from gate.world import data

TEXT_MAX_LENGTH = 20  # tokens, with start and end marks; the longest world caption takes 12
TEXT_HIDDEN = 64  # also the UNet's cross_attention_dim, as 768 is for SD v1.4
LATENT_CHANNELS = 4
VAE_FACTOR = 2  # 32x32 images -> 16x16 latents
LATENT_SIZE = data.SIZE // VAE_FACTOR

# SD v1.x noise schedule and sampler defaults
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0

CLIP_MODEL_NAME = "world-clip"
CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    # A small ModifiedResNet (open_clip's CNN tower): on 32x32 shapes it learns shape far faster
    # than a ViT (measured at 400 steps: shape accuracy 0.71 vs 0.31 for a ViT with 8x8 patches,
    # 0.25 s/step vs 0.40 s/step at batch 256).
    "vision_cfg": {"image_size": data.SIZE, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}


def text_encoder_config() -> dict[str, Any]:
    from gate.world.vocab import build_bpe, world_words

    vocab, _ = build_bpe(world_words())
    return {
        "vocab_size": len(vocab),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": TEXT_HIDDEN * 4,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "max_position_embeddings": TEXT_MAX_LENGTH,
        "projection_dim": TEXT_HIDDEN,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }


def unet_config() -> dict[str, Any]:
    return {
        "sample_size": LATENT_SIZE,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        # 16x16 -> 8x8 -> 4x4; attention at 8x8, 4x4 and in the mid block. Attention at 16x16
        # too tripled the step time (1.2-1.5 s vs 0.45 s at batch 64, measured) for little gain.
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": (32, 64, 96),
        "layers_per_block": 1,
        "cross_attention_dim": TEXT_HIDDEN,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
    }


def vae_config() -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "mid_block_add_attention": False,  # halves the step time; 16x16 latents need no global mixing
        "latent_channels": LATENT_CHANNELS,
        "norm_num_groups": 16,
        "sample_size": data.SIZE,
    }


def scheduler_config() -> dict[str, Any]:
    return {
        **SCHEDULE,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    }
