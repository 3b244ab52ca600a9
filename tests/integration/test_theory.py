"""The linear model of resurgence against its simulation: the closed form agrees with minibatch
SGD on sampled data, noise levels and noise (a simulation that never uses it) within 2% across a
sweep. No model is loaded, but the simulations take a minute on 2 CPU cores, so they are not in
tests/unit/test_theory.py (which checks the closed form alone)."""

from __future__ import annotations

import itertools

import numpy as np

from gate.theory.linear import LinearWorld, closed_form, simulate, sweep


def test_closed_form_matches_simulation_within_two_percent():
    rows = sweep(overlaps=(0.2, 0.6, 0.9), scales=(0.25, 1.0), etas=(0.2, 0.5), steps=(5, 50, 200))
    assert len(rows) == 36
    worst = max(abs(r["simulated"] - r["predicted"]) / max(r["predicted"], 0.1) for r in rows)
    assert worst <= 0.02, worst
    # the sweep is not degenerate: R spans most of [0, 1]
    preds = [r["predicted"] for r in rows]
    assert min(preds) < 0.05 and max(preds) > 0.7


def test_no_overlap_no_resurgence_and_more_overlap_more_resurgence():
    curv = (1.0, 0.5, 0.25)
    assert abs(closed_form(LinearWorld(overlap=0.0, curvature=curv), 0.5, [200])[0]) < 1e-9
    assert abs(simulate(LinearWorld(overlap=0.0, curvature=curv), 0.5, [200])[0]) < 0.01
    rs = [closed_form(LinearWorld(overlap=o, curvature=curv), 0.5, [50])[0] for o in (0.1, 0.4, 0.7, 1.0)]
    assert all(a < b for a, b in itertools.pairwise(rs))


def test_restored_fraction_does_not_depend_on_unlearning_strength():
    a = closed_form(LinearWorld(overlap=0.6, gamma=1.0), 0.5, [20, 100])
    b = closed_form(LinearWorld(overlap=0.6, gamma=0.3), 0.5, [20, 100])
    assert np.allclose(a, b)
    sa = simulate(LinearWorld(overlap=0.6, gamma=1.0), 0.5, [100])[0]
    sb = simulate(LinearWorld(overlap=0.6, gamma=0.3), 0.5, [100])[0]
    assert abs(sa - sb) < 0.02
