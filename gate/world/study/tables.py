"""The study's outputs from its rows: one flat record per measurement with intervals and R
(``table``), ``results.csv``, ``results.md`` and the figures (``write_outputs``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from gate.world.study.config import StudyConfig
from gate.world.study.plots import plots
from gate.world.study.rows import mean, rate, unbits


def table(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per measurement, with intervals and R against its cell's A_orig, A_unl."""
    from gate.stats import bootstrap, resurgence, wilson

    out = []
    for key, r in rows.items():
        concept = r["concept"]
        orig = rows.get(f"original|{concept}")
        hits = unbits(r["hits"])
        k = sum(hits)
        ci = wilson(k, len(hits))
        rec: dict[str, Any] = {
            "key": key, "stage": r["stage"], "method": r.get("method", ""), "concept": concept,
            "finetune": r.get("finetune", ""), "factor": r.get("factor", ""),
            "level": json.dumps(r["level"]) if isinstance(r.get("level"), dict) else r.get("level", ""),
            "step": r.get("step", 0), "n": len(hits),
            "detection": k / len(hits), "detection_low": ci.low, "detection_high": ci.high,
        }  # fmt: skip
        for name in ("retained", "incidental"):
            b = unbits(r[f"{name}_hits"])
            ci2 = wilson(sum(b), len(b))
            rec.update({name: sum(b) / max(1, len(b)), f"{name}_low": ci2.low, f"{name}_high": ci2.high})
        unl = None
        if r["stage"] == "finetuned":
            tag = key.split("|")[1]
            unl = rows.get(f"unlearned|{tag}|{concept}")
        elif r["stage"] == "control":
            unl = orig
        if orig and unl and r["stage"] in ("finetuned", "control"):
            a_o, a_u, a_f = (unbits(x["hits"]) for x in (orig, unl, r))
            rec["R"] = resurgence(mean(a_o), mean(a_u), mean(a_f))

            # paired bootstrap over image indices (the same seeds and prompts in all three)
            def stat(idx, a_o=a_o, a_u=a_u, a_f=a_f) -> float:
                return resurgence(*(mean([v[i] for i in idx]) for v in (a_o, a_u, a_f)))

            lo, hi = bootstrap(stat, len(a_f), reps=1000, seed=0)
            rec["R_low"], rec["R_high"] = lo, hi
            rec["incidental_unlearned"] = rate(unl["incidental_hits"])
        out.append(rec)
    order = {"original": 0, "unlearned": 1, "control": 2, "finetuned": 3}
    out.sort(key=lambda x: (x["concept"], x["factor"], x["method"], order[x["stage"]], str(x["finetune"]), x["step"]))
    return out


CSV_FIELDS = ["stage", "method", "concept", "finetune", "factor", "level", "step", "n", "detection", "detection_low",
              "detection_high", "retained", "retained_low", "retained_high", "incidental", "incidental_low",
              "incidental_high", "incidental_unlearned", "R", "R_low", "R_high"]  # fmt: skip


def write_outputs(cfg: StudyConfig, rows: dict[str, dict[str, Any]]) -> None:
    """``results.csv``, ``results.md`` and the figures in ``cfg.out`` (nothing while there are no rows)."""
    recs = table(rows)
    if not recs:
        return
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_csv(cfg.out / "results.csv", recs)
    (cfg.out / "results.md").write_text(markdown(cfg, recs))
    plots(cfg, recs)


def write_csv(path: Path, recs: list[dict[str, Any]]) -> None:
    """The table as CSV (floats to 4 decimals), replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in recs:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def _f(x: Any) -> str:
    return "" if x is None else f"{x:.2f}"


def _world_line(cfg: StudyConfig) -> list[str]:
    stamp = cfg.out / "world.json"
    if not stamp.is_file():
        return []
    w = json.loads(stamp.read_text())
    return [
        f"Measured on the world build with model sha256 {w.get('sd_sha256', '?')[:12]} and detector sha256 "
        f"{w.get('clip_sha256', '?')[:12]} (`world.json` beside this file; a run against another build is "
        "refused)."
    ]


def markdown(cfg: StudyConfig, recs: list[dict[str, Any]]) -> str:
    main = [r for r in recs if not r["factor"]]
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in main:
        if r["stage"] == "finetuned":
            k = (r["method"], r["concept"])
            if k not in last or r["step"] > last[k]["step"]:
                last[k] = r
    unl = {(r["method"], r["concept"]): r for r in main if r["stage"] == "unlearned"}
    orig = {r["concept"]: r for r in recs if r["stage"] == "original"}
    ctrl: dict[str, dict[str, Any]] = {}
    for r in recs:
        if r["stage"] == "control" and (r["concept"] not in ctrl or r["step"] > ctrl[r["concept"]]["step"]):
            ctrl[r["concept"]] = r
    ft = cfg.finetune
    lines = [
        "# The resurgence study on the small world",
        "",
        f"Generated by `gate study {cfg.source}` from `rows.jsonl` (every figure below is a measurement in it).",
        f"Fine-tuning: {ft.get('mode', 'lora')}, {ft.get('steps')} steps, lr {ft.get('lr')}, "
        f"LoRA rank {ft.get('rank', 4)} on {', '.join(ft.get('lora_targets', ['to_q', 'to_k', 'to_v', 'to_out.0']))}, "
        f"on {cfg.data.get('n')} world images that never show the erased concept (seed {cfg.data.get('seed')}). "
        f"Detection: {cfg.eval.n} images for held-out prompts of the concept; retained fidelity and incidental "
        f"detection: {cfg.eval.n_retained} images per retained concept. Intervals are 95% (Wilson for rates, "
        "paired bootstrap over images for R).",
        *_world_line(cfg),
        "",
        "## Detection rate and normalised resurgence R after benign fine-tuning",
        "",
        "| concept | method | A_orig | A_unl | A_ft | R [95%] | retained unl -> ft | incidental unl -> ft |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (method, concept), r in sorted(last.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        u = unl.get((method, concept))
        o = orig.get(concept)
        if not u or not o:
            continue
        lines.append(
            f"| {concept} | {method} | {_f(o['detection'])} | {_f(u['detection'])} | {_f(r['detection'])} "
            f"[{_f(r['detection_low'])}, {_f(r['detection_high'])}] | **{_f(r.get('R'))}** [{_f(r.get('R_low'))}, "
            f"{_f(r.get('R_high'))}] | {_f(u['retained'])} -> {_f(r['retained'])} | "
            f"{_f(u['incidental'])} -> {_f(r['incidental'])} |"
        )
    if ctrl:
        pairs = sorted(ctrl.items())
        shown = [f"{c} {_f(orig[c]['detection'])} -> {_f(r['detection'])}" for c, r in pairs if c in orig]
        lines += ["", "Control (the same fine-tune on the original, never-erased model): concept detection "
                  + ", ".join(shown) + "."]  # fmt: skip
    lines += ["", "## Along the fine-tuning steps", "", "| concept | method | step | detection | R | retained |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in main:
        if r["stage"] in ("unlearned", "finetuned"):
            lines.append(
                f"| {r['concept']} | {r['method']} | {r['step']} | {_f(r['detection'])} | {_f(r.get('R'))} | "
                f"{_f(r['retained'])} |"
            )
    fac = [r for r in recs if r["factor"] and r["stage"] == "finetuned"]
    if fac:
        lines += ["", "## Factors (one varied at a time around the base cell)", "",
                  "| factor | level | step | detection [95%] | R [95%] | retained |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in sorted(fac, key=lambda x: (x["factor"], str(x["level"]), x["step"])):
            lines.append(
                f"| {r['factor']} | {r['level']} | {r['step']} | {_f(r['detection'])} [{_f(r['detection_low'])}, "
                f"{_f(r['detection_high'])}] | {_f(r.get('R'))} [{_f(r.get('R_low'))}, {_f(r.get('R_high'))}] | "
                f"{_f(r['retained'])} |"
            )
    lines += ["", "Figures: `curves.png` (detection against fine-tuning steps, one curve per method and concept), "
              "`heatmap.png` (R by method and concept), `factors.png`.", ""]  # fmt: skip
    return "\n".join(lines)
