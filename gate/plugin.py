"""pytest plugin (entry point ``resurgence_gate``): each (erased concept, rule) is a test.

    pytest probes/ --checkpoint X [--update Y] [--original Z] [--policy P]

Tests are generated for any test function that takes the ``gate_rule`` fixture (``probes/``
has one). The check itself runs once per session, for the concepts that collection and ``-k``
kept (image seeds do not depend on the selection, so the figures are the same as a full run).
A failing rule shows its observed value, interval, threshold and worst prompts with their
seeds, without a traceback; ``--junitxml`` carries the figures as test properties.

Nothing heavy is imported unless a gate test is collected, so the plugin costs nothing in
other test suites.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

_STATE: dict[str, Any] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("resurgence-gate", "Resurgence Gate (concept resurgence checks)")
    g.addoption("--checkpoint", help="the unlearned model (diffusers folder, .safetensors or cached hub id)")
    g.addoption("--update", help="the candidate update (LoRA, diffusers folder, UNet .safetensors)")
    g.addoption("--original", help="the model before unlearning (enables max_resurgence)")
    g.addoption("--policy", help="policy YAML (required with --checkpoint, unless it is the small world's own SD)")
    g.addoption("--gate-config", help="local diffusers folder for a single-file checkpoint's architecture")
    g.addoption("--lora-scale", type=float, default=1.0)
    g.addoption("--allow-pickle", action="store_true", default=False)
    g.addoption("--gate-device", default="cpu")
    g.addoption("--gate-cache-dir", default=".gate-cache")
    g.addoption("--gate-report-dir", default="out/gate-report")
    g.addoption("--gate-tracking-uri", help="MLflow tracking URI (default as for gate check)")
    g.addoption("--gate-model-line", help="the model line MLflow runs are grouped by")
    g.addoption("--gate-no-track", action="store_true", default=False, help="do not log the run to MLflow")
    g.addoption("--gate-no-prescreen", action="store_true", default=False, help="skip the weight-space pre-screen")


def _options(config: pytest.Config):
    """CheckOptions from the plugin's flags: the same resolution as ``gate check``'s."""
    from gate.runner import CheckOptions
    from gate.world.demo import resolve

    inputs = resolve(
        config.getoption("--checkpoint"), config.getoption("--update"), config.getoption("--original"),
        config.getoption("--policy"),
    )  # fmt: skip
    return CheckOptions(
        checkpoint=inputs.checkpoint, update=inputs.update, original=inputs.original, policy=inputs.policy,
        config=config.getoption("--gate-config"), allow_pickle=config.getoption("--allow-pickle"),
        lora_scale=config.getoption("--lora-scale"), device=config.getoption("--gate-device"),
        cache_dir=config.getoption("--gate-cache-dir"), prescreen=not config.getoption("--gate-no-prescreen"),
        report_dir=config.getoption("--gate-report-dir"), track=not config.getoption("--gate-no-track"),
        tracking_uri=config.getoption("--gate-tracking-uri"), model_line=config.getoption("--gate-model-line"),
    )  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gate_rule" not in metafunc.fixturenames:
        return
    from gate.errors import GateError
    from gate.policy import load_policy

    config = metafunc.config
    try:
        opts = _STATE.get("opts") or _options(config)
        policy = load_policy(opts.policy)
    except GateError as e:
        raise pytest.UsageError(f"resurgence gate: {e}") from None
    _STATE["opts"] = opts
    items = [(c.name, rule) for c in policy.concepts for rule in c.rules]
    metafunc.parametrize("gate_rule", items, ids=[f"{c}-{r}" for c, r in items])


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = []
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs is not None and "gate_rule" in cs.params:
            concept = cs.params["gate_rule"][0]
            if concept not in chosen:
                chosen.append(concept)
    _STATE["concepts"] = chosen


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    # only when the gate's inputs were given: the plugin is installed for every pytest run in
    # the environment and must cost nothing (no zoo, no models) in other suites
    if config.getoption("--checkpoint") is None:
        return None
    from gate.errors import GateError
    from gate.report import reproduce_line

    try:
        _STATE["opts"] = _STATE.get("opts") or _options(config)
    except GateError as e:
        raise pytest.UsageError(f"resurgence gate: {e}") from None
    return [f"resurgence gate: reproduce with: {reproduce_line(_STATE['opts'])}"]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    results = _STATE.get("results")
    if not results:
        return
    from gate.report import reproduce_line, verdict_line

    terminalreporter.write_line(verdict_line(results["report"]))
    terminalreporter.write_line(f"reproduce with: {reproduce_line(_STATE['opts'])}")


def _run_check() -> dict[str, Any]:
    if "results" in _STATE:
        return _STATE["results"]
    import dataclasses
    import warnings

    from gate.policy import load_policy
    from gate.runner import run_check

    opts = _STATE["opts"]
    chosen = _STATE.get("concepts") or None
    if chosen and set(chosen) == {c.name for c in load_policy(opts.policy).concepts}:
        chosen = None  # every concept was collected: the same check (and report) as gate check's
    opts = dataclasses.replace(opts, concepts=chosen)
    outcome = run_check(opts, warn=warnings.warn)
    rep = outcome.report
    by_rule = {(r.concept, r.rule): r for r in rep.rules()}
    _STATE["results"] = {"by_rule": by_rule, "inconclusive_fails": rep.inconclusive_fails, "report": rep}
    return _STATE["results"]


@pytest.fixture
def gate_result(gate_rule, request):
    """The judged result of this test's (concept, rule), from the session's single check."""
    from gate.errors import GateError

    try:
        state = _run_check()
    except GateError as e:
        pytest.fail(f"resurgence gate could not run: {e}", pytrace=False)
    r = state["by_rule"][tuple(gate_rule)]
    for k in ("observed", "low", "high", "threshold", "baseline", "verdict", "n"):
        v = getattr(r, k)
        if not (isinstance(v, float) and math.isnan(v)):
            request.node.user_properties.append((k, v))
    return r, state["inconclusive_fails"]


def explain(r) -> str:
    from gate.report import fmt

    lines = [
        f"{r.concept}: {r.rule} {r.verdict.upper()}",
        f"  observed {fmt(r.observed)} (95% interval [{fmt(r.low)}, {fmt(r.high)}], n={r.n}); "
        f"threshold: {r.direction} {fmt(r.threshold)}; baseline {fmt(r.baseline)}"
        + (f"; paired McNemar p={r.p_value:.4f}" if r.p_value is not None else ""),
    ]
    if r.note:
        lines.append(f"  {r.note}")
    if r.worst:
        lines.append("  worst prompts (candidate score / baseline score, same seed):")
        lines += [
            f"    {w['candidate_score']:.2f} / {w['baseline_score']:.2f}  seed {w['seed']}  {w['prompt']!r}"
            for w in r.worst
        ]
    return "\n".join(lines)


def check_rule(result) -> None:
    """The body of a gate test: passes, fails with an explanation, or skips (no --original)."""
    from gate.judge import UNDECIDED

    r, inconclusive_fails = result
    if r.verdict == "skipped":
        pytest.skip(f"{r.rule}: {r.note}")
    if r.verdict == "fail" or (r.verdict in UNDECIDED and inconclusive_fails):
        pytest.fail(explain(r), pytrace=False)
