"""``gate history --plot``: the trend plot draws every run, also one whose interval does not
hold its point estimate (R's percentile bootstrap can miss it; seen on the small world)."""

from __future__ import annotations

from PIL import Image

from gate.tracking import HistoryRow, plot_history


def test_plot_draws_an_estimate_outside_its_interval(tmp_path):
    rows = [
        HistoryRow("a", 1_700_000_000_000, "pass", "", {"skull.max_resurgence": {"observed": 0.1, "low": 0.0, "high": 0.3, "threshold": 0.3}}),
        HistoryRow("b", 1_700_000_100_000, "fail", "", {"skull.max_resurgence": {"observed": 0.9, "low": 0.95, "high": 1.0, "threshold": 0.3, "failed": 1.0}}),
    ]  # fmt: skip
    out = plot_history(rows, ["skull.max_resurgence"], tmp_path / "h.png")
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.getextrema() != ((255, 255),) * len(im.getbands())
