"""Where and how the commands that train run: device, precision, gradient checkpointing.

Every command that trains or generates takes ``--device`` (``cpu``, ``cuda``, ``cuda:1``,
``mps``); nothing moves to another device on its own, and a device that is not there is bad
input. Training keeps fp32 master weights and, on CUDA, runs the forward passes under autocast
in bf16 or fp16 (``--precision``; fp16 with a gradient scaler); on a CPU it is fp32 (CPU autocast
is slower than fp32 on the machines we measured, and fp16 has no CPU kernels for most ops).
Gradient checkpointing (``--gradient-checkpointing``) trades compute for activation memory, as
SD-size UNets need on a 24 GB GPU. What was chosen is printed and recorded (``as_record``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from gate.errors import BadInput

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_device(device: str) -> str:
    """``device`` as given, once it is known to exist here (a clear error otherwise)."""
    import torch

    d = str(device).strip()
    kind = d.split(":")[0]
    if kind == "cpu":
        return d
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"--device {d}: no CUDA device here (torch {torch.__version__}); use --device cpu")
        idx = int(d.split(":")[1]) if ":" in d else 0
        if idx >= torch.cuda.device_count():
            raise BadInput(f"--device {d}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return d
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BadInput(f"--device {d}: no MPS device here; use --device cpu")
        return d
    raise BadInput(f"--device {d!r}: use cpu, cuda, cuda:N or mps")


@dataclass(frozen=True)
class Compute:
    """Resolved compute settings of a training run."""

    device: str = "cpu"
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16 (never auto)
    gradient_checkpointing: bool = False

    @classmethod
    def resolve(cls, device: str = "cpu", precision: str = "auto", gradient_checkpointing: bool = False) -> Compute:
        import torch

        device = check_device(device)
        if precision not in PRECISIONS:
            raise BadInput(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        on_cuda = device.startswith("cuda")
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_cuda else "fp32"
        if precision != "fp32" and not on_cuda:
            raise BadInput(
                f"--precision {precision} needs a CUDA device (mixed precision runs under CUDA autocast); "
                f"on {device} training runs in fp32"
            )
        return cls(device, precision, bool(gradient_checkpointing))

    @property
    def autocast_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """The forward passes' context: CUDA autocast for bf16/fp16, nothing for fp32."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def scaler(self):
        """A gradient scaler for fp16 (bf16 and fp32 need none); disabled otherwise."""
        import torch

        return torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    def prepare(self, *modules) -> None:
        """Gradient checkpointing on the modules that support it (diffusers and transformers)."""
        if not self.gradient_checkpointing:
            return
        for m in modules:
            if hasattr(m, "enable_gradient_checkpointing"):
                m.enable_gradient_checkpointing()
            elif hasattr(m, "gradient_checkpointing_enable"):
                m.gradient_checkpointing_enable()

    def as_record(self) -> dict[str, Any]:
        import torch

        rec: dict[str, Any] = {
            "device": self.device,
            "precision": self.precision,
            "master_weights": "fp32",
            "gradient_checkpointing": self.gradient_checkpointing,
            "torch_threads": torch.get_num_threads(),
        }
        if self.device.startswith("cuda"):
            rec["gpu"] = torch.cuda.get_device_name(torch.device(self.device))
        return rec

    def describe(self) -> str:
        gc = ", gradient checkpointing" if self.gradient_checkpointing else ""
        mixed = " autocast, fp32 master weights" if self.precision != "fp32" else ""
        return f"device {self.device}, {self.precision}{mixed}{gc}"
