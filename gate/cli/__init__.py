"""The ``gate`` command line: a thin layer over the library.

One module per command group, each adding its sub-commands with ``register(subparsers)``:
:mod:`~gate.cli.world`, :mod:`~gate.cli.train` (erase, finetune), :mod:`~gate.cli.check`
(check, validate), :mod:`~gate.cli.history` (track, history, merge, annotate),
:mod:`~gate.cli.prescreen`, :mod:`~gate.cli.study`, :mod:`~gate.cli.theory`; shared helpers
in :mod:`~gate.cli.common`.

Nothing heavy is imported at start-up: ``gate --help`` must stay fast and must not import
torch. Each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gate import __version__
from gate.cli import certify, check, history, models, prescreen, study, theory, train, world
from gate.cli import plan as plan_cmd
from gate.cli import policy as policy_cmd
from gate.cli.common import Handler
from gate.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, GateError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gate",
        description="Resurgence Gate: checks that a model update does not bring erased concepts back.",
    )
    p.add_argument("--version", action="version", version=f"gate {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # the order of `gate --help`
    world.register(sub)
    train.register(sub)
    check.register(sub)
    certify.register(sub)
    history.register(sub)
    plan_cmd.register(sub)
    prescreen.register(sub)
    study.register(sub)
    theory.register(sub)
    policy_cmd.register(sub)
    models.register(sub)
    check.register_validate(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_BAD_INPUT if args.command is None and argv else 0
    try:
        return func(args)
    except GateError as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("gate: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure is the tool's fault: exit 3, one line, no traceback
        from gate.errors import TRAINING_HINT, OutOfMemory, is_out_of_memory

        if is_out_of_memory(e):  # the device ran out: what to lower, not a traceback
            hint = TRAINING_HINT if args.command in ("erase", "finetune", "study") else None
            oom = OutOfMemory(f"running gate {args.command}", getattr(args, "device", "cpu"), hint=hint)
            print(f"gate: error: {oom}", file=sys.stderr)
            return EXIT_INTERNAL
        print(f"gate: internal error: {type(e).__name__}: {e} (set GATE_DEBUG=1 for a traceback)", file=sys.stderr)
        import os

        if os.environ.get("GATE_DEBUG"):
            raise
        return EXIT_INTERNAL
