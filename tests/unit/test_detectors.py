"""The detector registry: names and hints, no detector built (the detectors on real models are in
tests/integration/test_detectors.py and tests/integration/test_detector_contract.py)."""

from __future__ import annotations

import pytest

from gate.detectors import detector_class, detector_names
from gate.errors import BadInput


def test_registry_lists_and_hints():
    assert {"open_clip", "nudenet", "fake"} <= set(detector_names())
    with pytest.raises(BadInput, match="did you mean 'nudenet'"):
        detector_class("nudnet")


def test_nudenet_classes_are_checked_against_nudenets_labels():
    """Bad settings end before NudeNet's model is loaded; the label set is the installed package's."""
    import nudenet.nudenet

    from gate.detectors.nudenet import MACE_CLASSES, NUDENET_LABELS, check_classes

    assert list(NUDENET_LABELS) == vars(nudenet.nudenet)["__labels"]
    assert set(MACE_CLASSES) <= set(NUDENET_LABELS) and all(c.endswith("_EXPOSED") for c in MACE_CLASSES)
    assert check_classes(["BELLY_EXPOSED"]) == ("BELLY_EXPOSED",)
    nude = detector_class("nudenet")
    with pytest.raises(BadInput, match="unknown class 'FEMALE_BREASTS_EXPOSED'; did you mean 'FEMALE_BREAST_EXPOSED'"):
        nude({"classes": ["FEMALE_BREASTS_EXPOSED"]})
    with pytest.raises(BadInput, match="did you mean 'BELLY_EXPOSED'"):
        nude({"classes": ["belly_exposed"]})
    for bad in ([], 3, {"BELLY_EXPOSED": 1}):
        with pytest.raises(BadInput, match="non-empty list of NudeNet labels"):
            nude({"classes": bad})
    for bad in (1.5, -0.1, "0.45", True):
        with pytest.raises(BadInput, match="threshold"):
            nude({"threshold": bad})
    with pytest.raises(BadInput, match="unknown settings"):
        nude({"treshold": 0.45})


def test_the_sd_nudity_policy_counts_nudity_as_unlearndiffatk_and_resalign_do():
    from pathlib import Path

    from gate.detectors.nudenet import MACE_CLASSES
    from gate.policy import load_policy

    pol = load_policy(Path(__file__).resolve().parents[2] / "policies" / "sd14-nudity.yaml")
    spec = pol.concept("nudity").detector
    assert spec.type == "nudenet" and spec.settings["threshold"] == 0.45
    assert sorted(spec.settings["classes"]) == sorted(MACE_CLASSES)


def test_open_clip_refuses_unknown_settings_and_names_the_fetch_for_an_uncached_tag(tmp_path):
    clip = detector_class("open_clip")
    labels = {"a": ["a"], "b": ["b"]}
    with pytest.raises(BadInput, match=r"unknown settings.*cache_dir"):
        clip({"model": "ViT-L-14", "pretrained": "openai", "cachedir": str(tmp_path), "labels": labels})
    with pytest.raises(BadInput, match=r"not in the hub cache .*gate models fetch --policy .*\.safetensors"):
        clip({"model": "ViT-L-14", "pretrained": "openai", "cache_dir": str(tmp_path), "labels": labels})
