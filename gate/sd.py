"""Helpers over any diffusers Stable Diffusion pipeline (SD v1.x/v2.x or the small world).

Everything here takes the pipeline's own components; nothing assumes sizes. Device and dtype
are the caller's: the helpers use whatever the pipeline is on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gate.errors import BadInput

# Parameter groups in the vocabulary of ESD / SDD / EraseDiff ("train_method").
PARAM_GROUPS = ("xattn", "noxattn", "selfattn", "xattn-kv", "full")


def select_parameters(unet: torch.nn.Module, group: str) -> dict[str, torch.nn.Parameter]:
    """Named UNet parameters of a group.

    * ``xattn``: cross-attention (``attn2``) only, as ESD-x and SDD;
    * ``xattn-kv``: cross-attention key and value projections only (the text-facing ones);
    * ``noxattn``: everything but cross-attention, time embedding and output layers, as ESD-u;
    * ``selfattn``: self-attention (``attn1``) only;
    * ``full``: every parameter.
    """
    if group not in PARAM_GROUPS:
        raise BadInput(f"parameter group {group!r} is not one of {', '.join(PARAM_GROUPS)}")
    out = {}
    for name, p in unet.named_parameters():
        is_x = "attn2" in name
        if group == "full":
            keep = True
        elif group == "xattn":
            keep = is_x
        elif group == "xattn-kv":
            keep = is_x and (".to_k." in name or ".to_v." in name)
        elif group == "selfattn":
            keep = "attn1" in name
        else:  # noxattn
            keep = not is_x and not name.startswith(("time_embedding", "conv_out", "conv_norm_out"))
        if keep:
            out[name] = p
    return out


def cross_attention_kv(unet: torch.nn.Module, with_k: bool = True) -> dict[str, torch.nn.Linear]:
    """The text-facing projections: ``...attn2.to_v`` (and ``to_k``) linear layers by name."""
    out = {}
    for name, mod in unet.named_modules():
        if name.endswith("attn2.to_v") or (with_k and name.endswith("attn2.to_k")):
            out[name] = mod
    if not out:
        raise BadInput(
            "this UNet has no cross-attention (attn2.to_k / attn2.to_v) modules; is it a Stable Diffusion UNet?"
        )
    return out


def prompt_ids(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, as the pipeline pads them."""
    tok = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return tok.input_ids.to(pipe.text_encoder.device)


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder hidden states of the prompts (no gradient)."""
    return pipe.text_encoder(prompt_ids(pipe, prompts))[0]


def trainable(unet: torch.nn.Module, params: dict[str, torch.nn.Parameter]) -> None:
    """Freezes ``unet`` but ``params``, and puts it in training mode."""
    unet.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    unet.train()


def token_count(pipe, prompt: str) -> int:
    """Number of tokens of ``prompt`` without start/end marks (truncated to the model's length)."""
    ids = pipe.tokenizer(prompt, truncation=True, max_length=pipe.tokenizer.model_max_length).input_ids
    return len(ids) - 2


def latent_size(pipe) -> int:
    """The latent side training works at: the UNet's own ``sample_size`` (64 for SD v1.x's
    512 px), unless a command set ``pipe.gate_resolution`` (pixels; ``--resolution``)."""
    px = getattr(pipe, "gate_resolution", None)
    return px // vae_factor(pipe) if px else pipe.unet.config.sample_size


def vae_factor(pipe) -> int:
    """Pixels per latent pixel (8 for SD's VAE)."""
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def set_resolution(pipe, px: int | None) -> None:
    """Train and make image sets at ``px`` pixels (a multiple of 64 for SD: its UNet halves the
    latent three times), or at the model's own size for None."""
    if px is None:
        return
    step = vae_factor(pipe) * 8
    if px < step or px % step:
        raise BadInput(f"--resolution {px}: a multiple of {step} pixels for this model")
    pipe.gate_resolution = int(px)


def latent_shape(pipe, batch: int) -> tuple[int, int, int, int]:
    s = latent_size(pipe)
    return (batch, pipe.unet.config.in_channels, s, s)


@torch.no_grad()
def encode_images(pipe, images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images (N,3,H,W) -> scaled latents (posterior mean)."""
    vae = pipe.vae
    z = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean
    return z * vae.config.scaling_factor


def ddim_partial_sample(
    pipe,
    unet: torch.nn.Module,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    *,
    stop: int,
    steps: int,
    guidance: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int]:
    """Runs DDIM from pure noise for ``stop`` of ``steps`` steps with ``unet`` (classifier-free
    guidance ``guidance``). Returns (x_t, t) where t is the DDPM timestep reached; this is how
    ESD and SDD produce their training latents without any image data."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    x = torch.randn(latent_shape(pipe, cond.shape[0]), generator=generator).to(cond.device, cond.dtype)
    x = x * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps[:stop]:
            eps = predict_cfg(unet, x, t, cond, uncond, guidance)
            x = sched.step(eps, t, x).prev_sample
    t_reached = int(sched.timesteps[min(stop, steps - 1)])
    return x, t_reached


def predict_cfg(unet, x: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return unet(x, t, cond).sample
    e = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample
    eu, ec = e.chunk(2)
    return eu + guidance * (ec - eu)


def ddpm_loss(pipe, unet, latents: torch.Tensor, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The standard denoising loss on clean latents (fine-tuning, retain terms), against the
    target the model predicts: the noise (SD v1.x), or the velocity for a v-prediction model
    (SD 2.x 768-v)."""
    n = latents.shape[0]
    T = pipe.scheduler.config.num_train_timesteps
    t = torch.randint(0, T, (n,), generator=generator).to(latents.device)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    noisy = add_noise(pipe, latents, noise, t)
    pred = unet(noisy, t, cond).sample
    return torch.nn.functional.mse_loss(pred.float(), training_target(pipe, latents, noise, t).float())


def training_target(pipe, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict at (x0, noise, t): per the scheduler's prediction_type."""
    kind = pipe.scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(pipe.scheduler.config)
        return sched.get_velocity(x0, noise, t.cpu()).to(x0.dtype)
    raise BadInput(f"the scheduler's prediction_type {kind!r} is not supported (epsilon or v_prediction)")


def add_noise(pipe, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for clean latents ``x0`` (noise and timesteps are moved to x0's device)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    noise = noise.to(x0.device, x0.dtype)
    return sched.add_noise(x0, noise, t.to(x0.device)).to(x0.dtype)
