"""SDD: Safe self-Distillation Diffusion (Kim et al., 2023).

The student's conditional prediction for the concept is pulled to its own (stop-gradient)
unconditional prediction, on latents x_t sampled by an EMA teacher from the empty prompt
(no guidance) up to a random DDIM step. The teacher follows the student with EMA decay; the
saved model is the teacher.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from gate import sd
from gate.unlearn.base import EraseRequest, ImageSet, Method, ProgressFactory


@dataclass
class SDDConfig:
    train_method: str = field(default="xattn", metadata={"help": "xattn (default), full, selfattn, noxattn"})
    steps: int = 1500
    lr: float = 1e-5
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    ddim_steps: int = 50
    batch_size: int = 1
    grad_clip: float = 1.0


class SDD(Method):
    name = "sdd"
    config_cls = SDDConfig

    def presets(self) -> dict[str, Any]:
        # Small world: 150 steps at batch 8. With decay 0.999 the teacher would move only
        # 1 - 0.999^150 = 14% of the way to the student; 0.97 lets it follow within the budget.
        return {
            "original": SDDConfig(),
            "small-world": SDDConfig(steps=150, lr=2e-4, ema_decay=0.97, ddim_steps=20, batch_size=8),
        }

    def run(self, pipe, request: EraseRequest, cfg: SDDConfig, data: dict[str, ImageSet], progress: ProgressFactory):
        student = pipe.unet
        teacher = copy.deepcopy(student).requires_grad_(False).eval()
        params = sd.select_parameters(student, cfg.train_method)
        sd.trainable(student, params)
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        t_params = dict(teacher.named_parameters())
        gen = torch.Generator().manual_seed(request.seed)
        uncond = sd.encode_prompts(pipe, [""] * cfg.batch_size)
        tick = progress(f"sdd: erase {request.concepts[0]!r}", cfg.steps)
        losses = []
        for step in range(cfg.steps):
            prompt = request.concepts[step % len(request.concepts)]  # concepts cycled ("iterative")
            cond = sd.encode_prompts(pipe, [prompt] * cfg.batch_size)
            stop = int(torch.randint(0, cfg.ddim_steps, (1,), generator=gen))
            x_t, t = sd.ddim_partial_sample(
                pipe, teacher, uncond, uncond, stop=stop, steps=cfg.ddim_steps, guidance=1.0, generator=gen
            )
            with torch.no_grad():
                target = student(x_t, t, uncond).sample
            loss = torch.nn.functional.mse_loss(student(x_t, t, cond).sample, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                for name, p in params.items():
                    t_params[name].mul_(cfg.ema_decay).add_(p.detach(), alpha=1 - cfg.ema_decay)
            losses.append(loss.item())
            tick(step, {"loss": losses[-1]})
        # the result is the EMA teacher
        pipe.unet.load_state_dict(teacher.state_dict())
        pipe.unet.eval().requires_grad_(False)
        return {
            "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
            "trained_parameters": sum(p.numel() for p in params.values()),
        }
