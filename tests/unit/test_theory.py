"""The linear model of resurgence, closed form only: curvature sets the rate of resurgence, not its
limit (the checks against simulated SGD are in tests/integration/test_theory.py: they take a minute)."""

from __future__ import annotations

import numpy as np

from gate.theory.linear import LinearWorld, closed_form, overlap_weights


def test_curvature_sets_the_rate_not_the_limit():
    fast = LinearWorld(overlap=0.6, curvature=(1.0, 0.5, 0.25))
    slow = LinearWorld(overlap=0.6, curvature=(0.02, 0.01, 0.005))
    # early on, the low-curvature world has restored far less ...
    assert closed_form(slow, 0.5, [10])[0] < 0.3 * closed_form(fast, 0.5, [10])[0]
    # ... but it keeps going: both approach the same limit, the overlap-weighted share
    lam, w = overlap_weights(fast)
    limit = float(np.sum(w[lam > 1e-9]))
    assert abs(closed_form(fast, 0.5, [2000])[0] - limit) < 1e-3
    assert abs(closed_form(slow, 0.5, [200000])[0] - limit) < 1e-3
