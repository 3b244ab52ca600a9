"""``gate history``, ``gate track``, ``gate merge`` and ``gate annotate``: what happens to reports
after ``gate check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gate.cli.common import _track, _tracking_args
from gate.errors import BadInput

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "not applicable": "yellow"}


def cmd_track(args: argparse.Namespace) -> int:
    from gate.merge import load
    from gate.tracking import log_report, ui_hint

    path = Path(args.report)
    rep = load(path)
    tracked = log_report(
        rep, path.parent, uri=args.tracking_uri, model_line=args.model_line, allow_duplicate=args.again
    )
    note = " (this report was already logged; --again logs it once more)" if tracked.existing else ""
    print(f"mlflow: run {tracked.run_id} in {tracked.uri}{note}")
    print(f"view it: {ui_hint(tracked)}")
    return 0


def history_table(rows, names: list[str]):
    """A rich table: one row per run, one column per series (observed value, `` x`` when it failed)."""
    import datetime as dt

    from rich.table import Table

    t = Table(title=f"gate history ({len(rows)} runs)")
    t.add_column("time")
    t.add_column("run")
    t.add_column("update")
    t.add_column("verdict")
    for n in names:
        t.add_column(n, justify="right", no_wrap=True)
    for r in rows:
        cells = []
        for n in names:
            v = r.values.get(n, {})
            mark = " x" if v.get("failed") == 1.0 else ""
            cells.append(f"{v['observed']:.3f}{mark}" if "observed" in v else "-")
        t.add_row(
            dt.datetime.fromtimestamp(r.time_ms / 1000).strftime("%Y-%m-%d %H:%M:%S"), r.run_id[:8],
            r.update_sha[:10] or "none", f"[{VERDICT_STYLE.get(r.verdict, '')}]{r.verdict}[/]", *cells,
        )  # fmt: skip
    return t


def cmd_history(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gate.tracking import history, plot_history, series_names

    rows = history(uri=args.tracking_uri, model_line=args.model_line, max_runs=args.last)
    if args.concept:
        rows = [r for r in rows if any(k.split(".", 1)[0] == args.concept for k in r.values)]
    names = series_names(rows, args.concept)
    if args.rule:
        names = [n for n in names if n.split(".", 1)[1] in args.rule]
    if not rows or not names:
        raise BadInput("no gate runs match (check --tracking-uri, --model-line, --concept)")
    Console(width=max(120, 70 + sum(len(n) + 3 for n in names))).print(history_table(rows, names))
    out = plot_history(rows, names, Path(args.plot))
    print(f"plot: {out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from gate import report as R
    from gate.merge import copy_images, load, merge

    paths = [Path(p) for p in args.reports]
    merged = merge([load(p) for p in paths], [str(p) for p in paths])
    out_dir = Path(args.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_images(paths, out_dir)
    R.write_reports(merged, out_dir, warn=lambda m: print(m, file=sys.stderr))
    print(f"reports: {out_dir}/report.json, summary.md, report.html")
    if args.track:
        from rich.console import Console

        _track(merged, out_dir, args, Console(stderr=True))
    print(R.verdict_line(merged))
    return 0 if merged.verdict == "pass" else 1


def cmd_annotate(args: argparse.Namespace) -> int:
    from gate import report as R
    from gate.ci import github_annotations, write_step_summary
    from gate.merge import load

    rep = load(Path(args.report))
    for line in github_annotations(rep, limit=args.limit):
        print(line)
    written = write_step_summary(R.markdown(rep), args.summary)
    if written:
        print(f"summary appended to {written}", file=sys.stderr)
    return 0 if rep.verdict == "pass" else 1


def register(sub) -> None:
    """Adds ``gate track``, ``gate history``, ``gate merge`` and ``gate annotate``."""
    tr = sub.add_parser("track", help="log a report.json to MLflow (one that could not be logged at the time)")
    tr.add_argument("report")
    _tracking_args(tr)
    tr.add_argument("--again", action="store_true", help="log it even if this exact report was logged before")
    tr.set_defaults(func=cmd_track)

    hi = sub.add_parser("history", help="trends of a model line's gate runs: a table and a PNG plot")
    _tracking_args(hi)
    hi.add_argument("--concept", help="only this concept")
    hi.add_argument("--rule", action="append", help="only this rule (repeatable)")
    hi.add_argument("--last", type=int, default=500, help="at most this many runs")
    hi.add_argument("--plot", default="out/gate-history.png")
    hi.set_defaults(func=cmd_history)

    me = sub.add_parser("merge", help="combine the reports of gate check --shard runs into one verdict")
    me.add_argument("reports", nargs="+", help="each shard's report.json (its images/ folder beside it)")
    me.add_argument("--report-dir", default="out/gate-report")
    _tracking_args(me)
    me.add_argument("--track", action="store_true", help="log the merged verdict to MLflow")
    me.set_defaults(func=cmd_merge)

    an = sub.add_parser("annotate", help="GitHub Actions: ::error annotations and the job summary for a report")
    an.add_argument("report")
    an.add_argument("--limit", type=int, default=5, help="annotate at most this many concepts, then a count")
    an.add_argument("--summary", help="append the Markdown here (default: $GITHUB_STEP_SUMMARY when set)")
    an.set_defaults(func=cmd_annotate)
