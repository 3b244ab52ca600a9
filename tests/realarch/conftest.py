"""The real-architecture tier: SD v1.4- and v2.1-size pipelines with random weights in the real
file formats (``gate.realarch``), and ``gate check`` run on them as a user runs it.

Models and updates are built once into a cache folder, ``$GATE_REALARCH_CACHE`` (default
``<repo>/.realarch-cache/``, about 12 GB), in subprocesses (``python -m gate.realarch``) so that
this process never holds an SD-size model it does not test. Every test here is marked
``realarch``; run the tier with ``pytest tests/realarch -m realarch``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "tests" / "policies"
HERE = Path(__file__).resolve().parent
CLIP_FILE = "open_clip-ViT-L-14-random.safetensors"  # the name tests/policies/realarch-*.yaml expect


def pytest_configure(config):
    config.addinivalue_line("markers", "realarch: SD-size models with random weights (tests/realarch/; minutes)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker("realarch")


@pytest.fixture(scope="session")
def realarch_cache() -> Path:
    path = Path(os.environ.get("GATE_REALARCH_CACHE") or REPO / ".realarch-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _make(*args: str | Path) -> Path:
    """``python -m gate.realarch ARGS`` (built once; the printed path). A target that exists
    already is used as it is, without a subprocess (importing torch and diffusers costs seconds)."""
    from gate.realarch import cache_key

    what, *rest = map(str, args)
    target = Path(rest[1]) / f"{rest[0]}-{cache_key(rest[0])}" if what == "ensure" else Path(rest[-1])
    if target.exists():
        return target
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "gate.realarch", what, *rest], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"python -m gate.realarch {what} {' '.join(rest)} failed:\n{out.stderr[-3000:]}")
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == target, (path, target)
    print(f"realarch: {what} -> {path} ({time.perf_counter() - t0:.1f} s)")
    return path


def _updates(folder: Path) -> Path:
    """Where a pipeline folder's updates live: beside it, never inside (that would change its hash)."""
    return folder.parent / f"{folder.name}.updates"


@pytest.fixture(scope="session")
def sd14_dir(realarch_cache) -> Path:
    return _make("ensure", "sd14", realarch_cache)


@pytest.fixture(scope="session")
def sd21_dir(realarch_cache) -> Path:
    return _make("ensure", "sd21", realarch_cache)


@pytest.fixture(scope="session")
def clip_l14_file(realarch_cache) -> Path:
    return _make("open-clip-l14", realarch_cache / CLIP_FILE)


@pytest.fixture(scope="session")
def sd14_peft_lora(sd14_dir) -> Path:
    return _make("peft-lora", sd14_dir, _updates(sd14_dir) / "peft-lora")


@pytest.fixture(scope="session")
def sd14_kohya_lora(sd14_dir) -> Path:
    return _make("kohya-lora", sd14_dir, _updates(sd14_dir) / "kohya-lora.safetensors")


@pytest.fixture(scope="session")
def sd21_peft_lora(sd21_dir) -> Path:
    return _make("peft-lora", sd21_dir, _updates(sd21_dir) / "peft-lora")


@contextlib.contextmanager
def _transient(what: str, folder: Path, out: Path) -> Iterator[Path]:
    """An SD-size derived file or folder (a bare UNet folder, a single-file checkpoint: 3-5 GB
    each) made for the tests that need it and deleted after them: the cache keeps only the
    pipelines, the detector and the LoRAs, so the tier's disk use stays about 12 GB."""
    from gate.realarch.build import _remove

    path = _make(what, folder, out)
    try:
        yield path
    finally:
        _remove(path)


@pytest.fixture(scope="session")
def transient():
    """``with transient(what, folder, out) as path``: see ``_transient``."""
    return _transient


@pytest.fixture(scope="session")
def objects_on_folder(gate_check, realarch_policy, sd14_dir, sd14_kohya_lora):
    """The kohya LoRA on the sd14 folder with the all-CLIP policy (test_check and test_single_file)."""
    return gate_check(
        "--checkpoint", sd14_dir, "--update", sd14_kohya_lora, "--policy", realarch_policy("sd14-objects"),
        "--no-prescreen", name="sd14-kohya",
    )  # fmt: skip


@pytest.fixture(scope="session")
def realarch_policy(tmp_path_factory, clip_l14_file):
    """policy name -> a policy file that includes tests/policies/realarch-<name>.yaml with the
    ViT-L-14 detector pointed at the file this session uses (the cache may be elsewhere)."""
    folder = tmp_path_factory.mktemp("realarch-policies")

    def policy(name: str) -> Path:
        path = folder / f"realarch-{name}.yaml"
        if not path.is_file():
            text = {
                "version": 1,
                "include": str(POLICIES / f"realarch-{name}.yaml"),
                "detectors": {"clip-l14": {"pretrained": str(clip_l14_file)}},
            }
            path.write_text(json.dumps(text))  # JSON is YAML
        return path

    return policy


@dataclass
class Checked:
    rc: int
    report: dict
    output: str
    seconds: float


@pytest.fixture(scope="session")
def gate_check(cache_dir, tmp_path_factory):
    """Runs ``gate check ARGS --device cpu --no-track`` in a subprocess with the session's shared
    image cache; returns its exit code, report.json, output and wall time."""
    gate = Path(sys.executable).parent / "gate"

    def run(*args: str | Path, name: str) -> Checked:
        report_dir = tmp_path_factory.mktemp(f"report-{name}")
        cmd = [str(gate), "check", *map(str, args), "--device", "cpu", "--cache-dir", cache_dir,
               "--report-dir", str(report_dir), "--no-track"]  # fmt: skip
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "160"})
        seconds = time.perf_counter() - t0
        output = out.stdout + out.stderr
        print(f"gate check ({name}): exit {out.returncode} in {seconds:.1f} s")
        report_file = report_dir / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
        return Checked(out.returncode, report, output, seconds)

    return run


def _reached_a_verdict(checked, update_kind: str, update_path) -> dict:
    assert checked.rc in (0, 1), checked.output[-4000:]
    rep = checked.report
    assert rep, f"no report.json:\n{checked.output[-4000:]}"
    assert (
        rep["verdict"] in ("pass", "fail")
        and ("VERDICT: PASS" if checked.rc == 0 else "VERDICT: FAIL") in checked.output
    )
    upd = rep["inputs"]["update"]
    assert upd["kind"] == update_kind and upd["path"] == str(update_path) and len(upd["sha256"]) == 64, upd
    assert rep["sampler"]["height"] == 64 and rep["sampler"]["steps"] == 2
    # the update was applied: some image scores differently (the random ViT-L-14's probabilities
    # move with any change of the image; NudeNet finds nothing in random-weight images)
    pairs = [(b, c) for *_, b, c in _scores(rep) if b is not None and c is not None]
    assert pairs and any(b != c for b, c in pairs), f"the update left every image's score unchanged: {pairs}"
    return rep


def _scores(rep: dict) -> list[tuple]:
    """Every per-image score a report lists, by rule, prompt and seed (baseline and candidate)."""
    return sorted(
        (r["rule"], w["prompt"], w["seed"], w.get("baseline_score"), w.get("candidate_score"))
        for c in rep["concepts"] for r in c["rules"] for w in r.get("worst") or []
    )  # fmt: skip


@pytest.fixture(scope="session")
def reached_a_verdict():
    """``reached_a_verdict(checked, update_kind, update_path)``: exit 0 or 1, report.json naming
    the update, and images the update changed."""
    return _reached_a_verdict


@pytest.fixture(scope="session")
def report_scores():
    """``report_scores(report)``: every per-image score a report lists."""
    return _scores
