"""SalUn: Saliency Unlearning (Fan et al., ICLR 2024).

1. Saliency mask: the gradient magnitude of the denoising loss on the forget set, summed over
   its batches; the largest ``mask_ratio`` of the weights (one global threshold) are salient.
2. Unlearning: forget loss (the concept's prediction pulled to a pseudo prompt's) plus
   ``alpha`` times the denoising loss on the retain set; gradients are multiplied by the mask,
   so only salient weights move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gate import sd
from gate.unlearn import losses as L
from gate.unlearn.base import EraseRequest, ImageSet, Method, ProgressFactory


@dataclass
class SalUnConfig:
    train_method: str = field(default="full", metadata={"help": "full or xattn (both masked)"})
    lr: float = 1e-5
    epochs: int = 5
    batch_size: int = 8
    alpha: float = field(default=0.1, metadata={"help": "retain-loss weight (README example: 0.5)"})
    mask_ratio: float = field(default=0.5, metadata={"help": "share of weights kept salient (mask 'with_0.5')"})
    pseudo_prompt: str = field(default="", metadata={"help": "prompt the concept is relabelled to"})
    n_forget: int = 32
    n_retain: int = 64


class SalUn(Method):
    name = "salun"
    config_cls = SalUnConfig
    needs_images = True

    def presets(self) -> dict[str, Any]:
        # Small world: 32 forget / 64 retain images of its own; the saliency mask and the updates
        # within cross-attention (SalUn's scripts offer xattn beside full), 15 epochs at 1e-3.
        # Over the full UNet (2e-4, 10 epochs) retained fidelity fell 0.91 -> 0.63; within
        # cross-attention: skull 0.17, retained 0.80 (n = 24 / 6).
        return {
            "original": SalUnConfig(),
            "small-world": SalUnConfig(train_method="xattn", lr=1e-3, epochs=15, alpha=0.5),
        }

    def run(self, pipe, request: EraseRequest, cfg: SalUnConfig, data: dict[str, ImageSet], progress: ProgressFactory):
        unet = pipe.unet
        forget, retain = data["forget"], data["retain"]
        gen = torch.Generator().manual_seed(request.seed)
        params = sd.select_parameters(unet, cfg.train_method)
        sd.trainable(unet, params)
        grads = L.accumulate_abs_grads(
            pipe, unet, params, forget, max(1, len(forget) // cfg.batch_size), cfg.batch_size, gen
        )
        thr = L.global_threshold(grads, cfg.mask_ratio, gen)
        mask = {k: (g >= thr).to(g.dtype) for k, g in grads.items()}
        opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)
        steps = L.steps_for(cfg.epochs, len(forget), cfg.batch_size)
        tick = progress(f"salun: erase {request.concepts[0]!r}", steps)
        for step in range(steps):
            lf = L.forget_to_target(
                pipe, unet, forget, L.sample_batch(len(forget), cfg.batch_size, gen), cfg.pseudo_prompt, gen
            )
            lr_ = L.denoising(pipe, unet, retain, L.sample_batch(len(retain), cfg.batch_size, gen), gen)
            loss = lf + cfg.alpha * lr_
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for k, p in params.items():
                if p.grad is not None:
                    p.grad.mul_(mask[k])
            opt.step()
            tick(step, {"forget": lf.item(), "retain": lr_.item()})
        unet.eval().requires_grad_(False)
        kept = sum(int(m.sum()) for m in mask.values())
        return {"salient_weights": kept, "steps": steps}
