"""``gate theory plot|sweep``: the linear model of resurgence."""

from __future__ import annotations

import argparse
from pathlib import Path


def sweep_lines(rows: list[dict]) -> list[str]:
    """The table ``gate theory sweep`` prints: closed form against simulation, then the worst gap."""
    worst = max(abs(r["simulated"] - r["predicted"]) for r in rows)
    lines = [f"{'overlap':>8} {'curv':>6} {'eta':>5} {'steps':>6} {'closed form':>12} {'simulation':>11}"]
    for r in rows:
        lines.append(
            f"{r['overlap']:>8.2f} {r['curvature']:>6.2f} {r['eta']:>5.2f} {r['steps']:>6} "
            f"{r['predicted']:>12.4f} {r['simulated']:>11.4f}"
        )
    lines.append(f"largest absolute difference over {len(rows)} points: {worst:.4f}")
    return lines


def cmd_theory(args: argparse.Namespace) -> int:
    from gate.theory.linear import plot_all, sweep

    if args.action == "plot":
        for p in plot_all(Path(args.out)):
            print(f"figure: {p}")
        return 0
    for line in sweep_lines(sweep()):
        print(line)
    return 0


def register(sub) -> None:
    """Adds ``gate theory``."""
    th = sub.add_parser("theory", help="the linear model of resurgence: figures, closed form against simulation")
    th.add_argument("action", choices=["plot", "sweep"])
    th.add_argument("--out", default="docs/theory", help="where plot writes the figures")
    th.set_defaults(func=cmd_theory)
