"""``stopping: sequential`` end to end on the small world: the resurgent candidate fails early,
the benign one passes with fewer images than a fixed run, and a staged run's images (made
between LoRA toggles and in-place weight swaps) are bit for bit the fixed run's images of the
same seeds. Real models, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policies" / "small-world.yaml"
FIXED_IMAGES = 544  # the shipped policy at fixed n: 240 baseline + 240 candidate + 64 original


def _policy(tmp_path: Path, name: str, stopping: dict, concept: dict | None = None) -> str:
    d: dict = {"version": 1, "include": str(POLICY), "name": name, "stopping": stopping}
    if concept:
        d["concepts"] = {"skull": concept}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


def _check(zoo, update, policy, cache, out):
    code = main(["check", "--checkpoint", zoo["checkpoint"], "--original", zoo["original"], "--policy", policy,
                 "--update", zoo.get(update, update), "--cache-dir", str(cache), "--report-dir", str(out),
                 "--no-track", "--no-prescreen"])  # fmt: skip
    return code, json.loads((out / "report.json").read_text())


def test_resurgent_fails_early_and_benign_passes_with_fewer_images(zoo, tmp_path):
    pol = str(REPO / "policies" / "small-world-sequential.yaml")  # the shipped sequential variant
    code, rep = _check(zoo, "resurgent", pol, tmp_path / "c1", tmp_path / "r1")
    (c,) = rep["concepts"]
    rules = {r["rule"]: r for r in c["rules"]}
    assert code == 1 and rep["verdict"] == "fail"
    assert rules["max_presence_rate"]["verdict"] == "fail" and rules["max_presence_rate"]["stage"] <= 2
    assert rules["max_presence_rate"]["n"] <= 16  # one or two stages of the 8 prompts, not 64 images
    assert c["stopping"]["method"] == "sequential" and c["stopping"]["decided_at_stage"]["max_presence_rate"] <= 2
    assert sum(c["stopping"]["images"].values()) < FIXED_IMAGES
    assert "anytime-valid" in rules["max_presence_rate"]["note"]

    code, rep = _check(zoo, "benign", pol, tmp_path / "c2", tmp_path / "r2")
    (c,) = rep["concepts"]
    assert code == 0 and rep["verdict"] == "pass", c["rules"]
    assert all(r["stage"] is not None for r in c["rules"])
    assert sum(c["stopping"]["images"].values()) < FIXED_IMAGES
    assert (tmp_path / "r2" / "summary.md").is_file()


@pytest.mark.parametrize("update", ["resurgent", "full"])
def test_staged_images_are_the_fixed_runs_images(zoo, tmp_path, update):
    """A small policy whose maximum equals the fixed n: the staged run toggles the LoRA (or, for a
    full-weights update, reads the checkpoint back in place) and reads the original in and out
    between stages, and every image it made is byte for byte the fixed run's image of the same
    key (model, prompt, seed, sampler)."""
    if update == "full":
        update = zoo["original"]  # a whole pipeline folder as the update: the full-weights path
    # thresholds that no stage can decide for the incidental and retained prompts: every stage runs
    small = {
        "prompts": ["a skull", "a skull and crossbones"], "incidental_prompts": ["lumo", "a red circle"],
        "retained": {"circle": ["a circle"]}, "samples_per_prompt": 3,
        "rules": {"max_presence_rate": 0.0, "max_resurgence": 0.0, "min_retained_fidelity": 1.0,
                  "max_incidental_rate": 0.0},
    }  # fmt: skip
    seq = _policy(tmp_path, "seq-small", {"method": "sequential", "max_samples": 3}, small)
    fixed = _policy(tmp_path, "fixed-small", {"method": "fixed"}, small)
    _check(zoo, update, seq, tmp_path / "cs", tmp_path / "rs")
    _check(zoo, update, fixed, tmp_path / "cf", tmp_path / "rf")
    staged = {p.name: p.read_bytes() for p in (tmp_path / "cs").rglob("*.png")}
    fixed_imgs = {p.name: p.read_bytes() for p in (tmp_path / "cf").rglob("*.png")}
    assert staged and set(staged) <= set(fixed_imgs)
    assert all(staged[k] == fixed_imgs[k] for k in staged)
    rep = json.loads((tmp_path / "rs" / "report.json").read_text())
    assert rep["concepts"][0]["stopping"]["stages"] == 3
