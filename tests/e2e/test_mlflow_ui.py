"""The link the gate prints for a run opens the run list in a real MLflow UI (a local server on
loopback, headless Chromium), not MLflow 3's GenAI overview, and names the candidate it judged."""

from __future__ import annotations

import html
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gate.tracking import log_report, ui_link
from tests.e2e.test_browser import _run
from tests.unit.test_one_path import _report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _text(dom: str) -> str:
    t = re.sub(r"<(style|script).*?</\1>", "", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", t)))


@pytest.fixture
def server(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rep = _report()
    rep.pull_request = {"number": "7", "candidate": "loras/skull/new-style.safetensors"}
    tracked = log_report(rep, None, uri=uri, model_line="skull")
    port = _free_port()
    exe = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(exe), "server", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start on loopback within 90 s")
        yield f"http://127.0.0.1:{port}", tracked
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_printed_link_opens_the_runs_not_the_genai_overview(server):
    host, tracked = server
    experiment = ui_link(tracked, host).split("/runs/")[0] + "?workflowType=machine_learning"
    page = _text(_run(["--virtual-time-budget=20000", "--dump-dom", experiment]).stdout)
    assert "skull: loras/skull/new-style.safetensors @" in page, page[:1500]  # the run list, by candidate
    assert "Token Usage" not in page  # the GenAI overview's panel
    run_page = _text(_run(["--virtual-time-budget=20000", "--dump-dom", ui_link(tracked, host)]).stdout)
    assert "skull: loras/skull/new-style.safetensors" in run_page and "gate.pr.number" in run_page, run_page[:1500]
