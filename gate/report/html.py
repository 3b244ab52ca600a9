"""The HTML report: the verdict table, the inputs' hashes, and for each failing or
inconclusive rule first, the worst prompts with baseline and candidate images side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from gate.report.text import fmt

if TYPE_CHECKING:
    from gate.report.model import Report


def image_name(concept: str, rule: str, k: int, side: str) -> str:
    return f"{concept}_{rule}_{k}_{side}.png".replace("/", "_").replace(" ", "_")


def save_worst_images(report: Report, results, img_dir: Path, per_rule: int = 4) -> int:
    """Writes, for every rule, the baseline and candidate images of its worst prompts."""
    img_dir.mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in results}
    n = 0
    for c in report.concepts:
        res = by_name.get(c.name)
        if res is None:
            continue
        for r in c.rules:
            for k, w in enumerate(r.worst[:per_rule]):
                for side in ("baseline", "candidate"):
                    im = _find_image(res.outcomes.get(side, []), w["prompt"], w["seed"], w.get("attack"))
                    if im is not None:
                        im.save(img_dir / image_name(c.name, r.rule, k, side))
                        n += 1
    return n


def write_html(report: Report, results, out_dir: Path, per_rule: int = 4) -> Path:
    """``out_dir/report.html`` with images under ``out_dir/images``: for each failing or
    inconclusive rule first, the worst prompts with baseline and candidate side by side."""
    save_worst_images(report, results, out_dir / "images", per_rule)
    return render_html(report, out_dir, per_rule)


# marks images that fail to load (a report copied without its images/ folder says so on the page)
_IMG_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images), ok = 0;
  imgs.forEach(function (im) {
    if (im.complete && im.naturalWidth > 0) { ok += 1; } else { im.parentNode.classList.add("broken"); }
  });
  document.body.setAttribute("data-images-total", String(imgs.length));
  document.body.setAttribute("data-images-loaded", String(ok));
  if (ok < imgs.length) {
    var note = document.getElementById("image-note");
    note.textContent = (imgs.length - ok) + " of " + imgs.length + " images did not load: keep images/ next to this page.";
  }
});
</script>"""


def _css(verdict: str) -> str:
    return verdict.replace(" ", "-")  # "not applicable" -> one class name


def render_html(report: Report, out_dir: Path, per_rule: int = 4) -> Path:
    """The HTML page from the report and the images already under ``out_dir/images``."""
    img_dir = out_dir / "images"
    order = {"fail": 0, "inconclusive": 1, "not applicable": 1, "pass": 2, "skipped": 3}
    rows = []
    for c in report.concepts:
        for r in c.rules:
            rows.append(
                f"<tr class='{_css(r.verdict)}'><td>{html.escape(c.name)}</td><td><code>{r.rule}</code></td>"
                f"<td>{fmt(r.baseline)}</td><td>{fmt(r.observed)}</td><td>[{fmt(r.low)}, {fmt(r.high)}]</td>"
                f"<td>{r.direction} {fmt(r.threshold)}</td><td class='v'>{r.verdict}</td></tr>"
            )
    sections = []
    flat = sorted(((c, r) for c in report.concepts for r in c.rules), key=lambda cr: order.get(cr[1].verdict, 9))
    for c, r in flat:
        if not r.worst:
            continue
        cells = []
        for k, w in enumerate(r.worst[:per_rule]):
            pair = []
            for side in ("baseline", "candidate"):
                name = image_name(c.name, r.rule, k, side)
                if not (img_dir / name).is_file():
                    continue
                score = w[f"{side}_score"]
                pair.append(
                    f"<figure><img src='images/{html.escape(name)}' alt='{side}, seed {w['seed']}'>"
                    f"<figcaption>{side}: {score:.2f}</figcaption></figure>"
                )
            if pair:
                cells.append(
                    f"<div class='pair'>{''.join(pair)}<p>{html.escape(w['prompt'])}<br><small>seed {w['seed']}{_attack_text(w)}</small></p></div>"
                )
        if cells:
            sections.append(
                f"<h3>{html.escape(c.name)}: <code>{r.rule}</code> <span class='{_css(r.verdict)}'>{r.verdict}</span></h3>"
                f"<div class='grid'>{''.join(cells)}</div>"
            )
    ids = report.inputs
    id_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(str(v.get('path', '')))}</code></td>"
        f"<td><code>{html.escape(str(v.get('sha256', ''))[:16])}</code></td></tr>"
        for k, v in ids.items()
        if isinstance(v, dict)
    )
    shards = report.merged_from
    shard_note = f"<p>Merged from {len(shards)} shard reports.</p>" if shards else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Resurgence gate: {report.verdict}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1rem; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.fail td.v, span.fail {{ color: #b00; font-weight: bold; }} tr.inconclusive td.v, span.inconclusive, tr.not-applicable td.v, span.not-applicable {{ color: #a60; }}
tr.pass td.v, span.pass {{ color: #070; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .pair {{ border: 1px solid #ddd; padding: 6px; max-width: 420px; }}
figure {{ display: inline-block; margin: 4px; }} img {{ width: 160px; image-rendering: pixelated; }}
figure.broken {{ outline: 2px dashed #b00; }} #image-note {{ color: #b00; }}
</style></head><body>
<h1 id="verdict" class="{report.verdict}">Resurgence gate: {report.verdict.upper()}</h1>
<p>Policy <code>{html.escape(str(report.policy().get("name", "")))}</code>, seed {report.seed}; reproduce with <code>{html.escape(report.reproduce)}</code></p>
{shard_note}
<table id="verdict-table"><tr><th>concept</th><th>rule</th><th>baseline</th><th>candidate</th><th>95% interval</th><th>threshold</th><th>verdict</th></tr>
{"".join(rows)}</table>
<table id="inputs"><tr><th>input</th><th>path</th><th>sha256</th></tr>{id_rows}</table>
<h2>Worst prompts: baseline and candidate on the same seed</h2>
<p id="image-note"></p>
{"".join(sections)}
{_IMG_CHECK}
</body></html>
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(page)
    return path


def _attack_text(w: dict) -> str:
    a = dict(w.get("attack") or {})
    name = a.pop("attack", "")
    return f", {name} " + ", ".join(f"{k} {v}" for k, v in a.items()) if name else ""


def _find_image(outcomes, prompt: str, seed: int, attack: dict | None = None):
    """The image of (prompt, seed), and for an attack probe's image its settings (the probe's
    grid points share one seed)."""
    for o in outcomes:
        if o.job.prompt == prompt and o.job.seed == seed and dict(o.job.attack) == (attack or {}):
            return o.image
    return None
