"""The gate's exceptions. Every message names the input and says what to do.

    GateError                 base; carries the process exit code
    ├── BadInput              exit 2: the user's input is wrong (file, policy, flag, concept)
    └── InternalError         exit 3: the tool itself failed

Exit code 1 is reserved for a failing verdict, 0 for a pass.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class GateError(Exception):
    exit_code = EXIT_INTERNAL


class BadInput(GateError):
    exit_code = EXIT_BAD_INPUT


class InternalError(GateError):
    exit_code = EXIT_INTERNAL


class OutOfMemory(InternalError):
    """The device (or the host) ran out of memory: not the user's input, and not a verdict."""

    def __init__(self, stage: str, device: str, detail: str = "", hint: str | None = None) -> None:
        hint = hint or (
            "try sampler.batch_size auto or a smaller one in the policy, sampler.vae_slicing, sampler.dtype "
            "float16 or bfloat16 on a GPU, fewer concepts per run (--shard i/n), or another --device"
        )
        super().__init__(f"out of memory while {stage} on {device}{f' ({detail})' if detail else ''}: {hint}")


def is_out_of_memory(e: BaseException) -> bool:
    """torch's CUDA/MPS out-of-memory errors (RuntimeError subclasses) and the host's MemoryError."""
    if isinstance(e, MemoryError):
        return True
    name = type(e).__name__
    return name in ("OutOfMemoryError", "OutOfMemory") or "out of memory" in str(e).lower()


TRAINING_HINT = (
    "try --gradient-checkpointing, --precision bf16 (or fp16 for gate finetune) on a GPU, a smaller --batch-size, "
    "a lower --resolution, --mode lora instead of full, or another --device"
)
