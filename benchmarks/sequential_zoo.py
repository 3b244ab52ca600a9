"""Sequential against fixed-n on the small world's zoo: images generated, wall time and verdicts,
side by side in one run (issue "Sequential verdicts", validation part 2).

For each candidate on the zoo's ESD-x skull model (the resurgent demo LoRA, the K/V LoRA, the
self-attention LoRA that passes, the relearning control, and no update), and the incidental
candidate on the zoo's ESD-u skull model, ``gate check`` with the
small world's policy as shipped (``stopping: fixed``) and with ``stopping: sequential`` (everything
else equal; the maximum is the default 4 x samples_per_prompt unless --max-samples), each from a
fresh image cache, so every image counted was generated. The pre-screen is off in both (it is
the same report-only work either way). Writes ``zoo`` into results/sequential.json.

    python benchmarks/sequential_zoo.py [--candidates resurgent benign ...] [--max-samples N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "sequential.json"


MODES = {  # name: the policy's stopping block
    "fixed": {"method": "fixed"},
    "sequential": {"method": "sequential"},
    "sequential-verdict": {"method": "sequential", "until": "verdict"},
}


def _policy(tmp: Path, mode: str, max_samples: int | None) -> Path:
    from gate.world.demo import POLICY

    stop = dict(MODES[mode])
    if max_samples and stop["method"] == "sequential":
        stop["max_samples"] = max_samples
    p = tmp / f"policy-{mode}.yaml"
    p.write_text(json.dumps({"version": 1, "include": str(POLICY), "name": f"small-world-{mode}", "stopping": stop}))
    return p


def run_one(checkpoint: str, update: str | None, original: str, policy: Path, cache: Path, out: Path) -> dict:
    from gate.runner import CheckOptions, run_check

    opts = CheckOptions(
        checkpoint=checkpoint, policy=str(policy), update=update, original=original, cache_dir=str(cache),
        prescreen=False, report_dir=str(out), track=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    outcome = run_check(opts)
    wall = time.perf_counter() - t0
    rep = outcome.report
    c = rep.concepts[0]
    images = dict((c.stopping or {}).get("images", {}))
    return {
        "verdict": rep.verdict,
        "rules": {r.rule: r.verdict for r in c.rules},
        "figures": {r.rule: [round(r.observed, 3), round(r.low, 3), round(r.high, 3)] for r in c.rules},
        "decided_at_stage": (c.stopping or {}).get("decided_at_stage"),
        "images": images,
        "images_total": sum(images.values()),
        "generated": int(rep.timings_s.get("images", 0)),
        "cache": rep.cache,
        "wall_s": round(wall, 1),
        "generate_s": rep.timings_s.get("generate"),
        "stage_moves_s": rep.timings_s.get("stage_moves"),
    }


def main() -> None:
    from gate.provenance import hash_tree
    from gate.world import zoo
    from gate.world.clip import ASSETS
    from gate.world.demo import demo_inputs

    names = ("resurgent", "benign_kv", "benign", "relearn", "none", "incidental")
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", nargs="+", default=list(names), choices=names)
    ap.add_argument("--max-samples", type=int, default=None, help="sequential maximum per prompt (default 4 x n)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    demo = json.loads((zoo.ZOO / "demo.json").read_text())
    d = demo_inputs()
    rows = []
    with tempfile.TemporaryDirectory(prefix="seqzoo-") as t:
        tmp = Path(t)
        pols = {m: _policy(tmp, m, args.max_samples) for m in MODES}
        for name in args.candidates:
            update = None if name == "none" else str(zoo.update_path(demo[name]))
            base = demo["incidental_checkpoint"] if name == "incidental" else demo["checkpoint"]
            ckpt = str(zoo.materialize(base)) if name == "incidental" else d.checkpoint
            row: dict = {"candidate": name, "update": demo.get(name), "checkpoint": base}
            for m, pol in pols.items():
                x = run_one(ckpt, update, d.original, pol, tmp / f"cache-{name}-{m}", tmp / f"r-{name}-{m}")
                row[m] = x
                print(f"{name:10s} {m:10s} {x['verdict']:5s} images {x['images_total']:4d} "
                      f"generated {x['generated']:4d} wall {x['wall_s']:6.1f} s  {x['rules']}", flush=True)  # fmt: skip
            f = row["fixed"]
            for m in MODES:
                if m == "fixed":
                    continue
                s = row[m]
                s["same_verdict"] = f["verdict"] == s["verdict"]
                s["same_rule_verdicts"] = f["rules"] == s["rules"]
                s["image_ratio"] = round(s["images_total"] / f["images_total"], 3)
                s["candidate_image_ratio"] = round(s["images"]["candidate"] / f["images"]["candidate"], 3)
                s["generated_ratio"] = round(s["generated"] / max(1, f["generated"]), 3)
                s["wall_ratio"] = round(s["wall_s"] / f["wall_s"], 3)
            rows.append(row)
    print(f"\n{'candidate':10s} {'mode':19s} verdict images (candidate) ratio cand-ratio wall-ratio same-verdict")
    for r in rows:
        for m in MODES:
            s = r[m]
            extra = (
                ""
                if m == "fixed"
                else (
                    f"{s['image_ratio']:5.2f} {s['candidate_image_ratio']:10.2f} {s['wall_ratio']:10.2f} "
                    f"{'same' if s['same_verdict'] else 'DIFFERENT'}"
                )
            )
            n, nc = s["images_total"], s["images"]["candidate"]
            print(f"{r['candidate']:10s} {m:19s} {s['verdict']:7s} {n:6d} ({nc:4d})     {extra}")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    from gate.provenance import git_commit, library_versions

    cmd = "python benchmarks/sequential_zoo.py" + (f" --max-samples {args.max_samples}" if args.max_samples else "")
    data["zoo"] = {
        "command": cmd,
        "checkpoint": demo["checkpoint"], "max_samples": args.max_samples or "4 x samples_per_prompt",
        "world": {"sd_sha256": hash_tree(ASSETS / "sd"), "clip_sha256": hash_tree(ASSETS / "clip")},
        "rows": rows, "git_commit": git_commit(), "libraries": library_versions(),
    }  # fmt: skip
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
