"""The pre-screen validation's "R well defined" rule is the study's weak-erasure rule (unit tier:
reads the committed results, loads no model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _validation():
    spec = importlib.util.spec_from_file_location(
        "prescreen_validation", REPO / "benchmarks" / "prescreen_validation.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_well_defined_is_relative_to_the_original_rate_as_the_study_marks_weak_erasures():
    well_defined = _validation().well_defined
    # the star starts at 0.86: removing 0.45 of it is more than half (not weak), though under 0.5 absolute
    assert well_defined({"a_orig": 0.86, "gap": 0.45, "retained_unlearned": 0.8})
    assert not well_defined({"a_orig": 0.86, "gap": 0.40, "retained_unlearned": 0.8})  # less than half
    assert not well_defined({"a_orig": 1.0, "gap": 0.9, "retained_unlearned": 0.4})  # the erasure broke the model


def test_the_committed_validation_counts_its_well_defined_triples_with_that_rule():
    data = json.loads((REPO / "results" / "prescreen" / "validation.json").read_text())
    well_defined = _validation().well_defined
    assert data["summary"]["n_well_defined"] == sum(map(well_defined, data["rows"]))
