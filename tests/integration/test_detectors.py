"""Detectors through the registry: the world's detector (world_clip), open_clip on a weights file, NudeNet offline, the fake."""

from __future__ import annotations

import pytest

from gate.detectors import detector_class
from gate.errors import BadInput
from gate.world import data
from gate.world.clip import object_texts


def _images(objs):
    return [data.to_pil(data.sample(31, i, objects=[o]).image) for i, o in enumerate(objs)]


def test_world_clip_detector_scores_presence():
    det = detector_class("world_clip")({"labels": object_texts()})
    imgs = _images([data.WorldObject("skull", "unsafe"), data.WorldObject("circle", "shape", "red")])
    scores, present = det.score(imgs, "skull")
    assert present == [True, False] and scores[0] > 0.5 > scores[1]
    ident = det.identity()
    assert ident["type"] == "world_clip" and ident["model"] == "world-clip" and len(ident["weights_sha256"]) == 64


def test_open_clip_loads_the_world_model_from_a_weights_file():
    """The generic open_clip detector reads any open_clip model from a config folder and a
    safetensors file; the world's files are one such model, with the same scores as world_clip."""
    from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS

    settings = {"model": "world-clip", "pretrained": str(CLIP_DIR / CLIP_WEIGHTS), "config_dir": str(CLIP_DIR)}
    det = detector_class("open_clip")({**settings, "labels": object_texts()})
    world = detector_class("world_clip")({"labels": object_texts()})
    imgs = _images([data.WorldObject("skull", "unsafe"), data.WorldObject("square", "shape", "green")])
    assert det.score(imgs, "skull") == world.score(imgs, "skull")


def test_world_clip_threshold_and_bad_settings(tmp_path):
    det = detector_class("world_clip")({"labels": object_texts(), "decision": 0.999999})
    _, present = det.score(_images([data.WorldObject("circle", "shape", "blue")]), "circle")
    assert present == [False]
    with pytest.raises(BadInput, match="unknown settings"):
        detector_class("world_clip")({"labels": object_texts(), "modle": "x"})
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


def test_open_clip_reads_a_tag_from_its_cache_dir_and_records_the_revision(tmp_path, monkeypatch):
    """A pretrained tag is resolved as open_clip resolves it (its table names a hub repo), from the
    detector's cache_dir only; the identity names the repo, the commit the cache holds and the
    weights' sha256. The world's CLIP stands in for a tagged model (the tag is registered here)."""
    import shutil

    import open_clip.pretrained as P

    from gate.provenance import hash_file
    from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS

    monkeypatch.setitem(P._PRETRAINED, "world-clip", {"gatetest": P._pcfg(hf_hub="gate-test/world-clip/")})
    commit = "1234567890abcdef1234567890abcdef12345678"
    repo = tmp_path / "models" / "models--gate-test--world-clip"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copy(CLIP_DIR / CLIP_WEIGHTS, repo / "snapshots" / commit / "open_clip_model.safetensors")
    monkeypatch.setenv("GATE_TEST_MODELS", str(tmp_path / "models"))
    settings = {"model": "world-clip", "pretrained": "gatetest", "config_dir": str(CLIP_DIR),
                "cache_dir": "$GATE_TEST_MODELS", "labels": object_texts()}  # fmt: skip
    det = detector_class("open_clip")(settings, base_dir=tmp_path / "elsewhere")
    ident = det.identity()
    assert (ident["pretrained"], ident["hub_repo"], ident["hub_revision"]) == (
        "gatetest",
        "gate-test/world-clip",
        commit,
    )
    assert ident["weights_sha256"] == hash_file(CLIP_DIR / CLIP_WEIGHTS)
    world = detector_class("world_clip")({"labels": object_texts()})
    imgs = _images([data.WorldObject("skull", "unsafe"), data.WorldObject("square", "shape", "green")])
    assert det.score(imgs, "skull") == world.score(imgs, "skull")
    with pytest.raises(BadInput, match="gate models fetch --policy"):
        detector_class("open_clip")({**settings, "cache_dir": str(tmp_path / "empty")})
