"""Reports of a check: the typed report (``model``), text renderings (``text``) and the HTML page
with side-by-side images (``html``). Nothing here decides a verdict; rendering never costs one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gate.report.html import image_name, render_html, save_worst_images, write_html
from gate.report.model import REPORT_VERSION, ConceptReport, Report, load_report, write_report_json
from gate.report.text import fmt, header_lines, markdown, reproduce_line, rich_table, verdict_line

__all__ = [
    "REPORT_VERSION", "ConceptReport", "Report", "fmt", "header_lines", "image_name", "load_report", "markdown",
    "render_html", "reproduce_line", "rich_table", "save_worst_images", "verdict_line", "write_html",
    "write_report_json", "write_reports",
]  # fmt: skip


def write_reports(
    report: Report,
    out_dir: Path,
    *,
    results=None,
    json_path: Path | None = None,
    warn: Callable[[str], None] = lambda m: None,
) -> list[Path]:
    """Writes ``report.json`` (first: it carries the verdict), then ``summary.md`` and
    ``report.html``. A failure in the Markdown or HTML rendering is a warning, never a lost
    verdict: the JSON stands, and the caller's exit code is the verdict's.

    ``results`` (the runner's concept results, with images) adds the worst prompts' images;
    without them (``gate merge``) the page uses the images already under ``out_dir/images``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = json_path or out_dir / "report.json"
    write_report_json(report, json_path)
    written = [json_path]

    def html_page() -> Path:
        return write_html(report, results, out_dir) if results is not None else render_html(report, out_dir)

    steps: list[tuple[str, Callable[[], Path]]] = [
        ("summary.md", lambda: _write_text(out_dir / "summary.md", markdown(report))),
        ("report.html", html_page),
    ]
    for name, step in steps:
        try:
            written.append(step())
        except Exception as e:  # a renderer's bug must not cost the verdict or its exit code
            warn(f"warning: could not write {name} ({type(e).__name__}: {str(e)[:200]}); report.json stands")
    return written


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
