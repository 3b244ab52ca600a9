"""``gate plan``: which files of a pull request the gate must check, by the base's ``gate.yaml``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from gate.plan import Plan


def _show(text: str) -> str:
    """A path for a log line: control characters escaped (a file name must not start a log command)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def plan_table(p: Plan) -> str:
    """Plain text for CI logs: the candidates, then what is not gated or refused, with reasons."""
    lines = [f"gate plan {p.base[:12]}...{p.head[:12]}: {p.changed} changed files, {len(p.candidates)} candidates"]
    if p.candidates:
        rows = [["model line", "path", "kind", "policy", "shards"]]
        rows += [[c.model_line, _show(c.path), c.kind, c.policy, str(c.shards)] for c in p.candidates]
        lines += ["", *_columns(rows)]
    for title, found in (("not gated", p.not_gated), ("refused", p.refused)):
        if found:
            lines += ["", f"{title} ({len(found)}):"]
            lines += [f"  {_show(f.path)}: {f.reason}" for f in found]
    if p.deleted:
        lines += ["", f"deleted, not planned: {', '.join(_show(d) for d in p.deleted)}"]
    if not (p.candidates or p.not_gated or p.refused):
        lines += ["", "no model files changed"]
    lines += ["", "plan: FAIL (every weights-like file must be a candidate of a model line, or exempt)" if not p.ok
              else "plan: ok"]  # fmt: skip
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    from gate.plan import plan

    p = plan(Path(args.repo), args.base, args.head)
    to_stdout = args.json == "-"
    out: TextIO = sys.stderr if to_stdout else sys.stdout
    print(plan_table(p), file=out)
    if args.json:
        text = json.dumps(p.to_json(), indent=2) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text, encoding="utf-8")
            print(f"plan: {args.json}", file=out)
    return p.exit_code


def register(sub) -> None:
    """Adds ``gate plan``."""
    pl = sub.add_parser(
        "plan",
        help="list a pull request's candidates (by gate.yaml at the base ref) and a CI matrix of shards",
        description="Reads gate.yaml at --base (never the head), the files changed in --base...--head, and "
        "prints one line per candidate. Exit 0: clean plan; 1: a weights-like file is not gated or a "
        "candidate is refused; 2: bad input.",
    )
    pl.add_argument("--base", required=True, help="the base ref (trusted: its gate.yaml and policies rule)")
    pl.add_argument("--head", required=True, help="the pull request's head ref")
    pl.add_argument("--repo", default=".", help="the git repository (default: the current folder)")
    pl.add_argument("--json", help="write the plan as JSON here ('-': stdout, the table goes to stderr)")
    pl.set_defaults(func=cmd_plan)
