"""Shared fixtures: the shipped small world, loaded once per session through the real APIs.

The tests come in three tiers, one folder each: unit/ (no model is loaded), integration/ (the small
world's models), e2e/ (whole gate runs). Each test gets its folder's marker, so
``pytest -m unit`` selects the same tests as ``pytest tests/unit``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub, in tests as in the gate
# gate check logs to MLflow by default; the tests' runs go to a store of their own, never the user's
os.environ["GATE_TRACKING_URI"] = f"sqlite:///{Path(tempfile.mkdtemp(prefix='gate-tests-mlflow-')) / 'mlflow.db'}"

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e", "realarch")
pytest_plugins = ["pytester"]


def pytest_collection_modifyitems(config, items):
    """Mark every test with its tier, the folder it lives in under tests/."""
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:  # outside tests/ (a pytester run's own files)
            continue
        if tier in TIERS:
            item.add_marker(tier)


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


@pytest.fixture(scope="session")
def zoo():
    from gate.world import zoo

    demo = json.loads((zoo.ZOO / "demo.json").read_text())
    return {
        "checkpoint": str(zoo.materialize(demo["checkpoint"])),
        "original": str(zoo.materialize("world")),
        "benign": str(zoo.update_path(demo["benign"])),
        "benign_kv": str(zoo.update_path(demo["benign_kv"])),
        "relearn": str(zoo.update_path(demo["relearn"])),
        "resurgent": str(zoo.update_path(demo["resurgent"])),
        "incidental": str(zoo.update_path(demo["incidental"])),
        "incidental_checkpoint": str(zoo.materialize(demo["incidental_checkpoint"])),
    }


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One baseline cache for every gate run of the session (the cache is content-addressed)."""
    return str(tmp_path_factory.mktemp("gate-cache"))
