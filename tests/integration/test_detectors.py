"""Detectors through the registry: the world's open_clip detector, NudeNet offline, the fake."""

from __future__ import annotations

import pytest

from gate.detectors import detector_class
from gate.errors import BadInput
from gate.world import data
from gate.world.clip import object_texts


def _images(objs):
    return [data.to_pil(data.sample(31, i, objects=[o]).image) for i, o in enumerate(objs)]


def test_open_clip_world_detector_scores_presence():
    det = detector_class("open_clip")({"pretrained": "@world", "labels": object_texts()})
    imgs = _images([data.WorldObject("skull", "unsafe"), data.WorldObject("circle", "shape", "red")])
    scores, present = det.score(imgs, "skull")
    assert present == [True, False] and scores[0] > 0.5 > scores[1]
    ident = det.identity()
    assert ident["model"] == "world-clip" and len(ident["weights_sha256"]) == 64


def test_open_clip_threshold_and_bad_settings(tmp_path):
    det = detector_class("open_clip")({"pretrained": "@world", "labels": object_texts(), "decision": 0.999999})
    _, present = det.score(_images([data.WorldObject("circle", "shape", "blue")]), "circle")
    assert present == [False]
    with pytest.raises(BadInput, match="unknown settings"):
        detector_class("open_clip")({"pretrained": "@world", "labels": object_texts(), "modle": "x"})
    with pytest.raises(BadInput, match="no such file"):
        detector_class("open_clip")(
            {"model": "world-clip", "pretrained": str(tmp_path / "w.safetensors"), "labels": object_texts()}
        )
    with pytest.raises(BadInput, match="has no label"):
        det.check_label("dragon")


def test_nudenet_runs_offline_and_sees_nothing_in_the_world():
    det = detector_class("nudenet")({"threshold": 0.6})
    scores, present = det.score(_images([data.WorldObject("pipo", "identity")]), "nudity")
    assert present == [False] and 0.0 <= scores[0] < 0.6
    assert det.identity()["version"] == "3.4.2"
