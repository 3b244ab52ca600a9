"""Validates ``gate prescreen`` against measured resurgence on the small world.

For every (method, concept, candidate) triple that the study measured (each fine-tune and each
of its saved checkpoints, rows in ``results/study/rows.jsonl``, models in the study's work
folder) and for the zoo's candidates, computes the pre-screen scores and compares them with the
measured R: Spearman rank correlation per score, a scatter plot, and the time per triple.

    python benchmarks/prescreen_validation.py [--study studies/small-world.yaml] [--out results/prescreen]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v):
        a = np.asarray(v, dtype=float)
        order = a.argsort()
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        for val in np.unique(a):  # average ranks of ties
            idx = a == val
            r[idx] = r[idx].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="studies/small-world.yaml")
    ap.add_argument("--out", default="results/prescreen")
    args = ap.parse_args()

    from gate.finetune import LORA_WEIGHTS
    from gate.prescreen import weight_prescreen
    from gate.study import Study, load_config, table
    from gate.world import concepts as C
    from gate.world import zoo

    cfg = load_config(args.study)
    study = Study(cfg, log=lambda m: None)
    recs = {r["key"]: r for r in table(study.rows)}
    original = str(zoo.materialize("world"))
    triples = []
    for key, r in recs.items():
        if r["stage"] != "finetuned" or r.get("R") is None:
            continue
        _, tag, concept, ft_name, step = key.split("|")
        base = cfg.work / "models" / f"{tag}-{concept}"
        folder = cfg.work / "finetunes" / f"{tag}-{concept}-{ft_name}"
        final = json.loads((folder / "finetune.json").read_text()) if (folder / "finetune.json").is_file() else None
        if final is None or not base.is_dir():
            continue
        where = folder if int(step) == final["config"]["steps"] else folder / f"checkpoint-{step}"
        update = where / LORA_WEIGHTS if final["mode"] == "lora" else where
        triples.append({"key": key, "checkpoint": str(base), "update": str(update), "concept": concept, "R": r["R"]})
    for name, e in zoo.entries().items():
        if e["kind"] == "candidate":
            triples.append(
                {"key": f"zoo|{name}", "checkpoint": str(zoo.materialize(e["base"])),
                 "update": str(zoo.update_path(name)), "concept": e["concept"], "R": e["measured"]["R"]}
            )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for t in triples:
        s = weight_prescreen(original, t["checkpoint"], t["update"], list(C.concept(t["concept"]).synonyms))
        s.pop("layers", None)
        rows.append({**t, **s})
        print(f"{t['key']:<45} R {t['R']:6.2f}  eps_undo {s['eps_undo']:6.2f}  kv_undo {s['kv_undo'] or 0:6.2f}  "
              f"weight_undo {s['weight_undo'] or 0:6.2f}  ({s['seconds']:.1f} s)")  # fmt: skip
    summary = {"n": len(rows), "seconds_per_triple": round((time.perf_counter() - t_all) / max(1, len(rows)), 2)}
    for score in ("eps_undo", "kv_undo", "weight_undo"):
        xs = [r[score] if r[score] is not None else 0.0 for r in rows]
        summary[f"spearman_{score}"] = round(spearman(xs, [r["R"] for r in rows]), 3) if len(rows) > 2 else None
    (out / "validation.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary))
    # before training: the data-overlap score of each fine-tuning set the similarity factor used
    from gate.prescreen import data_overlap

    data_rows = []
    for key, r in recs.items():
        if r["stage"] != "finetuned" or r.get("R") is None or r["factor"] not in ("similarity", ""):
            continue
        _, tag, concept, ft_name, step = key.split("|")
        if tag != "esd-x" or concept != "skull" or (ft_name != "main" and not ft_name.startswith("data-")):
            continue
        last = max(int(k.split("|")[-1]) for k in recs if k.startswith(f"finetuned|{tag}|{concept}|{ft_name}|"))
        if int(step) != last:
            continue
        require = ft_name.removeprefix("data-") if ft_name.startswith("data-") else None
        folder = study.data_dir(concept, require)
        d = data_overlap(str(cfg.work / "models" / f"{tag}-{concept}"), folder, list(C.concept(concept).synonyms))
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

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, score in zip(axes, ("eps_undo", "kv_undo", "weight_undo"), strict=True):
        xs = [r[score] if r[score] is not None else 0.0 for r in rows]
        ax.scatter(xs, [r["R"] for r in rows], s=18)
        ax.set_xlabel(score)
        ax.set_ylabel("measured R")
        ax.set_title(f"{score}: Spearman {summary[f'spearman_{score}']}")
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=100)
    print(f"wrote {out}/validation.json, validation.png")


if __name__ == "__main__":
    main()
