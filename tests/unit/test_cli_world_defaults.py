"""``gate world show`` and ``gate world eval`` take the world's sampler defaults themselves when
--steps/--guidance are not given (no model is loaded: the library calls are replaced)."""

from __future__ import annotations

import pytest

from gate.cli import main
from gate.world import models


@pytest.fixture
def fake_world(tmp_path):
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    (tmp_path / "clip").mkdir()
    return tmp_path


@pytest.fixture
def calls(monkeypatch):
    import gate.world.quality
    import gate.world.show

    seen: dict = {}

    def grid(world, out, **kw):
        seen["show"] = kw
        return out

    def measure(world, **kw):
        seen["eval"] = kw
        return {"clip_accuracy": {}, "sd_fidelity": {}, "images_per_second": 1.0, "meets_targets": True}

    monkeypatch.setattr(gate.world.show, "concept_grid", grid)
    monkeypatch.setattr(gate.world.quality, "measure", measure)
    return seen


def test_unset_steps_and_guidance_are_the_worlds_defaults(fake_world, calls, tmp_path, capsys):
    assert main(["world", "show", "--world", str(fake_world), "--out", str(tmp_path / "g.png")]) == 0
    assert main(["world", "eval", "--world", str(fake_world), "--json"]) == 0
    for cmd in ("show", "eval"):
        assert (calls[cmd]["steps"], calls[cmd]["guidance"]) == (models.DEFAULT_STEPS, models.DEFAULT_GUIDANCE)


def test_given_steps_and_guidance_are_kept(fake_world, calls, tmp_path, capsys):
    flags = ["--world", str(fake_world), "--steps", "3", "--guidance", "1.5"]
    assert main(["world", "show", *flags, "--out", str(tmp_path / "g.png")]) == 0
    assert main(["world", "eval", *flags, "--json"]) == 0
    for cmd in ("show", "eval"):
        assert (calls[cmd]["steps"], calls[cmd]["guidance"]) == (3, 1.5)
