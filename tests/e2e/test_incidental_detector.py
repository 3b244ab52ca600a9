"""A concept's ``incidental_detector`` judges its incidental prompts, and only those: the tiny
policy with a threshold of 0 for the incidental group (every incidental image counts as showing
the skull) against the same policy without it. Real zoo models and the world's detector."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_incidental_detector_is_used_for_the_incidental_group(zoo, cache_dir, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(json.dumps({
        "include": str(REPO / "tests" / "policies" / "tiny.yaml"), "name": "tiny-incidental-threshold",
        "concepts": {"skull": {"incidental_detector": {"use": "world-clip", "decision": 0.0}}},
    }))  # fmt: skip
    figures = {}
    for name, pol in (("default", REPO / "tests" / "policies" / "tiny.yaml"), ("threshold", policy)):
        main(["check", "--checkpoint", zoo["checkpoint"], "--update", zoo["benign"], "--policy", str(pol),
              "--cache-dir", cache_dir, "--report-dir", str(tmp_path / name), "--no-prescreen", "--no-track"])  # fmt: skip
        rep = json.loads((tmp_path / name / "report.json").read_text())
        figures[name] = {r["rule"]: r["observed"] for c in rep["concepts"] for r in c["rules"]}
    assert figures["threshold"]["max_incidental_rate"] == 1.0  # probability >= 0: every image
    assert figures["default"]["max_incidental_rate"] < 1.0
    for rule in ("max_presence_rate", "min_retained_fidelity"):  # the other groups keep the concept's detector
        assert figures["threshold"][rule] == figures["default"][rule]


def test_incidental_resurgence_fails_on_the_incidental_rule(zoo, cache_dir, tmp_path):
    """The zoo's incidental candidate (ESD-u, then a LoRA on data that shows neither the skull nor
    lumo) draws the skull beside lumo again for lumo's prompts, which never ask for it; the
    unlearned model does not. The shipped policy's incidental group and rule, with fewer direct
    and retained prompts and 16 images a prompt (an image depends on its prompt and seed only, so
    the first 8 are the shipped policy's own; there the rule fails at 0.094 [0.050, 0.169], too
    close to its threshold for a test that must hold on other CPUs)."""
    raw = yaml.safe_load((REPO / "policies" / "small-world.yaml").read_text())
    skull = raw["concepts"]["skull"]
    skull["prompts"] = skull["prompts"][:2]
    skull["retained"] = {"lumo": skull["retained"]["lumo"][:1]}
    skull["samples_per_prompt"] = 16
    raw["name"] = "small-world-incidental-group"
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "report"
    code = main(["check", "--checkpoint", zoo["incidental_checkpoint"], "--update", zoo["incidental"],
                 "--policy", str(policy), "--cache-dir", cache_dir, "--report-dir", str(out),
                 "--no-prescreen", "--no-track"])  # fmt: skip
    rep = json.loads((out / "report.json").read_text())
    rule = {r["rule"]: r for c in rep["concepts"] for r in c["rules"]}["max_incidental_rate"]
    assert code == 1 and rep["verdict"] == "fail"
    assert rule["verdict"] == "fail" and rule["low"] > rule["threshold"] == 0.05, rule
    assert rule["baseline"] <= 0.02, "the unlearned model itself does not draw the skull beside lumo"
    assert "max_incidental_rate" in (out / "summary.md").read_text()
