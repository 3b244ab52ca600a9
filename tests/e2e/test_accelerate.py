"""A check split across two processes with accelerate (the way a runner with several GPUs runs
it), here on the CPU with gloo since no GPU is at hand: the images, figures and verdict equal
the single-process run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TINY = Path(__file__).parents[1] / "policies" / "tiny.yaml"


def _check(zoo, tmp: Path, name: str, launcher: list[str]) -> tuple[int, dict, Path]:
    cache = tmp / f"cache-{name}"
    out = tmp / f"report-{name}"
    cmd = [
        *launcher, "check", "--checkpoint", zoo["checkpoint"], "--update", zoo["resurgent"],
        "--original", zoo["original"], "--policy", str(TINY), "--cache-dir", str(cache),
        "--report-dir", str(out), "--no-track", "--no-prescreen", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert (out / "report.json").is_file(), p.stdout[-2000:] + p.stderr[-4000:]
    return p.returncode, json.loads((out / "report.json").read_text()), cache


def _images(cache: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in cache.rglob("*.png")}


def test_two_processes_make_the_same_check(zoo, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    two = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "gate"]  # fmt: skip
    code2, rep2, cache2 = _check(zoo, tmp_path, "two", two)
    code1, rep1, cache1 = _check(zoo, tmp_path, "one", [sys.executable, "-m", "gate"])
    assert rep2["verdict"] == rep1["verdict"]
    assert (code2 == 0) == (code1 == 0)  # accelerate reports any failing process as exit 1
    for a, b in zip(rep1["concepts"], rep2["concepts"], strict=True):
        assert a["rules"] == b["rules"]
    imgs1, imgs2 = _images(cache1), _images(cache2)
    assert imgs1 and imgs1 == imgs2  # the same images under the same keys, byte for byte


def test_gpu_benchmark_runs_at_tiny_size_on_the_cpu(tmp_path):
    """benchmarks/gpu.py is for a CUDA GPU; --tiny runs its measurement on the CPU so that the
    script is tested here (its figures say nothing about a GPU)."""
    script = Path(__file__).parents[2] / "benchmarks" / "gpu.py"
    p = subprocess.run([sys.executable, str(script), "--tiny", "--images", "8", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    row = json.loads((tmp_path / "tiny-cpu.json").read_text())
    assert row["images"] == 8 and row["unet_calls"] > 0 and 0 < row["unet_share_of_wall"] <= 1
    assert row["images_per_s"] > 0 and row["images_per_s_limit"] > 0 and row["peak_gpu_memory_gb"] is None
    p = subprocess.run([sys.executable, str(script), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "measures a CUDA GPU" in p.stderr
