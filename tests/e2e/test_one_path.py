"""One check path for ``gate check`` and ``pytest probes/``: the same report for the same inputs,
a check without ``--original`` that ends with its verdict, and a cache keyed by content."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "tests" / "policies" / "tiny.yaml")
# fields that say when and how fast a run was, not what it found
VOLATILE = ("timings_s", "wall_time_s", "finished_at", "cache")


def _comparable(rep: dict) -> dict:
    rep = {k: v for k, v in rep.items() if k not in VOLATILE}
    for screen in (rep.get("prescreen") or {}).values():
        screen.pop("seconds", None)
        screen.pop("stages_s", None)  # how long each pre-screen stage took
    return rep


def test_cli_and_pytest_plugin_write_identical_reports(zoo, tmp_path, cache_dir):
    common = ["--checkpoint", zoo["checkpoint"], "--update", zoo["relearn"], "--original", zoo["original"],
              "--policy", TINY]  # fmt: skip
    cli_dir = tmp_path / "cli"
    code = main(["check", *common, "--cache-dir", cache_dir, "--report-dir", str(cli_dir), "--no-track"])
    # pytest in a process of its own, as a user runs it (pytester's in-process module snapshot
    # would unload torch's modules that the CLI run above imported)
    probe = tmp_path / "probes"
    probe.mkdir()
    (probe / "test_probe.py").write_text(
        "from gate.plugin import check_rule\n\n\ndef test_rule(gate_rule, gate_result):\n    check_rule(gate_result)\n"
    )
    (probe / "pytest.ini").write_text("[pytest]\n")
    plug_dir = tmp_path / "plugin"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", str(probe), "-q", "-p", "no:cacheprovider", "-c", str(probe / "pytest.ini"), *common,
         "--gate-cache-dir", cache_dir, "--gate-report-dir", str(plug_dir), "--gate-no-track"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    cli_rep = json.loads((cli_dir / "report.json").read_text())
    plug_rep = json.loads((plug_dir / "report.json").read_text())
    assert _comparable(cli_rep) == _comparable(plug_rep)
    assert cli_rep["prescreen"]["skull"]["eps_undo"] == plug_rep["prescreen"]["skull"]["eps_undo"]  # both pre-screen
    summary = res.stdout.strip().splitlines()[-1]
    failed = int(summary.split(" failed")[0].split()[-1]) if " failed" in summary else 0
    failing = ("fail", "inconclusive") if cli_rep["inconclusive_counts_as"] == "fail" else ("fail",)
    n_fail = sum(r["verdict"] in failing for c in cli_rep["concepts"] for r in c["rules"])
    assert (code == 1) == (cli_rep["verdict"] == "fail") and failed == n_fail


def test_check_without_original_ends_with_its_verdict_reports_and_tracking(zoo, tmp_path, cache_dir, capsys):
    """The README's first usage line (no --original): max_resurgence is skipped, the run ends with
    the verdict's exit code, the three reports and an MLflow run (it crashed in the console table)."""
    out = tmp_path / "rep"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["check", "--checkpoint", zoo["checkpoint"], "--update", zoo["benign"], "--policy", TINY,
                 "--cache-dir", cache_dir, "--report-dir", str(out), "--tracking-uri", uri])  # fmt: skip
    captured = capsys.readouterr()
    assert (out / "report.json").is_file(), captured.err[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert code == (0 if rep["verdict"] == "pass" else 1), captured.err[-2000:]
    assert captured.out.strip().splitlines()[-1].startswith("VERDICT:")
    rules = {r["rule"]: r for c in rep["concepts"] for r in c["rules"]}
    assert rules["max_resurgence"]["verdict"] == "skipped" and "needs --original" in rules["max_resurgence"]["note"]
    assert (out / "summary.md").is_file() and (out / "report.html").is_file()
    assert "skipped" in captured.err and "internal error" not in captured.err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("resurgence-gate")
    runs = client.search_runs([exp.experiment_id], "tags.`gate.kind` = 'check'")
    assert len(runs) == 1 and runs[0].data.tags["gate.verdict"] == rep["verdict"]


def test_the_same_model_at_another_path_reuses_every_cached_image(zoo, tmp_path):
    """Cache keys hold content hashes, not paths: the base and head folders of a CI checkout, or
    a fresh clone, share the baseline images."""
    cache = str(tmp_path / "cache")
    args = ["--update", zoo["benign"], "--policy", TINY, "--cache-dir", cache, "--no-track", "--no-prescreen"]
    assert main(["check", "--checkpoint", zoo["checkpoint"], *args, "--report-dir", str(tmp_path / "a")]) in (0, 1)
    moved = tmp_path / "elsewhere" / "unlearned"
    shutil.copytree(zoo["checkpoint"], moved)
    lora = tmp_path / "elsewhere" / "lora.safetensors"
    shutil.copy(zoo["benign"], lora)
    args[1] = str(lora)
    assert main(["check", "--checkpoint", str(moved), *args, "--report-dir", str(tmp_path / "b")]) in (0, 1)
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    n_images = 2 * sum(r["n"] for c in a["concepts"] for r in c["rules"] if r["rule"] != "max_resurgence")
    assert b["cache"]["misses"] == 0 and b["cache"]["hits"] >= n_images // 2, b["cache"]
    assert b["inputs"]["checkpoint"]["sha256"] == a["inputs"]["checkpoint"]["sha256"]
    assert b["inputs"]["checkpoint"]["path"] != a["inputs"]["checkpoint"]["path"]
    assert [c["rules"] for c in a["concepts"]] == [c["rules"] for c in b["concepts"]]


def test_a_single_file_original_without_config_stops_before_any_image(zoo, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    orig = tmp_path / "sd14.safetensors"
    save_file({"x": torch.zeros(1)}, str(orig))
    cache = tmp_path / "cache"
    code = main(["check", "--checkpoint", zoo["checkpoint"], "--original", str(orig), "--policy", TINY,
                 "--cache-dir", str(cache), "--no-track", "--report-dir", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--original" in err and "needs --config" in err
    assert not cache.exists() or not any(cache.rglob("*.png"))  # nothing was generated
