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
