"""Text renderings of a report: the verdict line, Markdown (for ``$GITHUB_STEP_SUMMARY``), the
rich summary table, the run header and the line that reproduces a check. Nothing here decides
a verdict."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from gate import __version__

if TYPE_CHECKING:
    from gate.report.model import Report

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "skipped": "dim"}
VERDICT_STYLE["not applicable"] = "yellow"
MARK = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "_inconclusive_", "not applicable": "_not applicable_"}


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


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


def verdict_line(report: Report) -> str:
    rules = report.rules()
    failed = [f"{r.concept}:{r.rule}" for r in rules if r.verdict == "fail"]
    inconc = [f"{r.concept}:{r.rule}" for r in rules if r.verdict == "inconclusive"]
    inconc += [f"{r.concept}:{r.rule} (not applicable)" for r in rules if r.verdict == "not applicable"]
    text = f"VERDICT: {report.verdict.upper()} ({len(report.concepts)} concepts, {len(rules)} rules"
    if failed:
        text += f"; failed: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}"
    if inconc:
        text += f"; inconclusive ({report.inconclusive_counts_as}s): {', '.join(inconc[:5])}"
    return text + ")"


def markdown(report: Report, max_bytes: int = 900_000) -> str:
    """A summary that fits GitHub's step-summary limit (about 1 MiB)."""
    pol = report.policy()
    lines = [
        f"## Resurgence gate: **{report.verdict.upper()}**",
        "",
        f"Policy `{pol.get('name', '')}` (sha256 `{str(pol.get('sha256', ''))[:12]}`), "
        f"checkpoint `{str(report.identity('checkpoint').get('sha256', ''))[:12]}`, update "
        f"`{str(report.identity('update').get('sha256', 'none'))[:12]}`, seed {report.seed}.",
        *_pull_request_lines(report),
        *certificate_lines(report),
        "",
        "| concept | rule | baseline | candidate | 95% interval | threshold | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in report.concepts:
        for r in c.rules:
            mark = MARK.get(r.verdict, r.verdict)
            lines.append(
                f"| {c.name} | `{r.rule}` | {fmt(r.baseline)} | {fmt(r.observed)} | "
                f"[{fmt(r.low)}, {fmt(r.high)}] | {r.direction} {fmt(r.threshold)} | {mark} |"
            )
    lines += stopping_lines(report)
    lines += attack_lines(report)
    for w in report.warnings:
        lines += ["", f"> warning: {w}"]
    lines += ["", f"Reproduce: `{report.reproduce}`", ""]
    text = "\n".join(lines)
    return text if len(text.encode()) <= max_bytes else text[: max_bytes - 100] + "\n\n(truncated)\n"


def stopping_lines(report: Report) -> list[str]:
    """Per concept, with ``stopping: sequential``: the images used and where each rule was decided."""
    out = []
    for c in report.concepts:
        s = c.stopping or {}
        if s.get("method") != "sequential":
            continue
        imgs = s.get("images", {})
        at = ", ".join(f"`{k}` at {v}" for k, v in (s.get("decided_at_stage") or {}).items())
        out.append(
            f"- {c.name}: sequential (alpha {s.get('alpha')}), {s.get('stages')} stages of {s.get('stage_samples')} "
            f"sample(s) per prompt, at most {s.get('max_samples')}; {sum(imgs.values())} images "
            f"({', '.join(f'{n} {k}' for k, n in imgs.items())}); decided: {at or 'none'}"
        )
    return ["", "Stopping:", *out] if out else []


def attack_lines(report: Report) -> list[str]:
    """Per concept and attack probe: each side's success rate, and a learned attack's targets and
    embedding files (evidence a reviewer can load with diffusers' ``load_textual_inversion``)."""
    out = []
    for c in report.concepts:
        for name, a in (c.attacks or {}).items():
            succ = a.get("success") or {}
            rates = ", ".join(f"{side} {r['success']:.3f} of {r['images']}" for side, r in succ.items())
            line = f"- {c.name}, `{name}`: success {rates or 'no images'}"
            t = a.get("targets")
            if t:
                det = f", concept detected in {t['detected']:.2f} of them" if "detected" in t else ""
                line += f"; targets: {t['n']} images ({t['source']}{det}, sha256 {str(t['sha256'])[:12]})"
            files = [f"`{a[s]['embedding']}`" for s in ("baseline", "candidate") if (a.get(s) or {}).get("embedding")]
            if files:
                line += f"; learned embeddings: {', '.join(files)}"
            out.append(line)
    return ["", "Attack probes:", *out] if out else []


def certificate_lines(report: Report) -> list[str]:
    """The model line's latest certificate (``gate certify``), when the check found one."""
    cert = report.certificate
    if not cert:
        return []
    import datetime as dt

    when = dt.datetime.fromtimestamp(float(cert.get("created_at", 0)), dt.UTC).strftime("%Y-%m-%d")
    which = "this unlearned model" if cert.get("same_checkpoint") else "an EARLIER unlearned model of this line"
    kind = "" if cert.get("standard") else ", non-standard recipe"
    head = f": {cert['headline']}" if cert.get("headline") else ""
    return [
        "",
        f"Latest certificate ({which}; {when}, recipe `{cert.get('recipe')}`{kind}, MLflow run "
        f"`{cert.get('run_id')}`): **{str(cert.get('verdict')).upper()}**{head}",
    ]


def _pull_request_lines(report: Report) -> list[str]:
    pr = report.pull_request or {}
    if not pr:
        return []
    parts = []
    if pr.get("candidate"):
        parts.append(
            f"Candidate `{pr['candidate']}`" + (f" (model line `{pr['model_line']}`)" if pr.get("model_line") else "")
        )
    if pr.get("number"):
        parts.append(f"pull request #{pr['number']}")
    if pr.get("base_sha") or pr.get("head_sha"):
        parts.append(f"base `{str(pr.get('base_sha', ''))[:12]}`, head `{str(pr.get('head_sha', ''))[:12]}`")
    return ["", ", ".join(parts) + "."]


def rich_table(report: Report):
    """The console summary. Cells are ``Text`` objects, never markup strings: a concept name or a
    verdict can hold brackets, and an empty style must not break rendering."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"Resurgence gate: {report.verdict.upper()}")
    for col in ("concept", "rule", "baseline", "candidate", "95% interval", "threshold", "verdict"):
        t.add_column(col, justify="right" if col in ("baseline", "candidate") else "left")
    for c in report.concepts:
        for r in c.rules:
            cells = [c.name, r.rule, fmt(r.baseline), fmt(r.observed), f"[{fmt(r.low)}, {fmt(r.high)}]",
                     f"{r.direction} {fmt(r.threshold)}"]  # fmt: skip
            t.add_row(*(Text(x) for x in cells), Text(r.verdict, style=VERDICT_STYLE.get(r.verdict, "")))
    return t


def header_lines(check: Any) -> list[str]:
    from gate.provenance import library_versions

    ids = check.identities
    v = library_versions()
    pol = check.policy
    lines = [
        f"resurgence-gate {__version__}: policy {pol.name} (sha256 {pol.sha256[:12]}), seed {pol.seed}",
        f"checkpoint {ids['checkpoint']['path']} sha256 {ids['checkpoint']['sha256'][:12]}",
    ]
    if check.opts.update:
        lines.append(f"update {check.opts.update} (sha256 in report)")
    s = pol.sampler
    lines.append(f"sampler steps {s.steps} guidance {s.guidance} dtype {s.dtype} device {check.opts.device}")
    libs = ("torch", "diffusers", "transformers", "peft", "open_clip_torch")
    lines.append("libraries " + " ".join(f"{k} {v[k]}" for k in libs))
    return lines
