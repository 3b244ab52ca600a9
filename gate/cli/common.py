"""Helpers the command modules share: progress bars, flag groups and small parsers.

Nothing here imports anything heavy at module level.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from gate.errors import BadInput

Handler = Callable[[argparse.Namespace], int]


def _world_dir(args: argparse.Namespace) -> Path:
    from gate.world.clip import ASSETS

    world = Path(args.world) if args.world else ASSETS
    for sub in ("sd/model_index.json", "clip"):
        if not (world / sub).exists():
            raise BadInput(
                f"--world {world}: no small world there (missing {sub}); run `gate world build --out {world}`"
            )
    return world


def _progress_factory(console):
    """A rich progress bar per stage on a terminal; plain lines in logs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[logs]}"), TimeElapsedColumn(), console=console,
    )  # fmt: skip

    def factory(name: str, total: int):
        task = progress.add_task(name, total=total, logs="")
        every = max(1, total // 10)

        def tick(step: int, logs: dict[str, float]) -> None:
            text = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
            progress.update(task, completed=step + 1, logs=text)
            if not console.is_terminal and (step % every == 0 or step == total - 1):
                console.print(f"{name}: {step + 1}/{total} {text}", highlight=False)

        return tick

    return progress, factory


def _count_progress(factory):
    """Adapts a (step, logs) progress factory to the runner's count-of-done callbacks."""

    def make(name: str, total: int):
        if total == 0:
            return lambda done: None
        tick = factory(name, total)
        return lambda done: tick(done - 1, {})

    return make


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise BadInput(f"--set {item!r}: use NAME=VALUE, e.g. --set iterations=50")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput(f"--shard {text!r}: use i/n, e.g. 1/4") from None
    return i, n


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (explicit; nothing moves silently)")


def _compute_args(p: argparse.ArgumentParser) -> None:
    """--device, --precision, --gradient-checkpointing: the flags of every command that trains."""
    _device_arg(p)
    p.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
        help="training precision: fp32 master weights with bf16/fp16 CUDA autocast (auto: bf16 on CUDA when "
        "supported, else fp16; fp32 on a CPU)",
    )  # fmt: skip
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in backward (SD-size UNets)"
    )


def _compute(args: argparse.Namespace, console=None):
    """The resolved ``gate.devices.Compute`` of a training command, printed."""
    from gate.devices import Compute

    c = Compute.resolve(args.device, args.precision, args.gradient_checkpointing)
    if console is not None:
        console.print(f"compute: {c.describe()}", highlight=False)
    return c


def _tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $GATE_TRACKING_URI, $MLFLOW_TRACKING_URI, else sqlite in .gate-mlflow/)",
    )
    p.add_argument("--model-line", help="the model line runs are grouped by (default: the policy's name)")


def _track(rep, out_dir: Path, args: argparse.Namespace, console) -> None:
    """Logs a finished report to MLflow (gate check; gate merge --track)."""
    from rich.text import Text

    from gate.tracking import resolve_uri, track_after_check, ui_hint

    uri = resolve_uri(args.tracking_uri)
    tracked = track_after_check(
        rep, out_dir, uri=uri, model_line=args.model_line, warn=lambda m: console.print(Text(m, style="yellow"))
    )
    if tracked:
        console.print(Text(f"mlflow: run {tracked.run_id} in {uri}"))
        console.print(Text(f"view it: {ui_hint(tracked)}"))
