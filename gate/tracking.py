"""MLflow history: one run per gate invocation, one nested run per concept.

Everything goes through an explicit ``MlflowClient`` and explicit run ids; the fluent API
(``mlflow.start_run``) is never used, so a user's own active run is never touched or ended.

Where the runs go, in order: ``--tracking-uri``, then ``GATE_TRACKING_URI``, then
``MLFLOW_TRACKING_URI``, then a sqlite store at ``.gate-mlflow/mlflow.db`` with its artifacts in
``.gate-mlflow/artifacts`` (MLflow 3's plain file store refuses to start without an opt-in).

Layout of a run (the same for ``gate check`` and a later ``gate track REPORT.json``):

* parent run ``gate <verdict> <update>``: tags ``gate.kind=check``, ``gate.model_line``,
  ``gate.verdict``, every input's sha256 (``input.<name>.sha256``), the policy's name, version
  and sha256, library versions, the git commit (when the working directory is a git checkout),
  ``gate.report_sha256`` (what ``gate track`` uses to refuse logging one report twice);
  metrics ``<concept>.<rule>.{observed,low,high,threshold,failed}`` (and ``.stage`` where a
  sequential check decided it), ``<concept>.images.<side>``, ``<concept>.stages``; artifacts: the report folder
  (``report.json``, ``summary.md``, ``report.html``, ``images/``);
* one child run per concept (tag ``mlflow.parentRunId``) with the same metrics without the
  concept prefix, and ``gate.concept`` / ``gate.verdict`` / ``gate.stopping`` tags.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gate.errors import BadInput
from gate.provenance import git_commit

if TYPE_CHECKING:
    from gate.judge import RuleResult
    from gate.report import Report

DEFAULT_DIR = Path(".gate-mlflow")
EXPERIMENT = "resurgence-gate"
# MLflow 3's UI opens an experiment on its GenAI overview unless the experiment says otherwise
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
VERDICT_CODE = {"pass": 0.0, "inconclusive": 0.5, "not applicable": 0.5, "fail": 1.0, "skipped": -1.0}
RULE_FIELDS = ("observed", "low", "high", "threshold", "baseline")


def resolve_uri(uri: str | None) -> str:
    uri = uri or os.environ.get("GATE_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # next to the database, never ./mlruns under whatever directory the gate was started in
        db = Path(uri[len("sqlite:///") :])
        artifact_location = (db.parent / "artifacts").resolve().as_uri()
    return client.create_experiment(
        name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )


# generic file names that say nothing about which candidate a run judged
_GENERIC = ("pytorch_lora_weights.safetensors", "diffusion_pytorch_model.safetensors", "model.safetensors")


def candidate_label(report: Report) -> str:
    """What a run judged, for its name: the candidate's path in the pull request when known,
    else the update's path (with its folder when the file name is a generic one)."""
    pr = report.pull_request or {}
    if pr.get("candidate"):
        return str(pr["candidate"])
    path = report.identity("update").get("path")
    if not path:
        return "no update"
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}" if p.name in _GENERIC else p.name


def run_name(report: Report, model_line: str) -> str:
    sha = str(report.identity("update").get("sha256") or report.identity("checkpoint").get("sha256") or "")[:8]
    return f"{model_line}: {candidate_label(report)} @{sha} {report.verdict}"


def report_sha256(report: Report) -> str:
    body = {k: v for k, v in report.to_json().items() if k != "tracking"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _metric_key(text: str) -> str:
    # MLflow keys allow alphanumerics, _ - . / and spaces; concept names are user text
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in text)


def stopping_metrics(c, prefix: str = "") -> dict[str, float]:
    """A concept's images per side (``images.baseline`` ...) and, sequential, its stages."""
    s = c.stopping or {}
    out = {_metric_key(f"{prefix}images.{side}"): float(n) for side, n in (s.get("images") or {}).items()}
    if "stages" in s:
        out[_metric_key(f"{prefix}stages")] = float(s["stages"])
    return out


def attack_metrics(c, prefix: str = "") -> dict[str, float]:
    """A concept's attack probes: per attack and side, ``attack.<name>.<side>.success`` and
    ``.images`` (a learned attack also its kept restart's ``eval_loss``)."""
    out: dict[str, float] = {}
    for name, a in (c.attacks or {}).items():
        for side, r in (a.get("success") or {}).items():
            out[_metric_key(f"{prefix}attack.{name}.{side}.success")] = float(r["success"])
            out[_metric_key(f"{prefix}attack.{name}.{side}.images")] = float(r["images"])
        for side in ("baseline", "candidate"):
            losses = (a.get(side) or {}).get("restart_eval_losses") or []
            if losses:
                out[_metric_key(f"{prefix}attack.{name}.{side}.eval_loss")] = float(min(losses))
    return out


def rule_metrics(rule: RuleResult, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for f in RULE_FIELDS:
        v = getattr(rule, f)
        if isinstance(v, (int, float)) and v == v:  # skip None and NaN
            out[_metric_key(f"{prefix}{rule.rule}.{f}")] = float(v)
    out[_metric_key(f"{prefix}{rule.rule}.failed")] = VERDICT_CODE.get(rule.verdict, -1.0)
    if rule.stage is not None:  # stopping: sequential: the stage it was decided at
        out[_metric_key(f"{prefix}{rule.rule}.stage")] = float(rule.stage)
    return out


def _tags(report: Report, model_line: str) -> dict[str, str]:
    pol = report.policy()
    tags = {
        "gate.kind": "check",
        "gate.model_line": model_line,
        "gate.verdict": report.verdict,
        "gate.version": str(report.gate_version),
        "gate.report_sha256": report_sha256(report),
        "gate.reproduce": report.reproduce[:4000],
        "policy.name": str(pol.get("name", "")),
        "policy.version": str(pol.get("version", "")),
        "policy.sha256": str(pol.get("sha256", "")),
        "gate.seed": str(report.seed),
        "gate.device": str(report.device),
    }
    if report.shard:
        tags["gate.shard"] = "/".join(str(x) for x in report.shard)
    for name, ident in report.inputs.items():
        if isinstance(ident, dict) and ident.get("sha256"):
            tags[f"input.{name}.sha256"] = ident["sha256"]
            if ident.get("path"):
                tags[f"input.{name}.path"] = str(ident["path"])[:4000]
    for lib, ver in report.libraries.items():
        tags[f"lib.{lib}"] = str(ver)
    for key, value in (report.pull_request or {}).items():
        if value not in (None, ""):
            tags[f"gate.pr.{key}"] = str(value)[:4000]
    tags["gate.candidate"] = candidate_label(report)[:4000]
    commit = report.git_commit or git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


@dataclass
class Tracked:
    uri: str
    experiment_id: str
    run_id: str
    concept_runs: dict[str, str]
    existing: bool = False  # the same report was already logged (gate track without --again)


def log_report(
    report: Report,
    report_dir: Path | None,
    *,
    uri: str | None = None,
    experiment: str = EXPERIMENT,
    model_line: str | None = None,
    allow_duplicate: bool = True,
) -> Tracked:
    """Logs a finished report as one parent run with a child per concept. Raises on tracking
    errors; callers that must keep the verdict (``gate check``) catch and warn."""
    from mlflow.entities import Metric, Param, RunTag

    uri = resolve_uri(uri)
    client = _client(uri)
    exp_id = _experiment_id(client, uri, experiment)
    line = model_line or str(report.policy().get("name") or "default")
    tags = _tags(report, line)
    if not allow_duplicate:
        found = find_report_run(client, exp_id, tags["gate.report_sha256"])
        if found:
            return Tracked(uri, exp_id, found, {}, existing=True)
    started = int((report.finished_at or time.time()) * 1000)
    run = client.create_run(
        exp_id,
        start_time=started,
        tags={**tags, "mlflow.runName": run_name(report, line)},
    )
    rid = run.info.run_id
    children: dict[str, str] = {}
    try:
        params = [
            Param("policy", str(report.policy().get("path", ""))[:6000]),
            Param("seed", str(report.seed)),
            Param("sampler", json.dumps(report.sampler, sort_keys=True)[:6000]),
            Param("inconclusive_counts_as", str(report.inconclusive_counts_as)),
            Param("concepts", ",".join(c.name for c in report.concepts)[:6000]),
        ]
        metrics = [Metric("verdict.failed", VERDICT_CODE.get(report.verdict, -1.0), started, 0)]
        if report.wall_time_s is not None:
            metrics.append(Metric("wall_time_s", float(report.wall_time_s), started, 0))
        for c in report.concepts:
            for r in c.rules:
                for k, v in rule_metrics(r, prefix=f"{c.name}.").items():
                    metrics.append(Metric(k, v, started, 0))
            for k, v in {**stopping_metrics(c, prefix=f"{c.name}."), **attack_metrics(c, f"{c.name}.")}.items():
                metrics.append(Metric(k, v, started, 0))
        _log_batches(client, rid, metrics, params, [])
        for c in report.concepts:
            child = client.create_run(
                exp_id,
                start_time=started,
                tags={
                    "mlflow.parentRunId": rid, "mlflow.runName": f"{c.name}: {c.verdict}",
                    "gate.kind": "concept", "gate.concept": c.name, "gate.verdict": c.verdict,
                    "gate.model_line": line,
                },
            )  # fmt: skip
            cid = child.info.run_id
            children[c.name] = cid
            cm = [Metric(k, v, started, 0) for r in c.rules for k, v in rule_metrics(r).items()]
            cm.append(Metric("verdict.failed", VERDICT_CODE.get(c.verdict, -1.0), started, 0))
            cm += [Metric(k, v, started, 0) for k, v in {**stopping_metrics(c), **attack_metrics(c)}.items()]
            ctags = [RunTag(f"rule.{r.rule}", r.verdict) for r in c.rules]
            ctags.append(RunTag("gate.stopping", str((c.stopping or {}).get("method", "fixed"))))
            _log_batches(client, cid, cm, [], ctags)
            client.set_terminated(cid, "FINISHED")
        if report_dir is not None and Path(report_dir).is_dir():
            client.log_artifacts(rid, str(report_dir), artifact_path="report")
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        for cid in children.values():
            _quiet_terminate(client, cid)
        _quiet_terminate(client, rid)
        raise
    return Tracked(uri, exp_id, rid, children)


def _quiet_terminate(client, run_id: str) -> None:
    with contextlib.suppress(Exception):  # the store is what failed; nothing more to do
        client.set_terminated(run_id, "FAILED")


def _log_batches(client, run_id: str, metrics: list, params: list, tags: list, size: int = 900) -> None:
    # MLflow caps a batch at 1000 metrics and 100 params
    client.log_batch(run_id, metrics=metrics[:size], params=params[:100], tags=tags[:100])
    for i in range(size, len(metrics), size):
        client.log_batch(run_id, metrics=metrics[i : i + size])


def find_report_run(client, experiment_id: str, sha: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`gate.report_sha256` = '{sha}'", max_results=1)
    return runs[0].info.run_id if runs else None


def track_after_check(
    report: Report, report_dir: Path, *, uri: str | None, model_line: str | None, warn
) -> Tracked | None:
    """``gate check``'s tracking step: the report is already on disk; a tracking failure only
    warns (with the command that logs it later) and never changes the exit code."""
    try:
        return log_report(report, report_dir, uri=uri, model_line=model_line)
    except Exception as e:  # any store, network or permission error
        warn(
            f"warning: MLflow tracking failed ({type(e).__name__}: {str(e)[:300]}); the verdict stands. "
            f"Log it later with: gate track {report_dir / 'report.json'}"
        )
        return None


def ui_link(tracked: Tracked, host: str = "http://127.0.0.1:5000") -> str:
    """Where ``mlflow ui`` shows a run. MLflow 3's UI opens every experiment on its GenAI overview
    unless the page asks for the model-training view (``workflowType``; the experiment's
    ``mlflow.experimentKind`` tag alone does not switch it, measured with MLflow 3.17)."""
    return f"{host}/#/experiments/{tracked.experiment_id}/runs/{tracked.run_id}?workflowType=machine_learning"


def ui_hint(tracked: Tracked) -> str:
    store = tracked.uri
    return f"mlflow ui --backend-store-uri {store}  then open {ui_link(tracked)}"


# --- history ----------------------------------------------------------------------------


@dataclass
class HistoryRow:
    run_id: str
    time_ms: int
    verdict: str
    update_sha: str
    values: dict[str, dict[str, float]]  # "concept.rule" -> {"observed", "low", "high", "threshold", "failed"}


def history(
    *, uri: str | None = None, experiment: str = EXPERIMENT, model_line: str | None = None, max_runs: int = 500
) -> list[HistoryRow]:
    uri = resolve_uri(uri)
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise BadInput(f"no experiment {experiment!r} at {uri}: run gate check (or gate track) first")
    flt = "tags.`gate.kind` = 'check'"
    if model_line:
        flt += f" and tags.`gate.model_line` = '{model_line}'"
    runs = client.search_runs(
        [exp.experiment_id], filter_string=flt, max_results=max_runs, order_by=["attributes.start_time ASC"]
    )
    rows = []
    for run in runs:
        vals: dict[str, dict[str, float]] = {}
        for key, v in run.data.metrics.items():
            head, _, field = key.rpartition(".")
            if head and field in (*RULE_FIELDS, "failed") and "." in head:
                vals.setdefault(head, {})[field] = v
        rows.append(
            HistoryRow(
                run_id=run.info.run_id,
                time_ms=run.info.start_time,
                verdict=run.data.tags.get("gate.verdict", "?"),
                update_sha=run.data.tags.get("input.update.sha256", ""),
                values=vals,
            )
        )
    return rows


def series_names(rows: Iterable[HistoryRow], concept: str | None = None) -> list[str]:
    names = sorted({k for r in rows for k in r.values})
    return [n for n in names if concept is None or n.split(".", 1)[0] == concept]


def plot_history(rows: list[HistoryRow], names: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import datetime as dt

    import matplotlib.pyplot as plt

    n = max(1, len(names))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.6 * n), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        pts = [(dt.datetime.fromtimestamp(r.time_ms / 1000), r.values[name]) for r in rows if name in r.values]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1].get("observed", float("nan")) for p in pts]
        # an interval need not hold its point estimate (R's percentile bootstrap, of a ratio with
        # a floored denominator, can miss it): the bar then stops at the interval's near end
        lo = [max(0.0, y - p[1].get("low", y)) for y, p in zip(ys, pts, strict=True)]
        hi = [max(0.0, p[1].get("high", y) - y) for y, p in zip(ys, pts, strict=True)]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, label="observed (95% interval)")
        fails = [(x, y) for x, y, p in zip(xs, ys, pts, strict=True) if p[1].get("failed") == 1.0]
        if fails:
            ax.scatter([f[0] for f in fails], [f[1] for f in fails], color="red", zorder=5, label="failed")
        thr = [p[1]["threshold"] for p in pts if "threshold" in p[1]]
        if thr:
            ax.axhline(thr[-1], color="gray", linestyle="--", label=f"threshold {thr[-1]:g}")
        ax.set_title(name)
        ax.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
