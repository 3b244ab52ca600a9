"""Runs every unlearning method on the small world and prints the docs' table.

For each method (its small-world preset): erase a concept together with its world synonyms,
preserving the other object types; then measure, on prompts held out of training,
the erased concept's detection rate and the retained concepts' mean fidelity, before and
after; wall time, parameters changed and data used come from the method's record.

    python benchmarks/unlearning_table.py [--concept skull] [--methods uce,esd-x] [--n 32]

Prints a Markdown table and writes results/unlearning_<concept>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from gate.pipeline import load_pipeline
from gate.unlearn import METHODS
from gate.unlearn.base import EraseRequest, erase
from gate.world import concepts as C
from gate.world.clip import ASSETS, WorldCLIP
from gate.world.evaluate import detection_rate, mean_fidelity
from gate.world.models import DEFAULT_GUIDANCE, DEFAULT_STEPS

RETAINED = [*C.SHAPES, *C.IDENTITIES]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concept", default="skull")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--n", type=int, default=32, help="images for the erased concept")
    ap.add_argument("--n-retained", type=int, default=12, help="images per retained concept")
    ap.add_argument("--out", default="results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    concept = C.concept(args.concept)
    retained = [r for r in RETAINED if r != concept.name]
    clip = WorldCLIP(ASSETS / "clip")
    kw = dict(steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)
    base = load_pipeline(ASSETS / "sd")
    a_orig = detection_rate(base, clip, concept.name, n=args.n, **kw)
    f_orig = mean_fidelity(base, clip, retained, n=args.n_retained, **kw)
    rows = []
    for name in args.methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            rec = erase(ASSETS / "sd", Path(tmp) / name, name, EraseRequest(list(concept.synonyms), retained, seed=0))
            pipe = load_pipeline(Path(tmp) / name)
            a = detection_rate(pipe, clip, concept.name, n=args.n, **kw)
            f = mean_fidelity(pipe, clip, retained, n=args.n_retained, **kw)
        rows.append({
            "method": name, "erased_before": a_orig, "erased_after": a, "retained_before": f_orig, "retained_after": f,
            "wall_time_s": rec["wall_time_s"], "values_changed": rec["parameters_changed"]["values"],
            "data": ", ".join(f"{k}: {v['n']} {v['source']}" for k, v in rec["data"].items()) or "text only",
            "config": rec["config"],
        })  # fmt: skip
        r = rows[-1]
        print(
            f"{name}: erased {a_orig:.2f} -> {a:.2f}, retained {f_orig:.2f} -> {f:.2f}, {r['wall_time_s']} s",
            flush=True,
        )
    Path(args.out).mkdir(exist_ok=True)
    Path(args.out, f"unlearning_{concept.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(
        f"\n| method | erased '{concept.name}' before -> after | retained fidelity before -> after "
        "| wall time (s) | weights changed | data |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['method']} | {r['erased_before']:.2f} -> {r['erased_after']:.2f} | {r['retained_before']:.2f} -> "
            f"{r['retained_after']:.2f} | {r['wall_time_s']} | {r['values_changed']:,} | {r['data']} |"
        )


if __name__ == "__main__":
    main()
