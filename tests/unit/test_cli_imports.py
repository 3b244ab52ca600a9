"""The CLI starts without the heavy libraries: ``gate --help`` and ``gate validate`` import no
torch, diffusers or open_clip (each command imports what it needs when it runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "open_clip")


def _loaded_after(argv: list[str]) -> dict:
    code = (
        "import contextlib, io, json, sys\n"
        "from gate.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        rc = main({argv!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        f"print(json.dumps({{'rc': rc, 'out': out.getvalue(), 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    if res.stderr:  # a gate error goes to stderr; show it with the failing assertion
        print(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "expect"),
    [(["--help"], "COMMAND"), (["validate", "policies/small-world.yaml"], ": ok: policy")],
)
def test_start_up_imports_nothing_heavy(argv, expect):
    got = _loaded_after(argv)
    assert got["heavy"] == []
    assert got["rc"] == 0
    assert expect in got["out"]


def test_merge_and_annotate_import_nothing_heavy(tmp_path):
    """Reports are read, merged and annotated on a CPU-only merge job: no torch there either."""
    from tests.unit.test_one_path import _report

    for i, name in ((1, "a"), (2, "b")):
        rep = _report()
        rep.shard = [i, 2]
        rep.concepts[0].name = f"concept-{name}"
        for r in rep.concepts[0].rules:
            r.concept = f"concept-{name}"
        (tmp_path / f"{name}.json").write_text(rep.dumps())
    got = _loaded_after(
        ["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--report-dir", str(tmp_path / "m")]
    )
    assert got["heavy"] == [] and got["rc"] == 1 and "VERDICT: FAIL (2 concepts" in got["out"]
    got = _loaded_after(["annotate", str(tmp_path / "m" / "report.json"), "--summary", str(tmp_path / "s.md")])
    assert got["heavy"] == [] and "::error" in got["out"]
