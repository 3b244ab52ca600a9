"""SHS: Scissorhands (Wu & Harandi, 2024).

1. Trim: connection sensitivity |theta * sum_batches |grad L_forget|| over ``prune_num``
   forget batches; the weights above the ``sparsity`` quantile are re-initialised (Kaiming-
   uniform draws for weight tensors, zero for biases, one for normalisation scales).
2. Repair: the denoising loss on the retain set plus ``lam`` times the forget term that pulls
   the concept's prediction to a surrogate prompt's.

The released SD script re-initialises only two self-attention blocks; here the scope is the
``train_method`` group, which is ``full`` as in the README and scripts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from gate import sd
from gate.unlearn import losses as L
from gate.unlearn.base import EraseRequest, ImageSet, Method, ProgressFactory


@dataclass
class SHSConfig:
    train_method: str = "full"
    sparsity: float = field(
        default=0.9, metadata={"help": "quantile of sensitivity above which weights are re-initialised"}
    )
    prune_num: int = field(default=10, metadata={"help": "forget batches for the sensitivity"})
    lam: float = field(default=0.1, metadata={"help": "weight of the forget term during repair"})
    lr: float = 1e-5
    epochs: int = 5
    batch_size: int = 8
    surrogate_prompt: str = field(default="", metadata={"help": "prompt the concept is pulled to during repair"})
    n_forget: int = 32
    n_retain: int = 64


def _reinit_values(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("bias"):
        return torch.zeros_like(p)
    if p.dim() == 1:  # normalisation scales
        return torch.ones_like(p)
    fan_in = p[0].numel()
    bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default Linear/Conv init (kaiming_uniform, a=sqrt(5))
    return (torch.rand(p.shape, generator=gen) * 2 - 1) * bound


class SHS(Method):
    name = "shs"
    config_cls = SHSConfig
    needs_images = True

    def presets(self) -> dict[str, Any]:
        # Small world: trim and repair within cross-attention (the released SD script also
        # trims a narrow scope, two self-attention blocks). Over the whole UNet the most
        # sensitive entries are conv_in, conv_out and normalisation scales, which every concept
        # needs: re-initialising even the top 0.1% left retained fidelity at 0.02 that repair
        # did not bring back. Top 1.5% of cross-attention (sparsity 0.985, between the scripts'
        # 0.9 and 0.995), then 12 repair epochs over its 64 retain images at a higher rate, with
        # the forget term weighted 2 so that the concept goes. On the current world build
        # (n = 24 / 6): sparsity 0.99 left the skull at 0.42 (retained 0.89; lambda 3: 0.38 /
        # 0.91); 0.985 gives skull 0.08, retained 0.91 -> 0.81.
        return {
            "original": SHSConfig(),
            "small-world": SHSConfig(train_method="xattn", sparsity=0.985, lr=2e-4, epochs=12, lam=2.0),
        }

    def run(self, pipe, request: EraseRequest, cfg: SHSConfig, data: dict[str, ImageSet], progress: ProgressFactory):
        unet = pipe.unet
        forget, retain = data["forget"], data["retain"]
        gen = torch.Generator().manual_seed(request.seed)
        params = sd.select_parameters(unet, cfg.train_method)
        sd.trainable(unet, params)
        grads = L.accumulate_abs_grads(pipe, unet, params, forget, cfg.prune_num, cfg.batch_size, gen)
        scores = {k: (params[k].detach() * g).abs() for k, g in grads.items()}
        thr = L.global_threshold(scores, 1.0 - cfg.sparsity, gen)
        trimmed = 0
        with torch.no_grad():
            for k, p in params.items():
                sel = scores[k] > thr
                if sel.any():
                    p[sel] = _reinit_values(k, p, gen)[sel]
                    trimmed += int(sel.sum())
        opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)
        steps = L.steps_for(cfg.epochs, len(retain), cfg.batch_size)
        tick = progress(f"shs: repair after trimming {trimmed} weights", steps)
        for step in range(steps):
            lr_ = L.denoising(pipe, unet, retain, L.sample_batch(len(retain), cfg.batch_size, gen), gen)
            lf = L.forget_to_target(
                pipe, unet, forget, L.sample_batch(len(forget), cfg.batch_size, gen), cfg.surrogate_prompt, gen
            )
            loss = lr_ + cfg.lam * lf
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tick(step, {"retain": lr_.item(), "forget": lf.item()})
        unet.eval().requires_grad_(False)
        return {"trimmed_weights": trimmed, "threshold": thr, "repair_steps": steps}
