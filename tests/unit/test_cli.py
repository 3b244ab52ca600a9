"""The command line: fast help without torch, exit codes, and the world commands."""

from __future__ import annotations

import json
import subprocess
import sys

from gate.cli import main
from gate.world import concepts as C


def test_help_lists_commands_and_imports_no_torch():
    code = (
        "import sys; from gate.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "world" in out
    assert out.strip().endswith("False")


def test_unknown_concept_exits_2_with_one_line(capsys, tmp_path):
    assert main(["world", "data", "--exclude", "blob", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--exclude 'blob'" in err and "Traceback" not in err


def test_missing_world_folder_exits_2(capsys, tmp_path):
    assert main(["world", "eval", "--world", str(tmp_path)]) == 2
    assert "no small world there" in capsys.readouterr().err


def test_world_data_excludes_concept(tmp_path, capsys):
    out = tmp_path / "benign"
    assert main(["world", "data", "--exclude", "circle", "--n", "60", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and all((out / r["file_name"]).is_file() for r in rows)
    assert all("circle" not in r["labels"]["concepts"] for r in rows)
    assert not any(w in r["text"] for r in rows for w in C.SHAPES["circle"])


def test_world_data_require_with_masks(tmp_path):
    from PIL import Image

    out = tmp_path / "forget"
    assert main(["world", "data", "--require", "skull", "--masks", "--n", "12", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all("skull" in r["labels"]["concepts"] for r in rows)
    for r in rows:
        m = Image.open(out / r["mask_file"])
        assert m.size == (32, 32) and 10 < sum(v > 0 for v in m.getdata()) < 32 * 32


def test_world_build_rejects_unknown_stage(capsys, tmp_path):
    assert main(["world", "build", "--stages", "unet", "--out", str(tmp_path)]) == 2
    assert "stages are vae, clip, sd" in capsys.readouterr().err
