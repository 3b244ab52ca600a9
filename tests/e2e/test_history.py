"""History and sharding: the gate's runs in a real MLflow store (sqlite), ``gate track`` and
``gate history``, shard reports merged into the unsharded verdict, GitHub annotations.

Real gate runs on the small world (a three-concept test policy with few samples), a real
MLflow sqlite store per test; nothing is mocked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]
POLICY3 = str(REPO / "tests" / "policies" / "three-concepts.yaml")


def check(zoo, cache_dir, out: Path, *extra: str, update: str = "resurgent") -> tuple[int, dict]:
    code = main(["check", "--checkpoint", zoo["checkpoint"], "--original", zoo["original"], "--update", zoo[update],
                 "--policy", POLICY3, "--cache-dir", cache_dir, "--report-dir", str(out), *extra])  # fmt: skip
    return code, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def runs(zoo, cache_dir, tmp_path_factory):
    """The resurgent candidate checked once whole and once as two shards, all in one store."""
    root = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    full = check(zoo, cache_dir, root / "full", "--tracking-uri", uri, "--model-line", "world-skull")
    s1 = check(zoo, cache_dir, root / "s1", "--shard", "1/2", "--no-track")
    s2 = check(zoo, cache_dir, root / "s2", "--shard", "2/2", "--no-track")
    return {"root": root, "uri": uri, "full": full, "s1": s1, "s2": s2}


def _figures(report):
    keys = ("observed", "low", "high", "baseline", "threshold", "verdict", "n", "worst")
    return {(c["name"], r["rule"]): {k: r.get(k) for k in keys} for c in report["concepts"] for r in c["rules"]}


# --- sharding -----------------------------------------------------------------------------


def test_shards_split_the_concepts_and_merge_to_the_unsharded_verdict(runs, capsys):
    (c_full, full), (_, s1), (_, s2) = runs["full"], runs["s1"], runs["s2"]
    n1 = {c["name"] for c in s1["concepts"]}
    n2 = {c["name"] for c in s2["concepts"]}
    assert n1 and n2 and not (n1 & n2) and n1 | n2 == {c["name"] for c in full["concepts"]}
    out = runs["root"] / "merged"
    code = main(["merge", str(runs["root"] / "s1" / "report.json"), str(runs["root"] / "s2" / "report.json"),
                 "--report-dir", str(out)])  # fmt: skip
    merged = json.loads((out / "report.json").read_text())
    assert code == c_full == 1 and merged["verdict"] == full["verdict"] == "fail"
    assert _figures(merged) == _figures(full)
    assert merged["inputs"] == full["inputs"] and merged["reproduce"] == full["reproduce"]
    assert set(merged["prescreen"]) == set(full["prescreen"]) == {"skull", "lumo", "star"}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("VERDICT: FAIL")
    # the merged HTML shows the shards' images
    html = (out / "report.html").read_text()
    srcs = re.findall(r"src='images/([^']+)'", html)
    assert srcs and all((out / "images" / s).is_file() for s in srcs)


def test_merge_refuses_reports_that_do_not_belong_together(runs, tmp_path, capsys):
    s1 = runs["root"] / "s1" / "report.json"
    s2 = runs["root"] / "s2" / "report.json"
    assert main(["merge", str(s1), "--report-dir", str(tmp_path / "a")]) == 2
    assert "missing [2]" in capsys.readouterr().err
    other = json.loads(s2.read_text())
    other["inputs"]["update"]["sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["merge", str(s1), str(tmp_path / "other.json"), "--report-dir", str(tmp_path / "b")]) == 2
    assert "'inputs' differs" in capsys.readouterr().err
    assert (
        main(["merge", str(s1), str(runs["root"] / "full" / "report.json"), "--report-dir", str(tmp_path / "c")]) == 2
    )
    assert "not a shard report" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["merge", str(tmp_path / "junk.json")]) == 2


# --- MLflow -------------------------------------------------------------------------------


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_check_logs_one_run_with_a_child_per_concept(runs):
    from gate.tracking import EXPERIMENT

    _, rep = runs["full"]
    client = _client(runs["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    parents = client.search_runs([exp.experiment_id], "tags.`gate.kind` = 'check'")
    assert len(parents) == 1
    run = parents[0]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["gate.verdict"] == "fail" and tags["gate.model_line"] == "world-skull"
    for name in ("checkpoint", "update", "original", "policy"):
        assert tags[f"input.{name}.sha256"] == rep["inputs"][name]["sha256"]
    assert tags["policy.version"] == "1" and tags["lib.torch"] == rep["libraries"]["torch"]
    assert tags["mlflow.source.git.commit"] == rep["git_commit"]
    for c in rep["concepts"]:
        for r in c["rules"]:
            assert metrics[f"{c['name']}.{r['rule']}.observed"] == pytest.approx(r["observed"])
            assert (
                metrics[f"{c['name']}.{r['rule']}.failed"]
                == {"pass": 0.0, "fail": 1.0, "inconclusive": 0.5}[r["verdict"]]
            )
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(ch.data.tags["gate.concept"] for ch in children) == sorted(c["name"] for c in rep["concepts"])
    skull = next(ch for ch in children if ch.data.tags["gate.concept"] == "skull")
    assert skull.data.tags["gate.verdict"] == "fail" and skull.data.metrics["max_resurgence.observed"] >= 0.3
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.json", "report/summary.md", "report/report.html", "report/images"} <= arts
    assert run.info.status == "FINISHED" and all(ch.info.status == "FINISHED" for ch in children)


def test_tracking_failure_keeps_the_verdict_and_gate_track_logs_it_later(zoo, cache_dir, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    code, rep = check(zoo, cache_dir, tmp_path / "rep", "--tracking-uri", f"sqlite:///{blocker}/mlflow.db")
    captured = capsys.readouterr()
    assert code == 1 and rep["verdict"] == "fail"  # the verdict's exit code, not a tool error
    assert "MLflow tracking failed" in captured.err and "gate track" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("VERDICT: FAIL")
    good = f"sqlite:///{tmp_path / 'good.db'}"
    assert main(["track", str(tmp_path / "rep" / "report.json"), "--tracking-uri", good]) == 0
    assert main(["track", str(tmp_path / "rep" / "report.json"), "--tracking-uri", good]) == 0
    assert "already logged" in capsys.readouterr().out
    from gate.tracking import EXPERIMENT

    client = _client(good)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_runs([exp.experiment_id], "tags.`gate.kind` = 'check'")) == 1


def test_a_users_active_run_is_left_alone(zoo, cache_dir, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'user.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as mine:
        mlflow.log_metric("users.own.metric", 1.0)
        check(zoo, cache_dir, tmp_path / "rep", "--tracking-uri", uri)
        active = mlflow.active_run()
        assert active is not None and active.info.run_id == mine.info.run_id
        assert _client(uri).get_run(mine.info.run_id).info.status == "RUNNING"
    run = _client(uri).get_run(mine.info.run_id)
    assert set(run.data.metrics) == {"users.own.metric"}  # the gate logged nothing into it


def test_history_table_and_plot(runs, zoo, cache_dir, capsys):
    # a second candidate on the same model line: the benign LoRA that does not resurge
    check(zoo, cache_dir, runs["root"] / "benign", "--tracking-uri", runs["uri"], "--model-line", "world-skull",
          update="benign")  # fmt: skip
    capsys.readouterr()
    plot = runs["root"] / "history.png"
    code = main(["history", "--tracking-uri", runs["uri"], "--model-line", "world-skull", "--concept", "skull",
                 "--plot", str(plot)])  # fmt: skip
    res = capsys.readouterr()
    out = res.out
    assert code == 0, res.err
    assert "2 runs" in out and "skull.max_resurgence" in out
    from gate.tracking import history

    rows = history(uri=runs["uri"], model_line="world-skull")
    assert [r.verdict for r in rows] == ["fail", "fail"]  # lumo and star were never erased: both fail
    res = [r.values["skull.max_resurgence"]["observed"] for r in rows]
    assert res[0] >= 0.3 > res[1]  # resurgent first, then the benign LoRA
    assert f"{res[0]:.3f} x" in out and f"{res[1]:.3f}" in out  # x marks a failed rule
    from PIL import Image

    with Image.open(plot) as im:
        assert im.size[0] > 300 and im.size[1] > 300
    assert main(["history", "--tracking-uri", runs["uri"], "--model-line", "no-such-line"]) == 2


def test_readme_mlflow_ui_command_points_at_the_default_store(zoo, cache_dir, tmp_path, monkeypatch):
    """The README's `mlflow ui --backend-store-uri ...` opens the store gate check writes to by default."""
    readme = (REPO / "README.md").read_text()
    m = re.search(r"mlflow ui --backend-store-uri (\S+)", readme)
    assert m, "README must show how to open the runs with mlflow ui"
    monkeypatch.delenv("GATE_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    check(zoo, cache_dir, tmp_path / "rep")
    uri = m.group(1).replace("sqlite:///", f"sqlite:///{tmp_path}/", 1)
    from gate.tracking import EXPERIMENT

    client = _client(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None and len(client.search_runs([exp.experiment_id], "tags.`gate.kind` = 'check'")) == 1


# --- GitHub annotations and summary ----------------------------------------------------------


def test_annotate_emits_a_few_errors_then_a_count_and_writes_the_summary(runs, tmp_path, capsys):
    summary = tmp_path / "summary.md"
    code = main(["annotate", str(runs["root"] / "full" / "report.json"), "--summary", str(summary), "--limit", "1"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    errors = [line for line in out if line.startswith("::error")]
    rep = runs["full"][1]
    failing = [c for c in rep["concepts"] if c["verdict"] == "fail"]
    assert errors[0].startswith("::error title=resurgence gate%3A ") and "max_" in errors[0]
    if len(failing) > 1:
        assert "more concepts failed" in errors[-1]
    assert "## Resurgence gate: **FAIL**" in summary.read_text()
