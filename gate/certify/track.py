"""Certificates in MLflow: one run per certificate (tag ``gate.kind=certificate``) in the gate's
experiment, and the lookup that lets a pull request's check link to the latest certificate of
its model line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gate.tracking import EXPERIMENT, VERDICT_CODE, _client, _experiment_id, _metric_key, resolve_uri

KIND = "certificate"


def log_certificate(cert: dict[str, Any], folder: Path, *, uri: str | None = None) -> dict[str, str]:
    """Logs ``cert`` (with ``certificate.json``/``.md`` and the checks' reports as artifacts);
    returns ``{"uri", "experiment_id", "run_id"}``."""
    from mlflow.entities import Metric

    uri = resolve_uri(uri)
    client = _client(uri)
    exp_id = _experiment_id(client, uri, EXPERIMENT)
    started = int(cert.get("created_at", time.time()) * 1000)
    ck = cert["inputs"]["checkpoint"]
    recipe = cert["recipe"]
    tags = {
        "gate.kind": KIND,
        "gate.model_line": cert["model_line"],
        "gate.verdict": cert["verdict"],
        "gate.recipe": recipe["name"],
        "gate.recipe_sha256": recipe["sha256"],
        "gate.recipe_standard": str(recipe["standard"]).lower(),
        "input.checkpoint.sha256": str(ck.get("sha256", "")),
        "input.original.sha256": str(cert["inputs"]["original"].get("sha256", "")),
        "policy.sha256": str(cert["inputs"]["policy"].get("sha256", "")),
        "gate.headline": " | ".join(cert["headlines"])[:4000],
        "mlflow.runName": f"{cert['model_line']}: certificate ({recipe['name']}) {cert['verdict']}",
    }
    run = client.create_run(exp_id, start_time=started, tags=tags)
    rid = run.info.run_id
    metrics = [Metric("verdict.failed", VERDICT_CODE.get(cert["verdict"], -1.0), started, 0)]
    for concept, modes in cert["concepts"].items():
        for mode, s in modes.items():
            for rule, f in s["figures"].items():
                base = f"{concept}.{mode}.{rule}"
                vals = {"median": f["median"]["observed"], "median_low": f["median"]["low"],
                        "median_high": f["median"]["high"], "min": f["min"], "max": f["max"],
                        "highest_upper": f["highest_upper"]}  # fmt: skip
                metrics += [Metric(_metric_key(f"{base}.{k}"), float(v), started, 0) for k, v in vals.items()]
    for i in range(0, len(metrics), 900):
        client.log_batch(rid, metrics=metrics[i : i + 900])
    for name in ("certificate.json", "certificate.md"):
        if (folder / name).is_file():
            client.log_artifact(rid, str(folder / name))
    if (folder / "checks").is_dir():
        for rep in sorted((folder / "checks").glob("*/report.json")):
            client.log_artifact(rid, str(rep), artifact_path=f"checks/{rep.parent.name}")
    client.set_terminated(rid, "FINISHED")
    return {"uri": uri, "experiment_id": exp_id, "run_id": rid}


def latest_certificate(model_line: str, *, uri: str | None = None, checkpoint_sha256: str | None = None) -> dict | None:
    """The newest certificate run of a model line (``None`` when there is none), and whether it
    certified the same unlearned model (``same_checkpoint``)."""
    uri = resolve_uri(uri)
    client = _client(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    line = model_line.replace("'", "\\'")
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`gate.kind` = '{KIND}' and tags.`gate.model_line` = '{line}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    if not runs:
        return None
    r = runs[0]
    t = r.data.tags
    sha = t.get("input.checkpoint.sha256", "")
    return {
        "run_id": r.info.run_id,
        "experiment_id": exp.experiment_id,
        "uri": uri,
        "created_at": r.info.start_time / 1000.0,
        "verdict": t.get("gate.verdict", "?"),
        "recipe": t.get("gate.recipe", "?"),
        "standard": t.get("gate.recipe_standard") == "true",
        "checkpoint_sha256": sha,
        "same_checkpoint": bool(checkpoint_sha256) and sha == checkpoint_sha256,
        "headline": t.get("gate.headline", ""),
    }


def certificate_link(report, model_line: str | None, uri: str | None, warn) -> dict | None:
    """What a check's report links to: the newest certificate of its model line (the line as
    tracking names it: ``--model-line``, else the policy's name). A store that cannot be read
    only warns."""
    line = model_line or str(report.policy().get("name") or "default")
    try:
        return latest_certificate(line, uri=uri, checkpoint_sha256=report.identity("checkpoint").get("sha256"))
    except Exception as e:
        warn(f"warning: could not look up the model line's certificate ({type(e).__name__}: {str(e)[:200]})")
        return None
