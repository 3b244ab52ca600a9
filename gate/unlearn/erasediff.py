"""EraseDiff (Wu et al., 2024): bilevel forget/retain optimisation, first-order (BOME) update.

Each outer step: from theta_i run ``k_steps`` SGD steps on the forget loss L_f (the concept's
prediction pulled to an unrelated prompt's), record their mean L_f*, reset to theta_i; then
take one step on  L_denoise(retain) + lambda_bome * (L_f(theta) - L_f*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gate import sd
from gate.unlearn import losses as L
from gate.unlearn.base import EraseRequest, ImageSet, Method, ProgressFactory


@dataclass
class EraseDiffConfig:
    train_method: str = field(
        default="full", metadata={"help": "noxattn (NSFW example), full (Imagenette), xattn, ..."}
    )
    epochs: int = 5
    k_steps: int = 2
    lambda_bome: float = 0.1
    lr: float = 1e-5
    batch_size: int = 8
    non_concept_prompt: str = field(default="a photo of a pokemon", metadata={"help": "c_n, an unrelated prompt"})
    n_forget: int = 32
    n_retain: int = 64


class EraseDiff(Method):
    name = "erasediff"
    config_cls = EraseDiffConfig
    needs_images = True

    def presets(self) -> dict[str, Any]:
        # Small world: c_n is the empty prompt (the world has no unrelated "pokemon"), lambda 1
        # and K 1 as in the Imagenette example, 15 epochs at a higher rate (1e-4) for its tiny
        # UNet. At 2e-4 for 10 epochs the skull only fell to 0.25 and retained fidelity to 0.72;
        # at 1e-4 for 15 epochs: skull 0.29, retained 0.87 (n = 24 / 6). On the current world
        # build 1e-4 left the skull at 0.50; 1.5e-4 gives skull 0.17, retained 0.91 -> 0.81 (1.2e-4:
        # 0.33; 20 epochs at 1e-4: 0.62; lambda 0.5 at 1.5e-4: 0.38).
        return {
            "original": EraseDiffConfig(),
            "small-world": EraseDiffConfig(epochs=15, k_steps=1, lambda_bome=1.0, lr=1.5e-4, non_concept_prompt=""),
        }

    def run(
        self, pipe, request: EraseRequest, cfg: EraseDiffConfig, data: dict[str, ImageSet], progress: ProgressFactory
    ):
        unet = pipe.unet
        forget, retain = data["forget"], data["retain"]
        gen = torch.Generator().manual_seed(request.seed)
        params = sd.select_parameters(unet, cfg.train_method)
        sd.trainable(unet, params)
        opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)
        steps = L.steps_for(cfg.epochs, len(forget), cfg.batch_size)
        tick = progress(f"erasediff: erase {request.concepts[0]!r}", steps)
        for step in range(steps):
            idx_f = L.sample_batch(len(forget), cfg.batch_size, gen)
            # inner problem: K SGD steps on the forget loss from theta_i, then reset
            saved = {k: p.detach().clone() for k, p in params.items()}
            inner = []
            for _ in range(cfg.k_steps):
                lf = L.forget_to_target(pipe, unet, forget, idx_f, cfg.non_concept_prompt, gen)
                unet.zero_grad(set_to_none=True)
                lf.backward()
                with torch.no_grad():
                    for p in params.values():
                        if p.grad is not None:
                            p.sub_(cfg.lr * p.grad)
                inner.append(lf.item())
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(saved[k])
            lf_star = sum(inner) / len(inner)
            # outer step
            lr_ = L.denoising(pipe, unet, retain, L.sample_batch(len(retain), cfg.batch_size, gen), gen)
            lf = L.forget_to_target(pipe, unet, forget, idx_f, cfg.non_concept_prompt, gen)
            loss = lr_ + cfg.lambda_bome * (lf - lf_star)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tick(step, {"retain": lr_.item(), "forget": lf.item()})
        unet.eval().requires_grad_(False)
        return {"outer_steps": steps}
