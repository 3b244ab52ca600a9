"""The study's outputs are a function of its rows: the shipped ``results/study`` tables come out of
the shipped ``rows.jsonl`` byte for byte, and the package keeps its public API."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "results" / "study"


@pytest.fixture(scope="module")
def shipped():
    from gate.world.study import read_rows, table

    if not (SHIPPED / "rows.jsonl").is_file():
        pytest.skip("no shipped study rows")
    rows = read_rows(SHIPPED / "rows.jsonl")
    return rows, table(rows)


def test_shipped_csv_is_reproduced_from_the_rows(shipped, tmp_path):
    from gate.world.study import write_csv

    _, recs = shipped
    write_csv(tmp_path / "results.csv", recs)
    assert (tmp_path / "results.csv").read_bytes() == (SHIPPED / "results.csv").read_bytes()


def test_shipped_markdown_is_reproduced_from_the_rows(shipped, tmp_path, monkeypatch):
    from gate.world.study import load_config, markdown

    monkeypatch.chdir(REPO)
    cfg = dataclasses.replace(load_config("studies/small-world.yaml"), out=tmp_path)
    want = (SHIPPED / "results.md").read_text()
    if "Measured on the world build" in want:  # the line written when world.json is beside the results
        shutil.copy(SHIPPED / "world.json", tmp_path / "world.json")
    assert markdown(cfg, shipped[1]) == want


def test_rows_round_trip_and_a_cut_line_is_dropped(tmp_path):
    from gate.world.study import bits, rate, read_rows, unbits
    from gate.world.study.rows import append_row

    assert bits([True, False, True]) == "101" and unbits("101") == [True, False, True] and rate("1100") == 0.5
    path = tmp_path / "out" / "rows.jsonl"
    assert read_rows(path) == {}
    a = append_row(path, "a", {"hits": "10"})
    append_row(path, "b", {"hits": "11"})
    assert read_rows(path) == {"a": a, "b": read_rows(path)["b"]} and a["key"] == "a" and "time" in a
    path.write_text(path.read_text()[:-10])  # the last row cut mid-line by an interruption
    assert list(read_rows(path)) == ["a"]
    assert path.read_text().endswith("\n")  # the file keeps the whole rows only


def test_the_package_is_cheap_to_import():
    import subprocess

    code = "import sys, gate.world.study; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_name_of_a_rows_tag_is_the_folder_the_runner_erases_into(tmp_path, monkeypatch):
    """The pre-screen validation reads unlearned models by a row's tag; a strength level's tag
    (``esd-x@<hash>``) must give the folder the runner writes (``esd-x-skull@<hash>``)."""
    from gate.world.study import load_config
    from gate.world.study.rows import model_name
    from gate.world.study.runner import Study

    assert model_name("esd-x", "skull") == "esd-x-skull"
    assert model_name("esd-x@7c9fdfa5", "skull") == "esd-x-skull@7c9fdfa5"
    monkeypatch.chdir(REPO)
    cfg = dataclasses.replace(load_config("studies/small-world.yaml"), out=tmp_path / "out", work=tmp_path / "work")
    # the unit tier loads no model: the erasure itself is replaced by making its output folder
    # (erasing is tested in tests/integration); what is checked is where the runner puts it
    monkeypatch.setattr("gate.unlearn.base.erase", lambda orig, tmp, *a, **k: tmp.mkdir(parents=True))
    folder = Study(cfg, log=lambda m: None).unlearned("esd-x", "skull", {"iterations": 25}, "@7c9fdfa5")
    assert folder == tmp_path / "work" / "models" / model_name("esd-x@7c9fdfa5", "skull") and folder.is_dir()
