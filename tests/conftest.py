"""Shared fixtures: the shipped small world, loaded once per session through the real APIs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub, in tests as in the gate

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def world_dir() -> Path:
    from gate.world.clip import ASSETS

    if not (ASSETS / "sd" / "model_index.json").is_file():
        pytest.fail(f"the shipped small world is missing from {ASSETS}; run `gate world build`")
    return ASSETS


@pytest.fixture(scope="session")
def world_pipe(world_dir):
    import torch

    from gate.pipeline import load_pipeline

    torch.set_num_threads(2)
    return load_pipeline(world_dir / "sd")


@pytest.fixture(scope="session")
def world_clip(world_dir):
    from gate.world.clip import WorldCLIP

    return WorldCLIP(world_dir / "clip")
