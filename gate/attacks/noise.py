"""The noise probe's sampler: DDIM with its noise overloaded.

DDIM (Song, Meng and Ermon 2021, Eq. 12) steps from x_t to x_{t-1} as

    x_{t-1} = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - s^2) eps_hat + s z,
    s = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev),

with eta = 0 deterministic and eta = 1 DDPM's ancestral step. The probe of Lu et al. 2025
("When Are Concepts Erased From Diffusion Models?") samples with eta above 1 and the added
noise scaled by a variance scale, pushing the trajectory off the path an erasure reshaped. Here
the direction term's coefficient is clipped at zero where eta > 1 makes 1 - a_prev - s^2
negative (diffusers' own step would return NaN there), and the noise is ``variance_scale * s * z``.
For eta <= 1 and a variance scale of 1 this is exactly diffusers' ``DDIMScheduler.step`` (tested
against it). epsilon, v and sample prediction are handled, so SD 1.x and SD 2.1 (v) both run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor


class OverloadedDDIMScheduler(DDIMScheduler):
    """``DDIMScheduler`` whose ``step`` accepts eta above 1 and scales its added noise."""

    variance_scale: float = 1.0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator=None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        if self.num_inference_steps is None:
            raise ValueError("set_timesteps must be called before step")
        cfg = self.config
        prev_t = timestep - cfg.num_train_timesteps // self.num_inference_steps
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        if cfg.prediction_type == "epsilon":
            x0 = (sample - b_t**0.5 * model_output) / a_t**0.5
            eps = model_output
        elif cfg.prediction_type == "v_prediction":
            x0 = a_t**0.5 * sample - b_t**0.5 * model_output
            eps = a_t**0.5 * model_output + b_t**0.5 * sample
        elif cfg.prediction_type == "sample":
            x0 = model_output
            eps = (sample - a_t**0.5 * x0) / b_t**0.5
        else:
            raise ValueError(f"prediction_type {cfg.prediction_type!r} is not supported by the noise probe")
        if cfg.thresholding:
            x0 = self._threshold_sample(x0)
        elif cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        if use_clipped_model_output:
            eps = (sample - a_t**0.5 * x0) / b_t**0.5  # as diffusers does
        std = eta * self._get_variance(timestep, prev_t) ** 0.5
        coef = (1 - a_prev - std**2).clamp(min=0) ** 0.5
        prev = a_prev**0.5 * x0 + coef * eps
        if eta > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
            prev = prev + self.variance_scale * std * variance_noise
        if not return_dict:
            return (prev, x0)
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


@contextlib.contextmanager
def noise_probe_sampling(pipe, settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Within the block ``pipe`` samples with the overloaded DDIM of ``settings`` (eta,
    variance_scale); yields the extra pipeline arguments (``eta``). The pipeline's own scheduler
    is put back afterwards, whatever happens."""
    own = pipe.scheduler
    sched = OverloadedDDIMScheduler.from_config(own.config)
    sched.variance_scale = float(settings.get("variance_scale", 1.0))
    pipe.scheduler = sched
    try:
        yield {"eta": float(settings.get("eta", 1.0))}
    finally:
        pipe.scheduler = own


SAMPLERS = {"noise_probe": noise_probe_sampling}
PLAIN_SAMPLING = ("textual_inversion",)  # its learned token is loaded around the batch (gate.attacks.runtime)


def attack_sampling(pipe, attack: tuple):
    """The sampling context of a job's attack settings (``Job.attack``)."""
    settings = dict(attack)
    name = settings.pop("attack")
    if name in PLAIN_SAMPLING:  # its images are sampled as usual (the prompt carries the attack)
        return contextlib.nullcontext({})
    if name not in SAMPLERS:
        raise ValueError(f"unknown attack {name!r}")
    return SAMPLERS[name](pipe, settings)
