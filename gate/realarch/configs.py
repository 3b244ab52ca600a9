"""The released Stable Diffusion configs, as the model repositories' config.json files give them
(CompVis/stable-diffusion-v1-4 and stabilityai/stable-diffusion-2-1), written out here so that
nothing is fetched. Only architecture keys are kept: the ``_diffusers_version`` /
``_name_or_path`` bookkeeping of the released files says where a file came from, not what it is.
"""

from __future__ import annotations

import copy
from typing import Any

_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

SD14_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": _DOWN,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": _UP,
}

SD21_UNET: dict[str, Any] = {
    **SD14_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "sample_size": 96,
    "use_linear_projection": True,
    "upcast_attention": True,
}

SD14_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SD21_VAE: dict[str, Any] = {**SD14_VAE, "sample_size": 768}

# CLIP ViT-L/14's text tower, as SD 1.4's text_encoder/config.json (bos/eos/pad ids 0/2/1 as released)
SD14_TEXT: dict[str, Any] = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

# OpenCLIP ViT-H/14's text tower without its last block (SD 2.x uses the penultimate layer)
SD21_TEXT: dict[str, Any] = {
    **SD14_TEXT,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "projection_dim": 512,
}

_SCHED = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD14_SCHEDULER: dict[str, Any] = {"_class_name": "PNDMScheduler", **_SCHED}
SD21_SCHEDULER: dict[str, Any] = {"_class_name": "DDIMScheduler", **_SCHED, "prediction_type": "v_prediction"}

_TOKENIZER = {
    "add_prefix_space": False,
    "bos_token": "<|startoftext|>",
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "unk_token": "<|endoftext|>",
}
SD14_TOKENIZER: dict[str, Any] = {**_TOKENIZER, "pad_token": "<|endoftext|>"}
SD21_TOKENIZER: dict[str, Any] = {**_TOKENIZER, "pad_token": "!"}

# feature_extractor/preprocessor_config.json of both releases (the safety checker's input; no checker here)
FEATURE_EXTRACTOR: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

ARCHS: dict[str, dict[str, dict[str, Any]]] = {
    "sd14": {"unet": SD14_UNET, "vae": SD14_VAE, "text_encoder": SD14_TEXT, "scheduler": SD14_SCHEDULER,
             "tokenizer": SD14_TOKENIZER, "feature_extractor": FEATURE_EXTRACTOR},
    "sd21": {"unet": SD21_UNET, "vae": SD21_VAE, "text_encoder": SD21_TEXT, "scheduler": SD21_SCHEDULER,
             "tokenizer": SD21_TOKENIZER, "feature_extractor": FEATURE_EXTRACTOR},
}  # fmt: skip


def configs(arch: str) -> dict[str, dict[str, Any]]:
    """A deep copy of ``arch``'s component configs (callers may change their copy)."""
    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r}: one of {', '.join(ARCHS)}")
    return copy.deepcopy(ARCHS[arch])
