"""``gate world zoo build``: rebuilds the zoo from ``recipe.json`` with the project's own commands.

Unlearned entries are made with ``gate erase`` (the methods of ``gate/unlearn``) and stored as
UNet deltas; candidates are made with ``gate finetune`` on world data folders and stored as
LoRA files. Each entry records what made it and what was measured on it: the erased concept's
detection rate for the original, unlearned and candidate models, the normalised resurgence R,
and the retained concepts' fidelity (held-out prompts, the world's detector, fixed seeds).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gate.world.zoo import DELTA, LORA, ZOO, materialize, write_delta

RECIPE = ZOO / "recipe.json"


def measure(pipe, concept: str, retained: list[str], n: int = 64, n_retained: int = 8) -> dict[str, float]:
    """An entry's figures: the concept's detection rate on ``n`` images and the retained concepts'
    mean fidelity on ``n_retained`` images each (``evaluate.measure_concept``, ``EVAL_SEED``)."""
    from gate.world.clip import ASSETS, WorldCLIP
    from gate.world.evaluate import EVAL_SEED, measure_concept
    from gate.world.models import DEFAULT_GUIDANCE, DEFAULT_STEPS

    clip = WorldCLIP(ASSETS / "clip")
    m = measure_concept(
        pipe,
        clip,
        concept,
        n=n,
        retained=retained,
        n_retained=n_retained,
        seed=EVAL_SEED,
        steps=DEFAULT_STEPS,
        guidance=DEFAULT_GUIDANCE,
    )
    a = sum(m["hits"]) / len(m["hits"])
    rates = [sum(h) / len(h) for h in m["retained_by_concept"].values()]
    f = sum(rates) / len(rates)  # the mean of the per-concept rates, as evaluate.mean_fidelity
    return {"detection": round(a, 4), "retained_fidelity": round(f, 4)}


def build_unlearned(name: str, spec: dict[str, Any], log=print) -> dict[str, Any]:
    from gate.pipeline import load_pipeline
    from gate.unlearn.base import EraseRequest, erase
    from gate.world import concepts as C
    from gate.world.evaluate import retained_concepts

    concept = spec["concept"]
    retained = retained_concepts(concept)
    world = materialize("world")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        request = EraseRequest(list(C.concept(concept).synonyms), retained, seed=spec.get("seed", 0))
        rec = erase(world, out, spec["method"], request, overrides=spec.get("overrides"))
        base, new = load_pipeline(world), load_pipeline(out)
        folder = ZOO / name
        if folder.exists():
            shutil.rmtree(folder)
        n = write_delta(base.unet, new.unet, folder / DELTA)
        orig = measure(base, concept, retained)
        unl = measure(new, concept, retained)
    entry = {
        "kind": "unlearned", "base": "world", "concept": concept, "method": spec["method"],
        "delta_tensors": n, "record": rec,
        "measured": {"original": orig, "unlearned": unl},
    }  # fmt: skip
    (folder / "entry.json").write_text(json.dumps(entry, indent=2) + "\n")
    log(f"{name}: {spec['method']} on {concept}: detection {orig['detection']:.2f} -> {unl['detection']:.2f}, "
        f"retained {orig['retained_fidelity']:.2f} -> {unl['retained_fidelity']:.2f}")  # fmt: skip
    return entry


def build_candidate(name: str, spec: dict[str, Any], log=print) -> dict[str, Any]:
    from gate.finetune import FinetuneConfig, finetune
    from gate.pipeline import load_pipeline
    from gate.stats import resurgence
    from gate.updates import load_lora
    from gate.world.evaluate import retained_concepts
    from gate.world.export import write_folder
    from gate.world.zoo import entry as zoo_entry

    base_name = spec["base"]
    base_entry = zoo_entry(base_name)
    concept = base_entry["concept"]
    retained = retained_concepts(concept)
    base_dir = materialize(base_name)
    d = spec["data"]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        write_folder(data_dir, n=d["n"], seed=d["seed"], exclude=d.get("exclude", []), require=d.get("require"))
        out = Path(tmp) / "out"
        cfg = FinetuneConfig(mode="lora", seed=spec.get("seed", 0), **spec["finetune"])
        rec = finetune(base_dir, data_dir, out, cfg)
        folder = ZOO / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        shutil.copy(out / LORA, folder / LORA)
    pipe = load_pipeline(base_dir)
    load_lora(pipe, folder / LORA)
    cand = measure(pipe, concept, retained)
    m = base_entry["measured"]
    r = resurgence(m["original"]["detection"], m["unlearned"]["detection"], cand["detection"])
    entry = {
        "kind": "candidate", "base": base_name, "concept": concept, "file": LORA,
        "label": spec.get("label", ""), "expected_verdict": spec.get("expect"), "data": d, "record": rec,
        "measured": {**m, "candidate": cand, "R": round(r, 4)},
    }  # fmt: skip
    (folder / "entry.json").write_text(json.dumps(entry, indent=2) + "\n")
    log(f"{name}: detection {m['unlearned']['detection']:.2f} -> {cand['detection']:.2f}, R = {r:.2f}, "
        f"retained {cand['retained_fidelity']:.2f}")  # fmt: skip
    return entry


def build_zoo(only: list[str] | None = None, log=print) -> None:
    recipe = json.loads(RECIPE.read_text())
    for name, spec in recipe["unlearned"].items():
        if not only or name in only:
            build_unlearned(name, spec, log)
    for name, spec in recipe["candidates"].items():
        if not only or name in only:
            build_candidate(name, spec, log)
    (ZOO / "demo.json").write_text(json.dumps(recipe["demo"], indent=2) + "\n")
