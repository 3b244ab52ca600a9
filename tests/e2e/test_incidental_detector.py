"""A concept's ``incidental_detector`` judges its incidental prompts, and only those: the tiny
policy with a threshold of 0 for the incidental group (every incidental image counts as showing
the skull) against the same policy without it. Real zoo models and the world's detector."""

from __future__ import annotations

import json
from pathlib import Path

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
