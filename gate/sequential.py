"""Anytime-valid confidence sequences for the gate's rules: intervals that hold at every look,
so a check may stop as soon as a rule is decided (docs/sequential.md has the formulas).

* a rate (hits among n images): the **beta-binomial mixture** confidence sequence (Robbins 1970;
  Howard, Ramdas, McAuliffe and Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic
  confidence sequences", the conjugate-mixture method for Bernoulli observations). For each p the
  mixture of likelihood ratios ``E_t(p) = B(a + S, b + t - S) / (B(a, b) p^S (1 - p)^(t - S))`` is a
  nonnegative martingale under p, so by Ville's inequality ``P(exists t: E_t(p) >= 1/alpha) <= alpha``
  and ``{p : E_t(p) < 1/alpha}`` covers p at every t at once. Prior Beta(1/2, 1/2);
* a mean in [0, 1] (the paired increase, each pair's difference mapped to [0, 1]): the **hedged
  capital** betting confidence sequence of Waudby-Smith and Ramdas (2023, "Estimating means of
  bounded random variables by betting", JRSS B, Theorem 3 with the predictable plug-in bets of
  their Eq. (26)), intersected over time;
* the resurgence R, a ratio of three rates: a union bound over the three rates' sequences at
  alpha/3 each, R's bounds being its extremes over that box (R is monotone in each rate).

Everything here is a pure function of the observations; scipy supplies ``betaln`` and ``brentq``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln

PRIOR = (0.5, 0.5)  # Jeffreys
GRID = 2001  # candidate means for the betting sequence (step 1/2000)


@dataclass(frozen=True)
class Bounds:
    value: float
    low: float
    high: float


def log_mixture(k: int, n: int, p: float, prior: tuple[float, float] = PRIOR) -> float:
    """``log E_n(p)``: the beta-binomial mixture e-value against ``p`` after k hits in n."""
    a, b = prior
    if p <= 0.0:
        return math.inf if k > 0 else betaln(a, b + n) - betaln(a, b)
    if p >= 1.0:
        return math.inf if k < n else betaln(a + n, b) - betaln(a, b)
    return betaln(a + k, b + n - k) - betaln(a, b) - k * math.log(p) - (n - k) * math.log1p(-p)


def rate_cs(k: int, n: int, alpha: float = 0.05, prior: tuple[float, float] = PRIOR) -> Bounds:
    """The beta-binomial mixture confidence sequence's interval after k hits in n images."""
    if n <= 0:
        return Bounds(math.nan, 0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"{k} hits of {n}")
    level = math.log(1.0 / alpha)
    phat = k / n
    # E_n(p) is smallest near the posterior's mode and grows towards 0 and 1: one root each side
    centre = min(max((k + prior[0]) / (n + prior[0] + prior[1]), 1e-12), 1 - 1e-12)
    if log_mixture(k, n, centre, prior) >= level:  # cannot happen for alpha < 1; guard all the same
        return Bounds(phat, centre, centre)

    def f(p: float) -> float:
        return log_mixture(k, n, p, prior) - level

    low = 0.0 if f(0.0) < 0 else brentq(f, 0.0, centre, xtol=1e-10)
    high = 1.0 if f(1.0) < 0 else brentq(f, centre, 1.0, xtol=1e-10)
    return Bounds(phat, low, high)


def betting_cs(x: Sequence[float], alpha: float = 0.05, c: float = 0.5, grid: int = GRID) -> list[Bounds]:
    """Waudby-Smith and Ramdas (2023) hedged-capital confidence sequence for the mean of
    observations in [0, 1], with predictable plug-in bets truncated at ``c``; one interval per
    observation, intersected over time (the running intersection is as valid)."""
    xs = np.asarray(x, dtype=np.float64)
    if xs.size and (xs.min() < 0 or xs.max() > 1):
        raise ValueError("the betting confidence sequence needs observations in [0, 1]")
    m = np.linspace(0.0, 1.0, grid)
    log_plus = np.zeros(grid)
    log_minus = np.zeros(grid)
    level = math.log(1.0 / alpha)
    out: list[Bounds] = []
    lo, hi = 0.0, 1.0
    s = 0.0
    ss = 0.25  # the variance estimate's prior term
    var_prev = 0.25
    for t, xt in enumerate(xs, start=1):
        lam = math.sqrt(2 * math.log(2 / alpha) / (var_prev * t * math.log(1 + t)))
        lam_p = np.minimum(lam, c / np.maximum(m, 1e-12))
        lam_m = np.minimum(lam, c / np.maximum(1 - m, 1e-12))
        log_plus += np.log1p(lam_p * (xt - m))
        log_minus += np.log1p(-lam_m * (xt - m))
        # hedged capital, theta = 1/2: the mixture K+/2 + K-/2 (a nonnegative martingale from 1;
        # at least WSR's max(K+/2, K-/2), so at least as powerful, as valid by Ville) >= 1/alpha rejects m
        cap = np.logaddexp(log_plus, log_minus) - math.log(2)
        keep = m[cap < level]
        if keep.size:  # widened by one grid step: the bound lies between two grid points
            step = 1.0 / (grid - 1)
            lo = max(lo, float(keep.min()) - step)
            hi = min(hi, float(keep.max()) + step)
        s += xt
        mu = (0.5 + s) / (t + 1)
        ss += (xt - mu) ** 2
        var_prev = ss / (t + 1)
        out.append(Bounds(s / t, lo, max(lo, hi)))
    return out


def paired_increase_cs(base: Sequence[bool], cand: Sequence[bool], alpha: float = 0.05) -> Bounds:
    """Anytime-valid interval for P(candidate) - P(baseline) from same-seed pairs: the pairs'
    differences d in {-1, 0, 1} mapped to (d + 1) / 2 in [0, 1], the betting sequence on those."""
    if len(base) != len(cand):
        raise ValueError("paired outcomes need equal lengths")
    if not base:
        return Bounds(math.nan, -1.0, 1.0)
    ys = [(int(c) - int(b) + 1) / 2 for b, c in zip(base, cand, strict=True)]
    last = betting_cs(ys, alpha)[-1]
    return Bounds(2 * last.value - 1, 2 * last.low - 1, 2 * last.high - 1)


def resurgence_cs(
    orig: tuple[int, int], unl: tuple[int, int], ft: tuple[int, int], alpha: float = 0.05
) -> tuple[Bounds, str]:
    """R = (A_ft - A_u) / (A_o - A_u) with a union of the three rates' sequences at alpha/3.
    Returns the bounds and ``""``, or NaN bounds and the reason R does not apply: the erasure's
    own effect (A_o - A_u) is not established (its lower bound is not above 0)."""
    a3 = alpha / 3
    o, u, f = (rate_cs(k, n, a3) for k, n in (orig, unl, ft))
    effect_low = o.low - u.high
    if not effect_low > 0:
        why = (
            f"the erasure's own effect is not established: original {o.value:.2f} [{o.low:.2f}, {o.high:.2f}] "
            f"vs unlearned {u.value:.2f} [{u.low:.2f}, {u.high:.2f}]"
        )
        return Bounds(math.nan, math.nan, math.nan), why
    corners = [(fv - uv) / (ov - uv) for ov in (o.low, o.high) for uv in (u.low, u.high) for fv in (f.low, f.high)]
    value = (f.value - u.value) / (o.value - u.value) if o.value > u.value else math.nan
    return Bounds(value, min(corners), max(corners)), ""
