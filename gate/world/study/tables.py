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
from gate.world.study.rows import mean, parse_key, rate, seed_of, unbits
from gate.world.study.summary import (
    WEAK,
    final_steps,
    headline_concepts,
    seed_or,
    seed_summary,
    study_seeds,
    weak_erasure,
)


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
            "step": r.get("step", 0), "seed": seed_of(key, r), "tag": parse_key(key)["tag"], "n": len(hits),
            "detection": k / len(hits), "detection_low": ci.low, "detection_high": ci.high,
        }  # fmt: skip
        for name in ("retained", "incidental"):
            b = unbits(r[f"{name}_hits"])
            if not b:  # no image where it applies (a texture's incidental detection among characters only)
                rec.update({name: None, f"{name}_low": None, f"{name}_high": None})
                continue
            ci2 = wilson(sum(b), len(b))
            rec.update({name: sum(b) / len(b), f"{name}_low": ci2.low, f"{name}_high": ci2.high})
        unl = None
        if r["stage"] == "finetuned":
            tag = key.split("|")[1]
            unl = rows.get(f"unlearned|{tag}|{concept}")
        elif r["stage"] == "control":
            unl = orig
        if orig and r["stage"] in ("unlearned", "finetuned"):
            erased = r if r["stage"] == "unlearned" else unl
            rec["weak_erasure"] = weak_erasure(rate(orig["hits"]), rate(erased["hits"])) if erased else None
        if orig and unl and r["stage"] in ("finetuned", "control"):
            a_o, a_u, a_f = (unbits(x["hits"]) for x in (orig, unl, r))
            rec["R"] = resurgence(mean(a_o), mean(a_u), mean(a_f))

            # paired bootstrap over image indices (the same seeds and prompts in all three)
            def stat(idx, a_o=a_o, a_u=a_u, a_f=a_f) -> float:
                return resurgence(*(mean([v[i] for i in idx]) for v in (a_o, a_u, a_f)))

            lo, hi = bootstrap(stat, len(a_f), reps=1000, seed=0)
            rec["R_low"], rec["R_high"] = lo, hi
            rec["incidental_unlearned"] = rate(unl["incidental_hits"]) if unl["incidental_hits"] else None
        out.append(rec)
    order = {"original": 0, "unlearned": 1, "control": 2, "finetuned": 3}
    out.sort(key=lambda x: (x["concept"], x["factor"], x["method"], order[x["stage"]], str(x["finetune"]), x["step"],
                            -1 if x["seed"] is None else x["seed"]))  # fmt: skip
    return out


CSV_FIELDS = ["stage", "method", "concept", "finetune", "factor", "level", "step", "seed", "n", "detection",
              "detection_low", "detection_high", "retained", "retained_low", "retained_high", "incidental",
              "incidental_low", "incidental_high", "incidental_unlearned", "R", "R_low", "R_high"]  # fmt: skip


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
    """``results.md``. One fine-tuning seed: a row per cell with R and its interval. Several: per
    cell the A_ft and R of every seed, the median seed's R with its bootstrap interval (within one
    fine-tune) and R's spread across the seeds."""
    seeds, first = study_seeds(recs, cfg.finetune_seeds, cfg.seed)
    multi = len(seeds) > 1
    orig = {r["concept"]: r for r in recs if r["stage"] == "original"}
    unl = {(r["tag"], r["concept"]): r for r in recs if r["stage"] == "unlearned"}
    ctrl: dict[str, dict[str, Any]] = {}
    for r in recs:
        if r["stage"] == "control" and (r["concept"] not in ctrl or r["step"] > ctrl[r["concept"]]["step"]):
            ctrl[r["concept"]] = r
    ft = cfg.finetune
    ns = sorted({r["n"] for r in recs if r["stage"] == "original"}) or [cfg.eval.n]
    lines = [
        "# The resurgence study on the small world",
        "",
        f"Generated by `gate study {cfg.source}` from `rows.jsonl` (every figure below is a measurement in it).",
        f"Fine-tuning: {ft.get('mode', 'lora')}, {ft.get('steps')} steps, lr {ft.get('lr')}, "
        f"LoRA rank {ft.get('rank', 4)} on {', '.join(ft.get('lora_targets', ['to_q', 'to_k', 'to_v', 'to_out.0']))}, "
        f"on {cfg.data.get('n')} world images that never show the erased concept (seed {cfg.data.get('seed')}). "
        f"Detection: {' to '.join(map(str, (ns[0], ns[-1])[: 1 + (len(ns) > 1)]))} images for held-out prompts of the "
        f"concept; retained fidelity and incidental detection: {cfg.eval.n_retained} images per retained concept. "
        "Intervals are 95% (Wilson for rates, paired bootstrap over images for R).",
        *_seeds_line(cfg, seeds, first, multi),
        *_world_line(cfg),
        "",
        "## Detection rate and normalised resurgence R after benign fine-tuning",
        "",
    ]
    main = {k: g for k, g in final_steps(recs).items() if not k[3]}
    cell_lines = []
    for (concept, tag, *_), group in sorted(main.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        u, o = unl.get((tag, concept)), orig.get(concept)
        if not u or not o:
            continue
        a_unl = _f(u["detection"]) + (f" ({WEAK})" if u.get("weak_erasure") else "")
        if not multi:
            r = group[0]
            cell_lines.append(
                f"| {concept} | {tag} | {_f(o['detection'])} | {a_unl} | {_f(r['detection'])} "
                f"[{_f(r['detection_low'])}, {_f(r['detection_high'])}] | **{_f(r.get('R'))}** [{_f(r.get('R_low'))}, "
                f"{_f(r.get('R_high'))}] | {_f(u['retained'])} -> {_f(r['retained'])} | "
                f"{_f(u['incidental'])} -> {_f(r['incidental'])} |"
            )
            continue
        sm = seed_summary(group, cfg.seed)
        r = sm["median"]
        cell_lines.append(
            f"| {concept} | {tag} | {_f(o['detection'])} | {a_unl} | {_by_seed(sm, 'detection', cfg.seed)} | "
            f"{_by_seed(sm, 'R', cfg.seed)} | {_median(sm, cfg.seed)} | {_spread(sm)} | "
            f"{_f(u['retained'])} -> {_f(r['retained'])} | {_f(u['incidental'])} -> {_f(r['incidental'])} |"
        )
    if multi:
        lines += ["| concept | method | A_orig | A_unl | A_ft by seed | R by seed | R, median seed [95% within one "
                  "fine-tune] | R across seeds: min, max (sd) | retained unl -> ft | incidental unl -> ft |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    else:
        lines += ["| concept | method | A_orig | A_unl | A_ft | R [95%] | retained unl -> ft | incidental unl -> ft |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    lines += cell_lines
    lines += _headline_lines(recs)
    if ctrl:
        pairs = sorted(ctrl.items())
        shown = [f"{c} {_f(orig[c]['detection'])} -> {_f(r['detection'])}" for c, r in pairs if c in orig]
        who = f" with seed {seed_or(pairs[0][1], cfg.seed)} only," if multi else ""
        lines += ["", f"Control (the same fine-tune{who} on the original, never-erased model): concept detection "
                  + ", ".join(shown) + "."]  # fmt: skip
    lines += ["", "## Along the fine-tuning steps" + (f" (seed {first})" if multi else ""), "",
              "| concept | method | step | detection | R | retained |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in recs:
        if not r["factor"] and (
            r["stage"] == "unlearned" or (r["stage"] == "finetuned" and seed_or(r, cfg.seed) == first)
        ):
            lines.append(
                f"| {r['concept']} | {r['method']} | {r['step']} | {_f(r['detection'])} | {_f(r.get('R'))} | "
                f"{_f(r['retained'])} |"
            )
    lines += _factor_lines(cfg, recs, multi)
    lines += ["", "Figures: `curves.png` (detection against fine-tuning steps, one curve per method and concept), "
              "`heatmap.png` (R by method and concept), `factors.png`.", ""]  # fmt: skip
    return "\n".join(lines)


def _seeds_line(cfg: StudyConfig, seeds: list[int], first: int, multi: bool) -> list[str]:
    if not multi:
        return []
    saved = ", ".join(map(str, sorted(set(cfg.finetune.get("save_steps", ())))))
    steps = f"; the intermediate checkpoints (steps {saved}) are measured for seed {first} only, the other seeds at "
    return [
        f"Fine-tuning seeds {', '.join(map(str, seeds))}: every cell and factor level is fine-tuned once per seed"
        + (steps + "the final step only" if saved else "")
        + f"; the control is fine-tuned with seed {first} only. R within one fine-tune is the median seed's, with "
        "its bootstrap interval over images; its spread across fine-tunes is the min and max over seeds (and their "
        "sd from three seeds on). Retained and incidental rates after fine-tuning are the median seed's."
    ]


def _headline_lines(recs: list[dict[str, Any]]) -> list[str]:
    headline, weak = headline_concepts(recs)
    if not weak:
        return []
    counts = ", ".join(f"{c} {w} of {n} methods" for c, (w, n) in weak.items())
    others = [c for c in weak if c not in headline]
    return [
        "",
        f"Headline rows: {', '.join(headline) or 'none'} (the concepts whose erasures mostly removed them). An A_unl "
        f"marked *{WEAK}* is a weak erasure, A_orig - A_unl < A_orig / 2: R divides by a small erasure effect there, "
        "so the row is shown but is not a headline figure. Weak erasures by concept: "
        + counts
        + "."
        + (f" Not headline: {', '.join(others)} (most methods removed less than half of it)." if others else ""),
    ]


def _factor_lines(cfg: StudyConfig, recs: list[dict[str, Any]], multi: bool) -> list[str]:
    fac = [r for r in recs if r["factor"] and r["stage"] == "finetuned"]
    if not fac:
        return []
    weak = f" ({WEAK})"
    lines = ["", "## Factors (one varied at a time around the base cell)", ""]
    if not multi:
        lines += ["| factor | level | step | detection [95%] | R [95%] | retained |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in sorted(fac, key=lambda x: (x["factor"], str(x["level"]), x["step"])):
            lines.append(
                f"| {r['factor']} | {r['level']}{weak if r.get('weak_erasure') else ''} | {r['step']} | "
                f"{_f(r['detection'])} [{_f(r['detection_low'])}, {_f(r['detection_high'])}] | {_f(r.get('R'))} "
                f"[{_f(r.get('R_low'))}, {_f(r.get('R_high'))}] | {_f(r['retained'])} |"
            )
        return lines
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in fac:
        groups.setdefault((r["factor"], str(r["level"]), r["step"]), []).append(r)
    lines += ["| factor | level | step | detection by seed | R by seed | R, median seed [95%] | R across seeds: min, "
              "max (sd) | retained |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for (factor, level, step), group in sorted(groups.items()):
        sm = seed_summary(group, cfg.seed)
        lines.append(
            f"| {factor} | {level}{weak if group[0].get('weak_erasure') else ''} | {step} | "
            f"{_by_seed(sm, 'detection', cfg.seed)} | {_by_seed(sm, 'R', cfg.seed)} | {_median(sm, cfg.seed)} | "
            f"{_spread(sm)} | {_f(sm['median']['retained'])} |"
        )
    return lines


def _by_seed(sm: dict[str, Any], field: str, default_seed: int) -> str:
    return ", ".join(f"s{seed_or(r, default_seed)} {_f(r.get(field))}" for r in sm["recs"])


def _median(sm: dict[str, Any], default_seed: int) -> str:
    r = sm["median"]
    return f"**{_f(r.get('R'))}** [{_f(r.get('R_low'))}, {_f(r.get('R_high'))}] (s{seed_or(r, default_seed)})"


def _spread(sm: dict[str, Any]) -> str:
    if len(sm["recs"]) < 2 or sm["min"] is None:
        return "one seed"
    return f"{_f(sm['min'])}, {_f(sm['max'])}" + (f" (sd {_f(sm['sd'])})" if sm["sd"] is not None else "")
