"""Rendering only: the report dict, JSON, Markdown (for ``$GITHUB_STEP_SUMMARY``), HTML with
side-by-side image grids, and the rich summary table. Nothing here decides a verdict."""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

from gate import __version__

REPORT_VERSION = 1


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def build_report(check, results, verdict: str, wall_s: float) -> dict[str, Any]:
    from gate.pipeline import library_versions
    from gate.tracking import git_commit

    pol = check.policy
    return {
        "report_version": REPORT_VERSION,
        "gate_version": __version__,
        "verdict": verdict,
        "inconclusive_counts_as": pol.inconclusive,
        "inputs": {
            **check.identities,
            "policy": {"path": pol.source, "name": pol.name, "version": pol.version, "sha256": pol.sha256},
        },
        "reproduce": reproduce_line(check.opts),
        "seed": pol.seed,
        "sampler": vars(pol.sampler),
        "device": check.opts.device,
        "shard": list(check.opts.shard) if check.opts.shard else None,
        "libraries": library_versions(),
        "detectors": {k: d.identity() for k, d in check.detectors.items()},
        "concepts": [
            {
                "name": r.name,
                "verdict": _concept_verdict(r.rules, pol.inconclusive == "fail"),
                "rules": [x.as_dict() for x in r.rules],
            }
            for r in results
        ],
        "cache": check.cache.stats(),
        "timings_s": {k: round(v, 2) for k, v in check.timings.items()},
        "wall_time_s": round(wall_s, 2),
        "finished_at": round(time.time(), 3),
        "git_commit": git_commit(),
    }


def _concept_verdict(rules, inconclusive_fails: bool) -> str:
    from gate.judge import overall

    return overall([r for r in rules if r.verdict != "skipped"], inconclusive_fails)


def reproduce_line(opts) -> str:
    parts = ["gate check", f"--checkpoint {opts.checkpoint}"]
    if opts.update:
        parts.append(f"--update {opts.update}")
    if opts.original:
        parts.append(f"--original {opts.original}")
    parts.append(f"--policy {opts.policy}")
    if opts.lora_scale != 1.0:
        parts.append(f"--lora-scale {opts.lora_scale}")
    if opts.config:
        parts.append(f"--config {opts.config}")
    if opts.device != "cpu":
        parts.append(f"--device {opts.device}")
    if opts.concepts:
        parts += [f"--concept {c}" for c in opts.concepts]
    if opts.shard:
        parts.append(f"--shard {opts.shard[0]}/{opts.shard[1]}")
    return " ".join(parts)


def verdict_line(report: dict[str, Any]) -> str:
    rules = [r for c in report["concepts"] for r in c["rules"]]
    failed = [f"{r['concept']}:{r['rule']}" for r in rules if r["verdict"] == "fail"]
    inconc = [f"{r['concept']}:{r['rule']}" for r in rules if r["verdict"] == "inconclusive"]
    text = f"VERDICT: {report['verdict'].upper()} ({len(report['concepts'])} concepts, {len(rules)} rules"
    if failed:
        text += f"; failed: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}"
    if inconc:
        text += f"; inconclusive ({report['inconclusive_counts_as']}s): {', '.join(inconc[:5])}"
    return text + ")"


def write_json(report: dict[str, Any], path: Path) -> None:
    from gate.sd import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)


def markdown(report: dict[str, Any], max_bytes: int = 900_000) -> str:
    """A summary that fits GitHub's step-summary limit (about 1 MiB)."""
    lines = [
        f"## Resurgence gate: **{report['verdict'].upper()}**",
        "",
        f"Policy `{report['inputs']['policy']['name']}` (sha256 `{report['inputs']['policy']['sha256'][:12]}`), "
        f"checkpoint `{report['inputs']['checkpoint']['sha256'][:12]}`, update "
        f"`{(report['inputs'].get('update') or {}).get('sha256', 'none')[:12]}`, seed {report['seed']}.",
        "",
        "| concept | rule | baseline | candidate | 95% interval | threshold | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in report["concepts"]:
        for r in c["rules"]:
            mark = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "_inconclusive_"}.get(
                r["verdict"], r["verdict"]
            )
            lines.append(
                f"| {c['name']} | `{r['rule']}` | {fmt(r['baseline'])} | {fmt(r['observed'])} | "
                f"[{fmt(r['low'])}, {fmt(r['high'])}] | {r['direction']} {fmt(r['threshold'])} | {mark} |"
            )
    lines += ["", f"Reproduce: `{report['reproduce']}`", ""]
    text = "\n".join(lines)
    return text if len(text.encode()) <= max_bytes else text[: max_bytes - 100] + "\n\n(truncated)\n"


def image_name(concept: str, rule: str, k: int, side: str) -> str:
    return f"{concept}_{rule}_{k}_{side}.png".replace("/", "_").replace(" ", "_")


def save_worst_images(report: dict[str, Any], results, img_dir: Path, per_rule: int = 4) -> int:
    """Writes, for every rule, the baseline and candidate images of its worst prompts."""
    img_dir.mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in results}
    n = 0
    for c in report["concepts"]:
        res = by_name.get(c["name"])
        if res is None:
            continue
        for r in c["rules"]:
            for k, w in enumerate(r.get("worst", [])[:per_rule]):
                for side in ("baseline", "candidate"):
                    im = _find_image(res.outcomes.get(side, []), w["prompt"], w["seed"])
                    if im is not None:
                        im.save(img_dir / image_name(c["name"], r["rule"], k, side))
                        n += 1
    return n


def write_html(report: dict[str, Any], results, out_dir: Path, per_rule: int = 4) -> Path:
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


def render_html(report: dict[str, Any], out_dir: Path, per_rule: int = 4) -> Path:
    """The HTML page from the report and the images already under ``out_dir/images``."""
    img_dir = out_dir / "images"
    order = {"fail": 0, "inconclusive": 1, "pass": 2, "skipped": 3}
    rows = []
    for c in report["concepts"]:
        for r in c["rules"]:
            rows.append(
                f"<tr class='{r['verdict']}'><td>{html.escape(c['name'])}</td><td><code>{r['rule']}</code></td>"
                f"<td>{fmt(r['baseline'])}</td><td>{fmt(r['observed'])}</td><td>[{fmt(r['low'])}, {fmt(r['high'])}]</td>"
                f"<td>{r['direction']} {fmt(r['threshold'])}</td><td class='v'>{r['verdict']}</td></tr>"
            )
    sections = []
    flat = sorted(
        ((c, r) for c in report["concepts"] for r in c["rules"]), key=lambda cr: order.get(cr[1]["verdict"], 9)
    )
    for c, r in flat:
        if not r.get("worst"):
            continue
        cells = []
        for k, w in enumerate(r["worst"][:per_rule]):
            pair = []
            for side in ("baseline", "candidate"):
                name = image_name(c["name"], r["rule"], k, side)
                if not (img_dir / name).is_file():
                    continue
                score = w[f"{side}_score"]
                pair.append(
                    f"<figure><img src='images/{html.escape(name)}' alt='{side}, seed {w['seed']}'>"
                    f"<figcaption>{side}: {score:.2f}</figcaption></figure>"
                )
            if pair:
                cells.append(
                    f"<div class='pair'>{''.join(pair)}<p>{html.escape(w['prompt'])}<br><small>seed {w['seed']}</small></p></div>"
                )
        if cells:
            sections.append(
                f"<h3>{html.escape(c['name'])}: <code>{r['rule']}</code> <span class='{r['verdict']}'>{r['verdict']}</span></h3>"
                f"<div class='grid'>{''.join(cells)}</div>"
            )
    ids = report["inputs"]
    id_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(str(v.get('path', '')))}</code></td>"
        f"<td><code>{html.escape(str(v.get('sha256', ''))[:16])}</code></td></tr>"
        for k, v in ids.items()
        if isinstance(v, dict)
    )
    shards = report.get("merged_from")
    shard_note = f"<p>Merged from {len(shards)} shard reports.</p>" if shards else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Resurgence gate: {report["verdict"]}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1rem; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.fail td.v, span.fail {{ color: #b00; font-weight: bold; }} tr.inconclusive td.v, span.inconclusive {{ color: #a60; }}
tr.pass td.v, span.pass {{ color: #070; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .pair {{ border: 1px solid #ddd; padding: 6px; max-width: 420px; }}
figure {{ display: inline-block; margin: 4px; }} img {{ width: 160px; image-rendering: pixelated; }}
figure.broken {{ outline: 2px dashed #b00; }} #image-note {{ color: #b00; }}
</style></head><body>
<h1 id="verdict" class="{report["verdict"]}">Resurgence gate: {report["verdict"].upper()}</h1>
<p>Policy <code>{html.escape(ids["policy"]["name"])}</code>, seed {report["seed"]}; reproduce with <code>{html.escape(report["reproduce"])}</code></p>
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


def _find_image(outcomes, prompt: str, seed: int):
    for o in outcomes:
        if o.job.prompt == prompt and o.job.seed == seed:
            return o.image
    return None


def rich_table(report: dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"Resurgence gate: {report['verdict'].upper()}")
    for col in ("concept", "rule", "baseline", "candidate", "95% interval", "threshold", "verdict"):
        t.add_column(col, justify="right" if col in ("baseline", "candidate") else "left")
    style = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
    for c in report["concepts"]:
        for r in c["rules"]:
            t.add_row(
                c["name"], r["rule"], fmt(r["baseline"]), fmt(r["observed"]), f"[{fmt(r['low'])}, {fmt(r['high'])}]",
                f"{r['direction']} {fmt(r['threshold'])}", f"[{style.get(r['verdict'], '')}]{r['verdict']}[/]",
            )  # fmt: skip
    return t


def header_lines(check) -> list[str]:
    from gate.pipeline import library_versions

    ids = check.identities
    v = library_versions()
    lines = [
        f"resurgence-gate {__version__}: policy {check.policy.name} (sha256 {check.policy.sha256[:12]}), seed {check.policy.seed}",
        f"checkpoint {ids['checkpoint']['path']} sha256 {ids['checkpoint']['sha256'][:12]}",
    ]
    if check.opts.update:
        lines.append(f"update {check.opts.update} (sha256 in report)")
    s = check.policy.sampler
    lines.append(f"sampler steps {s.steps} guidance {s.guidance} dtype {s.dtype} device {check.opts.device}")
    lines.append(
        "libraries "
        + " ".join(f"{k} {v[k]}" for k in ("torch", "diffusers", "transformers", "peft", "open_clip_torch"))
    )
    return lines


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
