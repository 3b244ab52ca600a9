"""``gate.seeds``: every seed derivation of the project, importable without torch."""

from __future__ import annotations

import subprocess
import sys

from gate.seeds import image_seed, image_set_seeds, sample_seeds


def test_sample_seeds_are_the_measurements_formula():
    assert sample_seeds(1_000_003, 3) == [1_000_004, 1_007_923, 1_015_842]
    assert sample_seeds(0, 0) == []
    s = sample_seeds(5, 200)
    assert s == [5 + 7919 * i + 1 for i in range(200)] and len(set(s)) == 200
    assert sample_seeds(5, 10) == s[:10]  # a longer measurement extends a shorter one


def test_image_set_seeds_keep_the_presets_values():
    assert image_set_seeds(0, 3) == [0, 1, 2]
    assert image_set_seeds(2, 3) == [2_000_006, 2_000_007, 2_000_008]
    # the retain set (seed + 1) does not share seeds with the forget set (seed) for sets below 1_000_003 images
    assert not set(image_set_seeds(7, 64)) & set(image_set_seeds(8, 64))


def test_image_seed_is_stable_and_the_probes_use_it():
    import gate.probes

    assert gate.probes.image_seed is image_seed
    assert image_seed(1, "skull", "concept", "a skull", 0) == 2536722289607356386  # the value before the move
    assert 0 <= image_seed(2, "x", "retained", "y", 3) < 2**63 - 1


def test_seeds_do_not_import_torch():
    code = "import sys, gate.seeds; assert 'torch' not in sys.modules, 'gate.seeds imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
