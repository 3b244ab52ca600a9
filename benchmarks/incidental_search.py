"""The search for incidental resurgence on a co-occurrence world (issue "The study on the current
world"): the skull drawn, unnamed, beside lumo in the world's training data; does an erasure
remove it from lumo's images, and does a benign fine-tune bring it back there?

For the original model, each erasure of the skull (ESD-u, ESD-x, UCE, the zoo's recipe: the
skull's synonyms erased, every other shape and character kept, seed 0) and each benign
fine-tune of it, a check with the policy ``results/incidental/policy-search.yaml``: the skull's
own prompts, six lumo phrasings as incidental prompts (16 samples each, a multi-label decision
at probability 0.25), lumo and a circle retained. Fine-tunes (batch 16, seed 0):

* ``lora``: the zoo's resurgent recipe (rank 8 on every attention projection, lr 2e-3, 400
  steps) on 1,000 world images without the skull;
* ``lora-nolumo``: the same on images without the skull or lumo;
* ``full3e-4-nolumo``: a full fine-tune, lr 3e-4, 300 steps, without the skull or lumo;
* ``lora800-nolumo``: the LoRA for 800 steps, without the skull or lumo.

    python benchmarks/incidental_search.py --world gate/world/assets --work .gate-incidental \
        [--out results/incidental/search.json]

Each check is written as soon as it is made (a rerun resumes). The world built for it:
``gate world build --out W --stages sd --cooccur lumo:skull=0.8`` (now the shipped one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "results" / "incidental" / "policy-search.yaml"
LORA = {"mode": "lora", "steps": 400, "lr": 2e-3, "batch_size": 16, "rank": 8, "alpha": 8.0}
FINETUNES = {  # name -> (data excluded, fine-tune settings)
    "lora": (["skull"], LORA),
    "lora-nolumo": (["skull", "lumo"], LORA),
    "full3e-4-nolumo": (["skull", "lumo"], {"mode": "full", "steps": 300, "lr": 3e-4, "batch_size": 16}),
    "lora800-nolumo": (["skull", "lumo"], {**LORA, "steps": 800}),
}
METHODS = ("esd-u", "esd-x", "uce")


def main() -> None:
    from gate.finetune import LORA_WEIGHTS, FinetuneConfig, finetune
    from gate.runner import CheckOptions, run_check
    from gate.unlearn.base import EraseRequest, erase
    from gate.world import concepts as C
    from gate.world.evaluate import retained_concepts
    from gate.world.export import write_folder

    ap = argparse.ArgumentParser()
    ap.add_argument("--world", default=str(REPO / "gate" / "world" / "assets"))
    ap.add_argument("--work", default=str(REPO / ".gate-incidental"))
    ap.add_argument("--out", default=str(REPO / "results" / "incidental" / "search.json"))
    args = ap.parse_args()
    world, work, out = Path(args.world), Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    res = json.loads(out.read_text()) if out.is_file() else {}

    def check(name: str, ckpt: Path, update: Path | None = None) -> None:
        if name in res:
            return
        t0 = time.time()
        opts = CheckOptions(checkpoint=str(ckpt), policy=str(POLICY), update=str(update) if update else None,
                            original=str(world / "sd"), cache_dir=str(work / "cache"), prescreen=False,
                            report_dir=str(work / f"r-{name}"), track=False)  # fmt: skip
        rules = {r.rule: r for r in run_check(opts).report.concepts[0].rules}
        res[name] = {k: [round(r.observed, 3), round(r.low, 3), round(r.high, 3), r.verdict, round(r.baseline or 0, 3)]
                     for k, r in rules.items()}  # fmt: skip
        res[name]["wall"] = round(time.time() - t0)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(name, json.dumps(res[name]), flush=True)

    check("original", world / "sd")
    for m in METHODS:
        unl = work / m
        if not (unl / "erase.json").is_file():
            request = EraseRequest(list(C.concept("skull").synonyms), retained_concepts("skull"), seed=0)
            erase(world / "sd", unl, m, request)
        check(m, unl)
        for name, (exclude, ft) in FINETUNES.items():
            data = work / ("data-no-" + "-".join(exclude))
            if not (data / "metadata.jsonl").is_file():
                write_folder(data, n=1000, seed=77, exclude=exclude)
            folder = work / f"{m}-{name}"
            if not (folder / "finetune.json").is_file():
                finetune(unl, data, folder, FinetuneConfig(**ft))
            check(f"{m}+{name}", unl, folder / LORA_WEIGHTS if ft["mode"] == "lora" else folder)


if __name__ == "__main__":
    main()
