"""MLflow runs say which candidate they judged (a real sqlite store; no model)."""

from __future__ import annotations

from gate.tracking import EXPERIMENT, log_report, run_name
from tests.unit.test_one_path import _report


def test_runs_are_named_by_model_line_candidate_and_hash_and_tagged_with_the_pull_request(tmp_path):
    from mlflow.tracking import MlflowClient

    rep = _report()
    rep.inputs["update"] = {
        "kind": "lora",
        "path": "/ci/head/loras/a/pytorch_lora_weights.safetensors",
        "sha256": "f" * 64,
    }
    assert run_name(rep, "sd14-nsfw") == f"sd14-nsfw: a/pytorch_lora_weights.safetensors @{'f' * 8} fail"
    rep.pull_request = {
        "number": "17",
        "base_sha": "b" * 40,
        "head_sha": "c" * 40,
        "candidate": "loras/a/x.safetensors",
    }
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = log_report(rep, None, uri=uri, model_line="sd14-nsfw")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracked.run_id)
    assert run.data.tags["mlflow.runName"] == f"sd14-nsfw: loras/a/x.safetensors @{'f' * 8} fail"
    assert run.data.tags["gate.pr.number"] == "17" and run.data.tags["gate.pr.head_sha"] == "c" * 40
    assert run.data.tags["gate.candidate"] == "loras/a/x.safetensors"
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # mlflow ui opens on the runs
