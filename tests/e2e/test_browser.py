"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` package, which
``make test`` installs when it is missing) loads the page; the test checks that it loads, that
every image displays (the page's own load check sets ``data-images-loaded``) and that the verdict
table is there. The screenshot is kept under ``out/test-artifacts/`` (or $GATE_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]
POLICY3 = str(REPO / "tests" / "policies" / "three-concepts.yaml")
ARTIFACTS = Path(os.environ.get("GATE_TEST_ARTIFACTS", REPO / "out" / "test-artifacts"))


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "no Chromium on this machine: `make test` installs Debian's chromium package (apt-get install chromium)"
    )


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars"]  # fmt: skip
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def report_dir(zoo, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report"
    main(["check", "--checkpoint", zoo["checkpoint"], "--original", zoo["original"], "--update", zoo["resurgent"],
          "--policy", POLICY3, "--cache-dir", cache_dir, "--report-dir", str(out), "--no-track"])  # fmt: skip
    return out


def test_report_renders_in_headless_chromium(report_dir):
    url = (report_dir / "report.html").as_uri()
    dom = _run(["--virtual-time-budget=10000", "--dump-dom", url])
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, "the page did not load"
    total = int(re.search(r'data-images-total="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body.group(0)).group(1))
    assert total >= 8 and loaded == total, f"{loaded} of {total} images displayed"
    assert 'id="verdict-table"' in dom.stdout and "Resurgence gate: FAIL" in dom.stdout
    assert dom.stdout.count("<tr class=") == 11  # one row per rule of the three concepts
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    res = _run(["--window-size=1280,2000", f"--screenshot={shot}", url])
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((64, 100)).getcolors(64 * 100)
        assert colours is not None and len(colours) > 20  # not a blank page


def test_a_page_without_its_images_says_so(report_dir, tmp_path):
    moved = tmp_path / "alone"
    moved.mkdir()
    shutil.copy(report_dir / "report.html", moved / "report.html")  # images/ left behind
    dom = _run(["--virtual-time-budget=10000", "--dump-dom", (moved / "report.html").as_uri()])
    assert 'data-images-loaded="0"' in dom.stdout and "images did not load" in dom.stdout
