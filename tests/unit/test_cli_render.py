"""The CLI's small rendering functions, on made-up inputs (no models, no MLflow)."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from gate.cli.history import history_table
from gate.cli.theory import sweep_lines
from gate.cli.world import quality_table, zoo_line


def _text(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_history_table_marks_failed_figures_and_missing_ones():
    rows = [
        SimpleNamespace(time_ms=0, run_id="abcdef123456", update_sha="0123456789abcdef", verdict="fail",
                        values={"skull.max_resurgence": {"observed": 0.5, "failed": 1.0}}),
        SimpleNamespace(time_ms=0, run_id="99999999zzzz", update_sha="", verdict="pass", values={}),
    ]  # fmt: skip
    text = _text(history_table(rows, ["skull.max_resurgence"]))
    assert "gate history (2 runs)" in text
    assert "0.500 x" in text and "abcdef12" in text and "0123456789" in text
    assert "none" in text and " - " in text


def test_quality_table_lists_every_figure():
    q = {"clip_accuracy": {"shape": 0.97}, "sd_fidelity": {"skull": 0.9}, "images_per_second": 12.5,
         "meets_targets": True}  # fmt: skip
    text = _text(quality_table(q, "w"))
    for part in ("CLIP accuracy: shape", "0.970", "SD fidelity: skull", "0.900", "12.5", "True"):
        assert part in text


def test_zoo_lines():
    unlearned = {"kind": "unlearned", "method": "uce", "concept": "skull",
                 "measured": {"original": {"detection": 0.9}, "unlearned": {"detection": 0.1}}}  # fmt: skip
    assert zoo_line("uce-skull", unlearned).endswith("uce erased skull: detection 0.90 -> 0.10")
    update = {"kind": "update", "base": "uce-skull", "measured": {"R": 0.25}, "expected_verdict": "fail"}
    assert "on uce-skull: R 0.25, expected verdict fail" in zoo_line("resurgent", update)


def test_sweep_lines_end_with_the_largest_difference():
    rows = [{"overlap": 0.5, "curvature": 1.0, "eta": 0.1, "steps": 10, "predicted": 0.2, "simulated": 0.25}]
    lines = sweep_lines(rows)
    assert lines[0].split() == ["overlap", "curv", "eta", "steps", "closed", "form", "simulation"]
    assert lines[1].split() == ["0.50", "1.00", "0.10", "10", "0.2000", "0.2500"]
    assert lines[-1] == "largest absolute difference over 1 points: 0.0500"
