"""gate certify on the small world, end to end at a small budget: the recipe's LoRA fine-tune
(10 steps, one seed) of the zoo's ESD-x model, the tiny policy's check on it, the certificate on
disk and in a real MLflow store, the fine-tune reused on a second run, and a later PR check of
the same model line linking to the certificate. Nothing is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "tests" / "policies" / "tiny.yaml")


@pytest.fixture(scope="module")
def certified(zoo, cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("certify")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["certify", "--checkpoint", zoo["checkpoint"], "--policy", TINY, "--modes", "lora", "--seeds", "0",
            "--steps", "10", "--out", str(root / "cert"), "--cache-dir", cache_dir, "--tracking-uri", uri,
            "--model-line", "world-skull"]  # fmt: skip
    code = main(args)
    return {"root": root, "uri": uri, "code": code, "args": args,
            "cert": json.loads((root / "cert" / "certificate.json").read_text())}  # fmt: skip


def test_certificate_on_disk(certified, zoo):
    cert = certified["cert"]
    assert certified["code"] == (1 if cert["verdict"] == "fail" else 0)
    assert cert["kind"] == "certificate" and cert["model_line"] == "world-skull"
    assert cert["recipe"]["name"] == "small-world" and cert["recipe"]["standard"] is False
    assert cert["recipe"]["overrides"] == {"modes": ["lora"], "seeds": [0], "steps": 10}
    assert (
        cert["inputs"]["checkpoint"]["path"] == zoo["checkpoint"] and len(cert["inputs"]["checkpoint"]["sha256"]) == 64
    )
    assert cert["inputs"]["original"]["path"] == zoo["original"]  # the world's SD, by default
    assert cert["data"]["n"] == 1000 and "without skull" in cert["data"]["source"]
    [ft] = cert["finetunes"]
    assert ft["label"] == "lora-seed0" and ft["steps"] == 10 and ft["mode"] == "lora"
    rep = json.loads(Path(ft["report"]).read_text())
    r = {x["rule"]: x for c in rep["concepts"] for x in c["rules"]}["max_resurgence"]
    fig = cert["concepts"]["skull"]["lora"]["figures"]["max_resurgence"]
    assert fig["median"] == {"label": "lora-seed0", "observed": r["observed"], "low": r["low"], "high": r["high"]}
    assert cert["headlines"][0].startswith("after the non-standard (modes ['lora'], seeds [0], steps 10) benign")
    assert len(cert["reasons"]) == sum(
        x["verdict"] in ("fail", "inconclusive") for c in rep["concepts"] for x in c["rules"]
    )
    md = (certified["root"] / "cert" / "certificate.md").read_text()
    assert "# Resurgence certificate: world-skull" in md and "NOT the standard recipe" in md


def test_certificate_in_mlflow(certified):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=certified["uri"])
    exp = client.get_experiment_by_name("resurgence-gate")
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.`gate.kind` = 'certificate'")
    assert run.info.run_id == certified["cert"]["tracking"]["run_id"]
    t = run.data.tags
    assert t["gate.model_line"] == "world-skull" and t["gate.recipe_standard"] == "false"
    assert t["input.checkpoint.sha256"] == certified["cert"]["inputs"]["checkpoint"]["sha256"]
    m = run.data.metrics
    fig = certified["cert"]["concepts"]["skull"]["lora"]["figures"]["max_resurgence"]
    assert m["skull.lora.max_resurgence.median"] == pytest.approx(fig["median"]["observed"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"certificate.json", "certificate.md", "checks"} <= names


def test_second_run_reuses_the_fine_tune(certified, capsys):
    before = (certified["root"] / "cert" / "finetunes" / "lora-seed0" / "finetune.json").read_text()
    code = main([*certified["args"][:-4], "--no-track"])  # same output folder, no second MLflow run
    assert code == certified["code"]
    assert "reusing the fine-tune" in capsys.readouterr().err
    assert (certified["root"] / "cert" / "finetunes" / "lora-seed0" / "finetune.json").read_text() == before


def test_a_pr_check_links_the_latest_certificate(certified, zoo, cache_dir):
    out = certified["root"] / "pr-check"
    main(["check", "--checkpoint", zoo["checkpoint"], "--original", zoo["original"], "--update", zoo["benign"],
          "--policy", TINY, "--cache-dir", cache_dir, "--report-dir", str(out), "--no-prescreen",
          "--tracking-uri", certified["uri"], "--model-line", "world-skull"])  # fmt: skip
    rep = json.loads((out / "report.json").read_text())
    link = rep["certificate"]
    assert link["run_id"] == certified["cert"]["tracking"]["run_id"] and link["same_checkpoint"] is True
    assert link["verdict"] == certified["cert"]["verdict"] and link["standard"] is False
    assert "Latest certificate (this unlearned model;" in (out / "summary.md").read_text()


def test_sd_recipes_need_a_data_folder(zoo, tmp_path, capsys):
    code = main(["certify", "--checkpoint", zoo["checkpoint"], "--policy", TINY, "--recipe", "sd1",
                 "--original", zoo["original"], "--out", str(tmp_path), "--no-track"])  # fmt: skip
    assert code == 2 and "give --data DIR" in capsys.readouterr().err
