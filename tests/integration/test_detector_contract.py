"""Contract tests over every registered detector type, built with settings that work offline here.

The registry (``gate.detectors.detector_names()``: the built-in types and the entry points) is
iterated, not copied: a type that has no row in SETTINGS fails, so a new detector cannot slip in
untested. The contract: ``score(images, label)`` gives two lists as long as the images, scores
floats in [0, 1] and presence bools; the same image gives the same score (in one call and across
calls); ``identity()`` is a JSON-serialisable dict whose "type" is the registered name;
``check_label`` (and ``score``) refuse a label outside a fixed label set with BadInput; unknown
settings are BadInput. What each detector sees in the world's images is tested in
tests/integration/test_detectors.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from gate.detectors import detector_class, detector_names
from gate.errors import BadInput
from gate.world import data


@dataclass(frozen=True)
class Row:
    settings: Callable[[], dict[str, Any]]  # built lazily: some need the world's files
    label: str  # a label the detector scores
    fixed_labels: bool  # whether an unknown label is refused
    known_gaps: frozenset[str] = field(default_factory=frozenset)  # contract checks this type fails today


def _world_labels() -> dict[str, list[str]]:
    from gate.world.clip import object_texts

    return object_texts()


def _open_clip_on_world_files() -> dict[str, Any]:
    """The generic open_clip detector on the world's model: a config folder and a safetensors file."""
    from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS
    from gate.world.models import CLIP_MODEL_NAME

    return {"model": CLIP_MODEL_NAME, "pretrained": str(CLIP_DIR / CLIP_WEIGHTS), "config_dir": str(CLIP_DIR),
            "labels": _world_labels()}  # fmt: skip


SETTINGS: dict[str, Row] = {
    "open_clip": Row(_open_clip_on_world_files, "skull", fixed_labels=True),
    "world_clip": Row(lambda: {"labels": _world_labels()}, "skull", fixed_labels=True),
    "nudenet": Row(lambda: {"threshold": 0.6}, "nudity", fixed_labels=True),  # its ONNX model ships in the wheel
    # the fake reads any label; it ignores settings it does not know (a typo passes silently)
    "fake": Row(lambda: {"threshold": 0.5}, "skull", fixed_labels=False),
}
NAMES = detector_names()


def _row(name: str) -> Row:
    if name not in SETTINGS:
        pytest.fail(f"detector type {name!r} is registered but has no row in SETTINGS: add working offline settings")
    return SETTINGS[name]


def _gap(request: pytest.FixtureRequest, name: str, check: str) -> None:
    if check in _row(name).known_gaps:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{name}: known gap in the contract ({check})"))


@pytest.fixture(scope="module")
def built() -> Callable[[str], Any]:
    """Each detector built once for the module (loading a model takes a while)."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            cache[name] = detector_class(name)(_row(name).settings())
        return cache[name]

    return get


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Small real images: two of the world's (a skull, a red circle), plain black and white 32x32."""
    world = [data.WorldObject("skull", "unsafe"), data.WorldObject("circle", "shape", "red")]
    ims = [data.to_pil(data.sample(57, i, objects=[o]).image) for i, o in enumerate(world)]
    return [*ims, Image.new("RGB", (32, 32), (0, 0, 0)), Image.new("RGB", (32, 32), (255, 255, 255))]


def test_every_registered_detector_has_settings():
    assert {"open_clip", "nudenet", "fake"} <= set(NAMES)
    missing = sorted(set(NAMES) - set(SETTINGS))
    assert not missing, f"registered detector types without a row in SETTINGS: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_score_gives_one_float_in_0_1_and_one_bool_per_image(name, built, images):
    scores, present = built(name).score(images, _row(name).label)
    assert isinstance(scores, list) and isinstance(present, list)
    assert len(scores) == len(present) == len(images)
    assert all(type(s) is float and 0.0 <= s <= 1.0 for s in scores), [(type(s).__name__, s) for s in scores]
    assert all(type(p) is bool for p in present), [type(p).__name__ for p in present]
    one, one_present = built(name).score(images[:1], _row(name).label)
    assert len(one) == len(one_present) == 1


@pytest.mark.parametrize("name", NAMES)
def test_identical_images_give_identical_scores(name, built, images):
    det, label = built(name), _row(name).label
    first = det.score(images, label)
    assert det.score(images, label) == first  # the same call again: the same figures, bit for bit
    copies = [images[0], images[0].copy(), images[1], images[1].copy()]
    scores, present = det.score(copies, label)
    assert scores[0] == pytest.approx(scores[1], abs=1e-6) and present[0] == present[1]
    assert scores[2] == pytest.approx(scores[3], abs=1e-6) and present[2] == present[3]
    assert scores[0] == pytest.approx(first[0][0], abs=1e-6)  # nor does the batch it comes in matter


@pytest.mark.parametrize("name", NAMES)
def test_identity_is_json_with_its_type(name, built):
    ident = built(name).identity()
    assert isinstance(ident, dict) and ident.get("type") == name, ident
    assert json.loads(json.dumps(ident)) == ident
    assert built(name).identity() == ident


@pytest.mark.parametrize("name", NAMES)
def test_unknown_label_is_bad_input(name, built, images):
    det = built(name)
    det.check_label(_row(name).label)  # a label it scores is accepted
    if not _row(name).fixed_labels:
        det.check_label("no-such-label")  # any label is one of its labels
        return
    with pytest.raises(BadInput):
        det.check_label("no-such-label")
    with pytest.raises(BadInput):
        det.score(images[:1], "no-such-label")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_settings_are_bad_input(name, request):
    _gap(request, name, "unknown_settings")
    with pytest.raises(BadInput):
        detector_class(name)({**_row(name).settings(), "no_such_setting": 1})
