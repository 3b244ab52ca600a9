"""Validates ``gate prescreen`` against measured resurgence on the small world.

For every (method, concept, candidate) triple that the study measured (each fine-tune and each
of its saved checkpoints, rows in ``results/study/rows.jsonl``, models in the study's work
folder) and for the zoo's candidates, computes the pre-screen scores and compares them with the
measured R: Spearman rank correlation per score, on every triple and on the triples whose R is
well defined (the unlearning removed at least half of the concept and kept retained fidelity at
0.5 or more; elsewhere R divides by a small, noisy gap), the split-half reliability of the
measured R itself (the ceiling any predictor can reach), and for each score the threshold that
an early fail would need (no triple with R at or below the policy's 0.30 above it) and how many
resurgent triples it would catch. A scatter plot, and the time per triple.

    python benchmarks/prescreen_validation.py [--study studies/small-world.yaml] [--out results/prescreen]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (scipy.stats; ties get average ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


SCORES = ("eps_undo", "guidance_undo", "kv_undo", "weight_undo")
MAX_R = 0.30  # the policies' max_resurgence


def model_folder(work: Path, tag: str, concept: str) -> Path:
    """The unlearned model of a row's tag, named as the study names it."""
    from gate.world.study.rows import model_name

    return work / "models" / model_name(tag, concept)


def well_defined(r: dict) -> bool:
    """R = (A_ft - A_unl) / (A_orig - A_unl) means something when the erasure worked: it was not a
    weak erasure in the study's sense (it removed at least half of the concept, ``weak_erasure``) and
    left retained fidelity at 0.5 or more."""
    from gate.world.study.summary import weak_erasure

    return not weak_erasure(r["a_orig"], r["a_orig"] - r["gap"]) and r["retained_unlearned"] >= 0.5


def early_fail(rows: list[dict], score: str, max_r: float) -> dict:
    """The lowest threshold at which failing early would have failed no triple with R <= max_r,
    and how many of the resurgent triples (R > max_r) it would have caught."""
    ok = [r[score] or 0.0 for r in rows if r["R"] <= max_r]
    bad = [r[score] or 0.0 for r in rows if r["R"] > max_r]
    thr = max(ok) if ok else float("-inf")
    return {"threshold": round(thr, 3), "caught": sum(b > thr for b in bad), "resurgent": len(bad)}


def reliability(study, keys: list[str], splits: int = 20) -> dict | None:
    """Split-half reliability of the measured R: the images of each cell split at random into two
    halves (the same split for the original, unlearned and fine-tuned rates, which share seeds),
    R computed on each half, Spearman across triples; averaged over splits, then stepped up to the
    full sample with Spearman-Brown. A predictor cannot rank the triples better than R's own
    measurement repeats itself."""
    import random

    from gate.stats import resurgence
    from gate.world.study import unbits

    if len(keys) < 3:
        return None
    cells = []
    from gate.world.study.rows import parse_key

    for key in keys:
        tag, concept = (parse_key(key)[k] for k in ("tag", "concept"))
        rows = study.rows
        cells.append([unbits(rows[k]["hits"]) for k in (f"original|{concept}", f"unlearned|{tag}|{concept}", key)])
    n = min(len(c[2]) for c in cells)
    vals = []
    for s in range(splits):
        idx = list(range(n))
        random.Random(s).shuffle(idx)
        halves = []
        for part in (idx[: n // 2], idx[n // 2 :]):
            halves.append([resurgence(*(sum(v[i] for i in part) / len(part) for v in c)) for c in cells])
        vals.append(spearman(*halves))
    half = float(np.mean(vals))
    return {"split_half": round(half, 3), "spearman_brown": round(2 * half / (1 + half), 3), "n": len(keys)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="studies/small-world.yaml")
    ap.add_argument("--out", default="results/prescreen")
    args = ap.parse_args()

    from gate.finetune import LORA_WEIGHTS
    from gate.prescreen_command import weight_prescreen
    from gate.world import concepts as C
    from gate.world import zoo
    from gate.world.study import Study, load_config, table
    from gate.world.study.rows import parse_key

    cfg = load_config(args.study)
    study = Study(cfg, log=lambda m: None)
    study.check_world()  # the study's models and rows must come from the world the zoo is built on
    recs = {r["key"]: r for r in table(study.rows)}
    original = str(zoo.materialize("world"))
    triples = []
    for key, r in recs.items():
        if r["stage"] != "finetuned" or r.get("R") is None:
            continue
        k = parse_key(key)
        tag, concept, ft_name, step = k["tag"], k["concept"], k["finetune"], k["step"]
        base = model_folder(cfg.work, tag, concept)
        # the fine-tune's folder is in its row since fine-tuning seeds were studied; before, by name
        folder = cfg.work / "finetunes" / study.rows[key].get("ft_folder", f"{tag}-{concept}-{ft_name}")
        final = json.loads((folder / "finetune.json").read_text()) if (folder / "finetune.json").is_file() else None
        if final is None or not base.is_dir():
            continue
        where = folder if int(step) == final["config"]["steps"] else folder / f"checkpoint-{step}"
        update = where / LORA_WEIGHTS if final["mode"] == "lora" else where
        unl = recs[f"unlearned|{tag}|{concept}"]
        triples.append({"key": key, "checkpoint": str(base), "update": str(update), "concept": concept, "R": r["R"],
                        "a_orig": recs[f"original|{concept}"]["detection"],
                        "gap": recs[f"original|{concept}"]["detection"] - unl["detection"],
                        "retained_unlearned": unl["retained"]})  # fmt: skip
    for name, e in zoo.entries().items():
        if e["kind"] == "candidate":
            triples.append(
                {"key": f"zoo|{name}", "checkpoint": str(zoo.materialize(e["base"])),
                 "update": str(zoo.update_path(name)), "concept": e["concept"], "R": e["measured"]["R"],
                 "a_orig": e["measured"]["original"]["detection"],
                 "gap": e["measured"]["original"]["detection"] - e["measured"]["unlearned"]["detection"],
                 "retained_unlearned": e["measured"]["unlearned"]["retained_fidelity"]}
            )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for t in triples:
        s = weight_prescreen(original, t["checkpoint"], t["update"], list(C.concept(t["concept"]).synonyms))
        s.pop("layers", None)
        rows.append({**t, **s})
        print(f"{t['key']:<45} R {t['R']:6.2f}  eps_undo {s['eps_undo']:6.2f}  "
              f"guidance_undo {s['guidance_undo']:6.2f}  kv_undo {s['kv_undo'] or 0:6.2f}  "
              f"weight_undo {s['weight_undo'] or 0:6.2f}  ({s['seconds']:.1f} s)",
              flush=True)  # fmt: skip
    summary: dict = {"n": len(rows), "seconds_per_triple": round((time.perf_counter() - t_all) / max(1, len(rows)), 2)}
    defined = [r for r in rows if well_defined(r)]
    summary["n_well_defined"] = len(defined)
    for score in SCORES:
        for name, sub in (("", rows), ("_well_defined", defined)):
            xs = [r[score] if r[score] is not None else 0.0 for r in sub]
            summary[f"spearman_{score}{name}"] = round(spearman(xs, [r["R"] for r in sub]), 3) if len(sub) > 2 else None
        summary[f"early_fail_{score}"] = early_fail(rows, score, MAX_R)
    summary["reliability_of_R"] = reliability(study, [r["key"] for r in rows if r["key"].startswith("finetuned|")])
    summary["reliability_of_R_well_defined"] = reliability(
        study, [r["key"] for r in defined if r["key"].startswith("finetuned|")]
    )
    (out / "validation.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary))
    # before training: the data-overlap score of each fine-tuning set the similarity factor used
    from gate.prescreen_command import data_overlap

    data_rows = []
    for key, r in recs.items():
        if r["stage"] != "finetuned" or r.get("R") is None or r["factor"] not in ("similarity", ""):
            continue
        k = parse_key(key)
        tag, concept, ft_name, step = k["tag"], k["concept"], k["finetune"], k["step"]
        if tag != "esd-x" or concept != "skull" or (ft_name != "main" and not ft_name.startswith("data-")):
            continue
        if k["seed"] is not None:  # the fine-tunes of the study's own seed (one R per data set)
            continue
        last = max(parse_key(x)["step"] for x in recs if x.startswith(f"finetuned|{tag}|{concept}|{ft_name}|"))
        if int(step) != last:
            continue
        require = ft_name.removeprefix("data-") if ft_name.startswith("data-") else None
        folder = study.data_dir(concept, require)
        d = data_overlap(str(model_folder(cfg.work, tag, concept)), folder, list(C.concept(concept).synonyms))
        data_rows.append({"data": folder.name, "R": r["R"], **d})
        print(f"data {folder.name:<40} R {r['R']:6.2f}  data_overlap {d['data_overlap']:.3f}")
    if len(data_rows) > 2:
        summary["spearman_data_overlap"] = round(
            spearman([d["data_overlap"] for d in data_rows], [d["R"] for d in data_rows]), 3
        )
        summary["n_data"] = len(data_rows)
    (out / "validation.json").write_text(
        json.dumps({"summary": summary, "rows": rows, "data_rows": data_rows}, indent=2) + "\n"
    )
    print(json.dumps(summary))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    well = [well_defined(r) for r in rows]
    for ax, score in zip(axes, SCORES, strict=True):
        xs = [r[score] if r[score] is not None else 0.0 for r in rows]
        ax.scatter([x for x, w in zip(xs, well, strict=True) if w],
                   [r["R"] for r, w in zip(rows, well, strict=True) if w], s=18, label="R well defined")  # fmt: skip
        ax.scatter([x for x, w in zip(xs, well, strict=True) if not w],
                   [r["R"] for r, w in zip(rows, well, strict=True) if not w], s=18, marker="x", c="grey",
                   label="weak or broken erasure")  # fmt: skip
        ax.axhline(MAX_R, lw=0.8, ls="--", c="k")
        ax.set_xlabel(score)
        ax.set_ylabel("measured R")
        ax.set_title(f"{score}: Spearman {summary[f'spearman_{score}']} ({summary[f'spearman_{score}_well_defined']})",
                     fontsize=9)  # fmt: skip
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=100)
    print(f"wrote {out}/validation.json, validation.png")


if __name__ == "__main__":
    from gate.errors import BadInput

    try:
        main()
    except BadInput as e:
        raise SystemExit(f"error: {e}") from None
