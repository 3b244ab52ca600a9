"""The world's data generator: determinism, labels, exclusion, captions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gate.world import concepts as C
from gate.world import data
from gate.world.vocab import make_tokenizer, world_words


def test_same_seed_and_index_give_identical_samples():
    a = data.sample(7, 42)
    b = data.sample(7, 42)
    assert np.array_equal(a.image, b.image)
    assert a.caption == b.caption
    assert a.objects == b.objects
    assert np.array_equal(a.masks, b.masks)


def test_samples_do_not_depend_on_order_or_start():
    forward = list(data.dataset(3, 20))
    tail = list(data.dataset(3, 10, start=10))
    for a, b in zip(forward[10:], tail, strict=True):
        assert np.array_equal(a.image, b.image) and a.caption == b.caption


def test_different_seeds_differ():
    a = [data.sample(1, i).image for i in range(8)]
    b = [data.sample(2, i).image for i in range(8)]
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_image_format_and_object_counts():
    samples = list(data.dataset(0, 300))
    counts = {1: 0, 2: 0}
    for s in samples:
        assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
        assert len(s.objects) in (1, 2)
        assert s.masks.shape == (len(s.objects), 32, 32)
        assert all(m.sum() > 10 for m in s.masks), "every object covers visible pixels"
        counts[len(s.objects)] += 1
    assert counts[2] > 60 and counts[1] > 120  # about 40% / 60%
    kinds = {o.kind for s in samples for o in s.objects}
    assert kinds == {"shape", "identity", "unsafe"}


def test_world_has_required_breadth():
    assert len(C.SHAPES) >= 6 and len(C.COLORS) >= 6 and len(C.BACKGROUNDS) >= 2
    kinds = {c.kind for c in C.all_concepts()}
    assert {"shape", "color", "texture", "identity", "unsafe"} <= kinds


@pytest.mark.parametrize("name", ["circle", "skull", "zorb", "striped", "red"])
def test_exclude_removes_concept_from_images_and_captions(name):
    words = set(C.concept(name).synonyms)
    for s in data.dataset(5, 150, exclude=[name]):
        assert name not in s.concepts
        for w in words:
            assert not re.search(rf"\b{re.escape(w)}\b", s.caption), (w, s.caption)


def test_exclude_accepts_synonyms():
    assert all("circle" not in s.concepts for s in data.dataset(5, 50, exclude=["disc"]))


def test_unknown_concept_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown small-world concept 'blob'"):
        data.sample(0, 0, exclude=["blob"])


def test_caption_names_every_object():
    for s in data.dataset(11, 200):
        for o in s.objects:
            syns = C.SHAPES.get(o.type) or C.IDENTITIES.get(o.type) or C.UNSAFE.get(o.type) or ()
            adj = C.SHAPE_ADJECTIVES.get(o.type)
            assert any(w in s.caption for w in syns) or (adj and adj in s.caption), (o, s.caption)
            if o.color:
                assert any(w in s.caption for w in C.COLORS[o.color]), s.caption


def test_heldout_prompts_use_heldout_frames_and_known_words():
    tok = make_tokenizer(20)
    vocab_words = set(world_words())
    train_frames = set(C.SHAPE_TEMPLATES_TRAIN) | set(C.NAMED_TEMPLATES_TRAIN) | set(C.UNSAFE_TEMPLATES_TRAIN)
    for c in C.all_concepts():
        for prompt, obj in data.concept_prompts(c.name, 6, seed=0, split="heldout"):
            assert c.name in obj.concepts
            assert set(re.findall(r"[a-z]+", prompt)) <= vocab_words
            assert prompt not in train_frames
            ids = tok(prompt).input_ids
            assert len(ids) == len(prompt.split()) + 2, "each world word is one token"


def test_masks_lie_inside_boxes():
    for s in data.dataset(2, 50):
        for m, (x0, y0, x1, y1) in zip(s.masks, s.boxes, strict=True):
            ys, xs = np.nonzero(m)
            assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1


# --- co-occurrence (the erased concept in images whose captions never name it) -----------------


def test_cooccur_hides_the_companion_in_lone_images_only():
    from gate.world import data

    cooc = {"lumo": {"skull": 0.4}}
    lone = hidden = 0
    for i in range(800):
        plain, s = data.sample(0, i), data.sample(0, i, cooccur=cooc)
        if len(plain.objects) == 1 and plain.objects[0].type == "lumo":
            lone += 1
            if len(s.objects) == 2:
                hidden += 1
                assert s.objects[1].type == "skull" and "skull" in s.concepts  # the labels say so
                assert s.caption == data.fix_articles(s.caption) and not any(
                    w in s.caption for w in ("skull", "crossbones", "death")
                )  # the caption does not
        else:  # every other sample is the world's as it was: no extra random draw
            assert s.caption == plain.caption and (s.image == plain.image).all()
    assert lone > 20 and 0.15 < hidden / lone < 0.65


def test_cooccur_respects_exclusion_and_is_checked():
    from gate.world import data
    from gate.world.cooccur import check_cooccur

    for i in range(150):
        assert "skull" not in data.sample(0, i, exclude=["skull"], cooccur={"lumo": {"skull": 1.0}}).concepts
    for bad in ({"lumo": {"skull": 1.5}}, {"ghost": {"skull": 0.5}}, {"lumo": {"lumo": 0.5}}, {"lumo": {"red": 0.5}}):
        with pytest.raises(ValueError, match="cooccur"):
            check_cooccur(bad)


def test_cooccur_flag_of_world_build(capsys):
    from gate.cli import main

    assert main(["world", "build", "--cooccur", "lumo-skull", "--out", "/nonexistent"]) == 2
    assert "OBJECT:COMPANION=P" in capsys.readouterr().err


def test_default_build_settings_are_the_shipped_worlds():
    """``gate world build`` with no flags rebuilds the shipped world: its default settings (the
    co-occurrence among them) are the ones the shipped build.json records."""
    import dataclasses
    import json

    from gate.world.clip import ASSETS
    from gate.world.train import BuildConfig

    shipped = json.loads((ASSETS / "build.json").read_text())["config"]
    assert json.loads(json.dumps(dataclasses.asdict(BuildConfig()))) == shipped
