"""The world commands that load the shipped small world's models (the fast CLI tests are in
tests/unit/test_cli.py)."""

from __future__ import annotations

import json

from gate.cli import main
from gate.world import concepts as C


def test_world_eval_json_last_line(capsys, world_dir):
    assert main(["world", "eval", "--json", "--n-clip", "40", "--n-per-concept", "1", "--steps", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    q = json.loads(last)
    assert {"shape", "color"} <= set(q["clip_accuracy"])
    assert set(q["sd_fidelity"]) == {c.name for c in C.all_concepts()}
    assert q["images_per_second"] > 0


def test_world_show_writes_png(tmp_path, world_dir, capsys):
    from PIL import Image

    out = tmp_path / "grid.png"
    assert main(["world", "show", "--out", str(out), "--n", "2", "--steps", "2"]) == 0
    im = Image.open(out)
    assert im.size[1] == len(C.all_concepts()) * (32 * 3 + 2)
