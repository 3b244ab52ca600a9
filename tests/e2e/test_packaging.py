"""The wheel carries what the embedded default needs: the small world's policy as package data,
its detector's entry point, and the world's models (the demo runs from an installed wheel)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_the_world_policy_and_detector_entry_point(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("resurgence_gate-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "gate/world/policies/small-world.yaml" in names
    assert "gate/world/assets/sd/model_index.json" in names and "gate/world/assets/clip/world-clip.safetensors" in names
    assert "gate/world/zoo/demo.json" in names
    assert {f"gate/certify/recipes/{r}.yaml" for r in ("small-world", "sd1", "sd2")} <= names  # gate certify
    assert (
        "[resurgence_gate.detectors]" in entry_points
        and "world_clip = gate.world.detector:WorldCLIPDetector" in entry_points
    )
