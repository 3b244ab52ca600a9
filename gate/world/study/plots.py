"""The study's figures: ``curves.png`` (detection along the fine-tuning steps), ``heatmap.png``
(R by method and concept) and ``factors.png`` (R by level of each factor).

With several fine-tuning seeds: the curves follow the first seed (the one measured at every
checkpoint) and mark the other seeds' final detection as dots; the heat map and the factor bars
show the median seed's R (bars with its bootstrap interval, dots for every seed)."""

from __future__ import annotations

import json
from typing import Any

from gate.world.study.config import StudyConfig
from gate.world.study.summary import final_steps, seed_or, seed_summary, study_seeds


def plots(cfg: StudyConfig, recs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    _, first = study_seeds(recs, cfg.finetune_seeds, cfg.seed)
    all_main = [r for r in recs if not r["factor"]]
    main = [r for r in all_main if r["stage"] != "finetuned" or seed_or(r, cfg.seed) == first]
    rest = [r for r in all_main if r["stage"] == "finetuned" and seed_or(r, cfg.seed) != first]  # the other seeds
    concepts = sorted({r["concept"] for r in main if r["stage"] == "finetuned"})
    if concepts:
        fig, axes = plt.subplots(1, len(concepts), figsize=(5 * len(concepts), 4), squeeze=False)
        for ax, concept in zip(axes[0], concepts, strict=True):
            for method in sorted({r["method"] for r in main if r["concept"] == concept and r["stage"] == "finetuned"}):
                pts = sorted(
                    (r["step"], r["detection"], r["detection_low"], r["detection_high"])
                    for r in main
                    if r["concept"] == concept and r["method"] == method and r["stage"] in ("unlearned", "finetuned")
                )
                xs, ys, lo, hi = (list(t) for t in zip(*pts, strict=True))
                (line,) = ax.plot(xs, ys, "o-", label=method)
                ax.fill_between(xs, lo, hi, alpha=0.1)
                others = [(r["step"], r["detection"]) for r in rest if (r["concept"], r["method"]) == (concept, method)]
                if others:
                    ax.plot(*zip(*others, strict=True), ".", color=line.get_color(), alpha=0.6)
            ctl = sorted(
                (r["step"], r["detection"]) for r in recs if r["stage"] == "control" and r["concept"] == concept
            )
            if ctl:
                ax.plot(*zip(*ctl, strict=True), "k--", label="control (original)")
            ax.set_title(f"{concept}: detection after benign fine-tuning")
            ax.set_xlabel("fine-tuning step")
            ax.set_ylabel("detection rate")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(cfg.out / "curves.png", dpi=100)
        plt.close(fig)
        methods = sorted({r["method"] for r in main if r["stage"] == "finetuned"})
        grid = np.full((len(methods), len(concepts)), np.nan)
        weak: set[tuple[int, int]] = set()  # cells whose erasure removed less than half of the concept
        for (concept, _, _, factor, _), group in final_steps(recs).items():
            med = seed_summary(group, cfg.seed)["median"]
            if not factor and med.get("R") is not None and med["method"] in methods and concept in concepts:
                cell = methods.index(med["method"]), concepts.index(concept)
                grid[cell] = med["R"]
                if med.get("weak_erasure"):
                    weak.add(cell)
        fig, ax = plt.subplots(figsize=(1.6 * len(concepts) + 2, 0.5 * len(methods) + 1.5))
        im = ax.imshow(grid, cmap="Reds", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(concepts)), concepts)
        ax.set_yticks(range(len(methods)), methods)
        for i in range(len(methods)):
            for j in range(len(concepts)):
                if not np.isnan(grid[i, j]):
                    mark = "*" if (i, j) in weak else ""
                    ax.text(j, i, f"{grid[i, j]:.2f}{mark}", ha="center", va="center", fontsize=8,
                            color="grey" if mark else "white" if grid[i, j] > 0.7 else "black")  # fmt: skip
        ax.set_title("R after benign fine-tuning" + ("\n(* the erasure removed less than half)" if weak else ""))
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(cfg.out / "heatmap.png", dpi=100)
        plt.close(fig)
    fac = [r for r in recs if r["factor"] and r["stage"] == "finetuned"]
    names = sorted({r["factor"] for r in fac})
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            last: dict[str, dict[str, Any]] = {}
            seeds: dict[str, list[float]] = {}
            for (_, _, _, factor, level), group in final_steps(fac).items():
                if factor == name:
                    sm = seed_summary(group, cfg.seed)
                    last[level], seeds[level] = sm["median"], [r["R"] for r in sm["recs"] if r.get("R") is not None]
            levels = list(last)
            if name == "similarity":
                levels.sort(key=lambda lv: json.loads(lv)["clip_distance"])
                labels = [f"{json.loads(lv)['data']}\n{json.loads(lv)['clip_distance']:.2f}" for lv in levels]
            else:
                labels = [str(lv)[:18] for lv in levels]
            ys = [last[lv].get("R") or 0.0 for lv in levels]
            err = [[y - (last[lv].get("R_low") or y) for y, lv in zip(ys, levels, strict=True)],
                   [(last[lv].get("R_high") or y) - y for y, lv in zip(ys, levels, strict=True)]]  # fmt: skip
            ax.bar(range(len(levels)), ys, yerr=err, capsize=3, color="tab:red", alpha=0.7)
            for i, lv in enumerate(levels):
                if len(seeds[lv]) > 1:
                    ax.plot([i] * len(seeds[lv]), seeds[lv], "k.", alpha=0.6)
            ax.set_xticks(range(len(levels)), labels, fontsize=7, rotation=20)
            ax.set_title(f"R by {name}" + (" (data, CLIP distance)" if name == "similarity" else ""))
            ax.set_ylim(-0.2, 1.1)
        fig.tight_layout()
        fig.savefig(cfg.out / "factors.png", dpi=100)
        plt.close(fig)
