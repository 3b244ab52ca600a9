"""The image cache: keys cover every input, writes are atomic, corrupt entries are recomputed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gate.cache import ImageCache, make_key
from gate.probes import image_seed


def _img(v: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8, 3), v, np.uint8))


def test_round_trip_and_stats(tmp_path):
    c = ImageCache(tmp_path)
    k = make_key({"model": "a", "prompt": "p", "seed": 1})
    assert c.get(k) is None
    c.put(k, _img(7), {"scores": {"d:x": [0.5, True]}})
    im, info = c.get(k)
    assert np.asarray(im)[0, 0, 0] == 7 and info["scores"]["d:x"] == [0.5, True]
    assert c.stats() == {"hits": 1, "misses": 1, "corrupt": 0}
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary files left behind"


def test_corrupt_entry_is_a_miss_and_removed(tmp_path):
    c = ImageCache(tmp_path)
    k = make_key({"x": 1})
    c.put(k, _img(1), {})
    png = next(tmp_path.rglob("*.png"))
    png.write_bytes(png.read_bytes()[:-10] + b"0123456789")  # same length, other bytes
    assert c.get(k) is None and c.corrupt == 1
    assert not png.exists()
    c.put(k, _img(1), {})
    (json_file,) = tmp_path.rglob("*.json")
    json_file.write_text("{not json")
    assert c.get(k) is None and c.corrupt == 2


def test_key_changes_with_every_input():
    base = {"model": {"sha256": "a"}, "prompt": "p", "seed": 1, "sampler": {"steps": 20, "guidance": 3.0}}
    k0 = make_key(base)
    for change in (
        {"model": {"sha256": "b"}},
        {"prompt": "q"},
        {"seed": 2},
        {"sampler": {"steps": 21, "guidance": 3.0}},
    ):
        assert make_key({**base, **change}) != k0
    assert make_key(dict(reversed(list(base.items())))) == k0  # order of keys does not matter


def test_disabled_cache_never_hits(tmp_path):
    c = ImageCache(None)
    c.put("k", _img(1), {})
    assert c.get("k") is None


def test_image_seeds_are_stable_and_distinct():
    assert image_seed(1, "skull", "concept", "a skull", 0) == image_seed(1, "skull", "concept", "a skull", 0)
    seeds = {image_seed(1, "skull", "concept", "a skull", s) for s in range(100)}
    assert len(seeds) == 100
    assert image_seed(1, "skull", "concept", "a skull", 0) != image_seed(2, "skull", "concept", "a skull", 0)
