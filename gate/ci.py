"""GitHub Actions output: ``::error`` annotations and the job summary.

GitHub shows only about ten annotations of a type per step, so the gate emits a few (the
failing concepts first, then inconclusive ones) and one more line with the count of the rest.
The Markdown summary is appended to ``$GITHUB_STEP_SUMMARY`` (capped at about 1 MiB per step;
``report.markdown`` truncates below that).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from gate.judge import FAIL, UNDECIDED

if TYPE_CHECKING:
    from gate.report import Report


def _escape(text: str) -> str:
    # workflow-command escaping for the message part
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(text: str) -> str:
    return _escape(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(report: Report, limit: int = 5) -> list[str]:
    bad = []
    for c in report.concepts:
        rules = [r for r in c.rules if r.verdict in (FAIL, *UNDECIDED)]
        if c.verdict == "fail" or rules:
            bad.append((0 if c.verdict == "fail" else 1, c, rules))
    bad.sort(key=lambda t: (t[0], t[1].name))
    lines = []
    for _, c, rules in bad[:limit]:
        parts = [
            f"{r.rule} {r.verdict}: observed {r.observed:.3f} "
            f"[{r.low:.3f}, {r.high:.3f}] vs {r.direction} {r.threshold:g}"
            for r in rules
            if r.observed is not None
        ]
        level = "error" if c.verdict == "fail" else "warning"
        title = _escape_prop(f"resurgence gate: {c.name} {c.verdict.upper()}")
        lines.append(f"::{level} title={title}::{_escape('; '.join(parts) or c.verdict)}")
    rest = len(bad) - limit
    if rest > 0:
        lines.append(
            f"::error title=resurgence gate::{rest} more concepts failed or were inconclusive; see the job summary"
        )
    return lines


def write_step_summary(markdown_text: str, path: str | None = None) -> Path | None:
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    p = Path(target)
    with p.open("a", encoding="utf-8") as f:
        f.write(markdown_text.rstrip("\n") + "\n")
    return p
