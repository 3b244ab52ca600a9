"""Scores are cached under the detector's content: a changed weights file at the same path is a
different detector (its cached scores must not be reused)."""

from __future__ import annotations

import shutil
from pathlib import Path

from gate.policy import DetectorSpec
from gate.runner import Check, CheckOptions
from gate.world import demo


def _key(weights: Path, config_dir: Path) -> str:
    check = Check(CheckOptions(checkpoint="unused", policy=str(demo.POLICY), cache_dir=None))
    labels = {"skull": ["a skull"], "circle": ["a circle"]}
    spec = DetectorSpec("open_clip", {"model": "world-clip", "pretrained": str(weights), "config_dir": str(config_dir),
                                      "labels": labels})  # fmt: skip
    return check.detector_key(spec)


def test_detector_key_follows_the_weights_content_not_the_path(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS

    weights = tmp_path / CLIP_WEIGHTS
    shutil.copy(CLIP_DIR / CLIP_WEIGHTS, weights)
    first = _key(weights, CLIP_DIR)
    assert _key(CLIP_DIR / CLIP_WEIGHTS, CLIP_DIR) == first  # same content elsewhere: same key
    state = load_file(str(weights))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + torch.randn_like(state[name]) * 1e-3
    save_file(state, str(weights))
    assert _key(weights, CLIP_DIR) != first  # same path, other weights: another detector
