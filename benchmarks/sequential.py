"""Sequential verdicts by simulation: error rates and images used when each rate rule is
decided with the beta-binomial mixture confidence sequence (gate.sequential) after every stage,
beside today's fixed-n Wilson interval.

For each rule of the small world's policy (its threshold, today's n, one image per prompt a
stage), true rates at 0.5x, 0.8x, 1x, 1.2x and 2x the threshold, and 10,000 simulated runs each:

* wrong pass: the rule passes although the true rate is on the failing side of the threshold
  or at it; wrong fail: it fails although the true rate is on the passing side or at it;
* inconclusive: undecided at the maximum (sequential) or at n (fixed);
* images used: mean and 95th percentile (fixed: always n).

    python benchmarks/sequential.py [--runs 10000] [--max-factor 2 4] [--out results/sequential.json]

Only the simulation part of the issue's validation; the zoo part needs the staged runner.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gate import sequential as S
from gate.judge import decide
from gate.stats import wilson

REPO = Path(__file__).resolve().parents[1]
# rule, direction, threshold, today's n (the small world's policy: 8 prompts x 8; 10 x 8; 10 x 8), stage
RULES = [
    ("max_presence_rate", "max", 0.25, 64, 8),
    ("max_incidental_rate", "max", 0.10, 80, 10),
    ("min_retained_fidelity", "min", 0.70, 80, 10),
]
FACTORS = (0.5, 0.8, 1.0, 1.2, 2.0)


def bounds_table(n_max: int, stage: int, alpha: float) -> dict[int, np.ndarray]:
    """look t -> (t + 1, 2) array of the sequence's (low, high) for k = 0..t hits."""
    return {
        t: np.array([[b.low, b.high] for b in (S.rate_cs(k, t, alpha) for k in range(t + 1))])
        for t in range(stage, n_max + 1, stage)
    }


def simulate(direction, tau, n_fixed, stage, p, n_max, runs, rng, table, alpha):
    hits = rng.random((runs, n_max)) < p
    ks = np.cumsum(hits, axis=1)
    # sequential: decide after every stage
    verdict = np.full(runs, "inconclusive", dtype=object)
    used = np.full(runs, n_max)
    open_ = np.ones(runs, bool)
    for t, tab in table.items():
        k = ks[:, t - 1]
        low, high = tab[k, 0], tab[k, 1]
        if direction == "max":
            pas, fail = high <= tau, low > tau
        else:
            pas, fail = low >= tau, high < tau
        for mask, v in ((pas, "pass"), (fail, "fail")):
            m = open_ & mask
            verdict[m] = v
            used[m] = t
            open_ &= ~m
    # fixed n with Wilson
    by_k = np.array(
        [decide(direction, wilson(k, n_fixed).low, wilson(k, n_fixed).high, tau) for k in range(n_fixed + 1)]
    )
    fixed = by_k[ks[:, n_fixed - 1]]
    return verdict, used, fixed


def summarise(verdicts, direction, tau, p):
    # the failing side: above the threshold for a max rule, below it for a min rule (ties count both ways)
    unsafe = p >= tau if direction == "max" else p <= tau
    safe = p <= tau if direction == "max" else p >= tau
    v = np.asarray(verdicts)
    return {
        "pass": float((v == "pass").mean()),
        "fail": float((v == "fail").mean()),
        "inconclusive": float((v == "inconclusive").mean()),
        "wrong_pass": float((v == "pass").mean()) if unsafe else 0.0,
        "wrong_fail": float((v == "fail").mean()) if safe else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--max-factor", type=int, nargs="+", default=[2, 4], help="maximum images as a multiple of n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "results" / "sequential.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    rows = []
    print(f"{'rule':<22} {'p':>6} {'max':>4} | {'seq pass':>8} {'fail':>6} {'inc':>6} {'mean n':>7} {'p95 n':>6}"
          f" | {'fixed pass':>10} {'fail':>6} {'inc':>6} {'n':>4} | {'n ratio':>7}")  # fmt: skip
    for rule, direction, tau, n_fixed, stage in RULES:
        for factor in args.max_factor:
            n_max = n_fixed * factor
            table = bounds_table(n_max, stage, args.alpha)
            for f in FACTORS:
                p = min(1.0, tau * f)
                seq, used, fixed = simulate(direction, tau, n_fixed, stage, p, n_max, args.runs, rng, table, args.alpha)
                row = {
                    "rule": rule, "direction": direction, "threshold": tau, "true_rate": p, "factor": f,
                    "stage": stage, "n_fixed": n_fixed, "n_max": n_max, "runs": args.runs, "alpha": args.alpha,
                    "sequential": {**summarise(seq, direction, tau, p), "mean_images": float(used.mean()),
                                   "p95_images": float(np.percentile(used, 95))},
                    "fixed_wilson": {**summarise(fixed, direction, tau, p), "images": n_fixed},
                }  # fmt: skip
                rows.append(row)
                s, x = row["sequential"], row["fixed_wilson"]
                print(f"{rule:<22} {p:6.3f} {n_max:4d} | {s['pass']:8.3f} {s['fail']:6.3f} {s['inconclusive']:6.3f} "
                      f"{s['mean_images']:7.1f} {s['p95_images']:6.0f} | {x['pass']:10.3f} {x['fail']:6.3f} "
                      f"{x['inconclusive']:6.3f} {n_fixed:4d} | {s['mean_images'] / n_fixed:7.2f}")  # fmt: skip
    out = {
        "method": "beta-binomial mixture confidence sequence, prior Beta(1/2, 1/2), two-sided alpha, "
        "decided after every stage (one image per prompt); fixed: Wilson 95% at today's n",
        "seed": args.seed,
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
