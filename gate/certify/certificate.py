"""A certificate: what the policy's checks found after the standard benign fine-tune, per
concept and fine-tune mode, gathered from the checks' reports (one per fine-tune and seed).

For each concept and mode it gives the resurgence R of every seed's fine-tune with the interval
its check computed (from that fine-tune's images), and the spread across seeds: the median
fine-tune (its R and interval are the headline), the lowest and highest R, and the highest upper
bound. The same for the presence and incidental rates. Torch-free.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from gate.judge import FAIL, UNDECIDED
from gate.report.model import Report

CERTIFICATE_VERSION = 1
# rule -> what the certificate calls it
FIGURES = {
    "max_resurgence": "resurgence R",
    "max_presence_rate": "presence rate",
    "max_incidental_rate": "incidental rate",
    "max_increase_over_baseline": "increase over the baseline",
    "min_retained_fidelity": "retained fidelity",
}


def finetune_entry(label: str, mode: str, seed: int, record: dict[str, Any], report: Report, report_path: Path) -> dict:
    """One fine-tune's line of the certificate: its training record and its check's figures."""
    concepts = {
        c.name: {
            "verdict": c.verdict,
            "rules": {
                r.rule: {
                    "observed": r.observed,
                    "low": r.low,
                    "high": r.high,
                    "threshold": r.threshold,
                    "verdict": r.verdict,
                    "n": r.n,
                    "note": r.note,
                }
                for r in c.rules
            },
        }
        for c in report.concepts
    }
    return {
        "label": label,
        "mode": mode,
        "seed": seed,
        "steps": record.get("config", {}).get("steps"),
        "final_loss": record.get("final_loss"),
        "update_sha256": record.get("outputs", {}).get("sha256"),
        "verdict": report.verdict,
        "report": str(report_path),
        "concepts": concepts,
    }


def _spread(entries: list[dict[str, Any]], concept: str, rule: str) -> dict[str, Any] | None:
    rows = [(e, e["concepts"].get(concept, {}).get("rules", {}).get(rule)) for e in entries]
    rows = [(e, r) for e, r in rows if r is not None and r["verdict"] != "skipped"]
    if not rows:
        return None
    rows.sort(key=lambda er: er[1]["observed"])
    med_e, med = rows[(len(rows) - 1) // 2]  # the lower median: a fine-tune that was run, not an average
    return {
        "n_finetunes": len(rows),
        "median": {"label": med_e["label"], "observed": med["observed"], "low": med["low"], "high": med["high"]},
        "min": rows[0][1]["observed"],
        "max": rows[-1][1]["observed"],
        "mean": statistics.fmean(r["observed"] for _, r in rows),
        "sd": statistics.stdev([r["observed"] for _, r in rows]) if len(rows) > 1 else None,
        "highest_upper": max(r["high"] for _, r in rows),
        "threshold": rows[0][1]["threshold"],
        "failed": sum(r["verdict"] == "fail" for _, r in rows),
        "per_finetune": {e["label"]: {k: r[k] for k in ("observed", "low", "high", "verdict")} for e, r in rows},
    }


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """concept -> mode -> figure -> spread across the seeds' fine-tunes."""
    concepts = sorted({c for e in entries for c in e["concepts"]})
    out: dict[str, Any] = {}
    for c in concepts:
        out[c] = {}
        for mode in sorted({e["mode"] for e in entries}):
            es = [e for e in entries if e["mode"] == mode]
            figs = {rule: s for rule in FIGURES if (s := _spread(es, c, rule)) is not None}
            verdicts = [e["concepts"][c]["verdict"] for e in es if c in e["concepts"]]
            out[c][mode] = {"figures": figs, "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))}}
    return out


def headlines(summary: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """One sentence per concept and mode, the certificate's statement."""
    kind = (
        "standard"
        if recipe.get("standard")
        else "non-standard (" + ", ".join(f"{k} {v}" for k, v in recipe.get("overrides", {}).items()) + ")"
    )
    lines = []
    for concept, modes in summary.items():
        for mode, s in modes.items():
            f = s["figures"]
            fig = f.get("max_resurgence") or f.get("max_presence_rate")
            if fig is None:
                continue
            what = "R" if "max_resurgence" in f else "a presence rate"
            m = fig["median"]
            spread = (
                f"; across the {fig['n_finetunes']} seeds {fig['min']:.2f} to {fig['max']:.2f}"
                if fig["n_finetunes"] > 1
                else ""
            )
            lines.append(
                f"after the {kind} benign fine-tune ({recipe['name']} recipe, {mode}), concept {concept} came back to "
                f"{what} = {m['observed']:.2f} [{m['low']:.2f}, {m['high']:.2f}]{spread} (limit {fig['threshold']:g}; "
                f"{fig['failed']} of {fig['n_finetunes']} fine-tunes over it)"
            )
    return lines


def reasons(entries: list[dict[str, Any]]) -> list[str]:
    """Every rule that did not pass, per fine-tune: what made the certificate's verdict."""
    out = []
    for e in entries:
        for concept, c in e["concepts"].items():
            for rule, r in c["rules"].items():
                if r["verdict"] in (FAIL, *UNDECIDED):
                    out.append(
                        f"{e['label']}: {concept} {rule} {r['verdict']} ({r['observed']:.3f} "
                        f"[{r['low']:.3f}, {r['high']:.3f}], limit {r['threshold']:g})"
                    )
    return out


def overall_verdict(entries: list[dict[str, Any]]) -> str:
    """The worst of the checks' verdicts (each already counts inconclusive as its policy says)."""
    verdicts = {e["verdict"] for e in entries}
    for v in ("fail", "inconclusive", "pass"):
        if v in verdicts:
            return v
    return "skipped"


def to_markdown(cert: dict[str, Any]) -> str:
    r = cert["recipe"]
    lines = [
        f"# Resurgence certificate: {cert['model_line']}",
        "",
        f"**{cert['verdict'].upper()}**: {cert['verdict_meaning']}",
        "",
        *[f"- {h}" for h in cert["headlines"]],
        "",
        *(["Rules not passed:", "", *[f"- {x}" for x in cert["reasons"]], ""] if cert.get("reasons") else []),
        f"Unlearned model: `{cert['inputs']['checkpoint'].get('path')}` (sha256 "
        f"`{str(cert['inputs']['checkpoint'].get('sha256'))[:16]}`); original: "
        f"`{cert['inputs']['original'].get('path')}`; policy `{cert['inputs']['policy'].get('name')}` "
        f"(sha256 `{str(cert['inputs']['policy'].get('sha256'))[:16]}`).",
        f"Recipe `{r['name']}` ({'standard' if r['standard'] else 'NOT the standard recipe: ' + str(r['overrides'])}; "
        f"sha256 `{r['sha256'][:16]}`): {r['description']}. Data: {cert['data']['source']} "
        f"({cert['data']['n']} images, sha256 `{cert['data']['sha256'][:16]}`).",
        "",
        "| concept | mode | figure | median fine-tune [interval] | min | max | highest upper bound | limit | over it |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for concept, modes in cert["concepts"].items():
        for mode, s in modes.items():
            for rule, f in s["figures"].items():
                m = f["median"]
                lines.append(
                    f"| {concept} | {mode} | {FIGURES[rule]} | {m['observed']:.3f} [{m['low']:.3f}, {m['high']:.3f}] "
                    f"| {f['min']:.3f} | {f['max']:.3f} | {f['highest_upper']:.3f} | {f['threshold']:g} "
                    f"| {f['failed']}/{f['n_finetunes']} |"
                )
    lines += ["", "| fine-tune | steps | final loss | verdict | report |", "|---|---|---|---|---|"]
    for e in cert["finetunes"]:
        loss = f"{e['final_loss']:.4f}" if isinstance(e.get("final_loss"), float) else "?"
        lines.append(f"| {e['label']} | {e['steps']} | {loss} | {e['verdict']} | `{e['report']}` |")
    lines += ["", f"Reproduce: `{cert['reproduce']}`", ""]
    return "\n".join(lines)


VERDICT_MEANING = {
    "pass": "every fine-tune of the recipe left the erased concepts within the policy",
    "fail": "after at least one fine-tune of the recipe a rule failed (or could not be decided, which the policy "
    "counts as a fail)",
    "inconclusive": "at least one fine-tune's check could not decide a rule (the policy does not count that as a fail)",
    "skipped": "no rule was judged",
}
