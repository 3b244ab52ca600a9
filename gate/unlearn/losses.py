"""Loss terms shared by the image-based methods (SalUn, SHS, EraseDiff)."""

from __future__ import annotations

import math

import torch

from gate import sd
from gate.unlearn.base import ImageSet


def sample_batch(n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (min(batch, n),), generator=gen)


def forget_to_target(
    pipe, unet, forget: ImageSet, idx: torch.Tensor, target_prompt: str, gen: torch.Generator
) -> torch.Tensor:
    """MSE(eps(x_t^f, c_f), sg eps(x_t^f, c_target)): the concept's prediction is pulled to
    that of another prompt (SalUn's pseudo label, SHS's surrogate, EraseDiff's c_n)."""
    x0, prompts = forget.batch(idx)
    n = x0.shape[0]
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (n,), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen)
    x_t = sd.add_noise(pipe, x0, noise, t)
    c_f = sd.encode_prompts(pipe, prompts)
    c_t = sd.encode_prompts(pipe, [target_prompt] * n)
    with torch.no_grad():
        target = unet(x_t, t, c_t).sample
    return torch.nn.functional.mse_loss(unet(x_t, t, c_f).sample, target)


def denoising(pipe, unet, data: ImageSet, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The plain diffusion loss on a batch of an image set with its own prompts."""
    x0, prompts = data.batch(idx)
    return sd.ddpm_loss(pipe, unet, x0, sd.encode_prompts(pipe, prompts), gen)


def steps_for(epochs: int, n: int, batch: int) -> int:
    return max(1, epochs * math.ceil(n / batch))


def accumulate_abs_grads(
    pipe, unet, params: dict[str, torch.nn.Parameter], data: ImageSet, batches: int, batch: int, gen
) -> dict[str, torch.Tensor]:
    """Sum over ``batches`` forget batches of |grad| of the denoising loss (SalUn's saliency)."""
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    for _ in range(batches):
        unet.zero_grad(set_to_none=True)
        denoising(pipe, unet, data, sample_batch(len(data), batch, gen), gen).backward()
        for k, p in params.items():
            if p.grad is not None:
                acc[k] += p.grad.abs()
    unet.zero_grad(set_to_none=True)
    return acc


def global_threshold(scores: dict[str, torch.Tensor], keep_fraction: float, gen: torch.Generator) -> float:
    """The value above which ``keep_fraction`` of all entries lie. Exact up to 16 M entries;
    above that (SD's 860 M) estimated from a 4 M-entry random subsample."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    if flat.numel() > 16_000_000:
        flat = flat[torch.randint(0, flat.numel(), (4_000_000,), generator=gen)]
    return float(torch.quantile(flat.float(), 1.0 - keep_fraction))
