"""Confidence intervals and paired tests for detection rates. Pure Python: no numpy, no torch.

* a rate (k hits of n images): Wilson score interval;
* the increase of a candidate over the baseline on the *same seeds*: each seed gives a pair
  (baseline hit, candidate hit). The interval is Newcombe's method 10 for paired
  proportions (built from the two Wilson intervals and the pairs' phi correlation), and the
  p-value is the exact McNemar test on the discordant pairs;
* a ratio such as the normalised resurgence R: a percentile bootstrap over seeds with a
  fixed generator, so the interval is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def wilson(k: int, n: int, z: float = Z95) -> Interval:
    if n <= 0:
        raise ValueError("an interval needs at least one observation")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(base: Sequence[bool], cand: Sequence[bool], z: float = Z95) -> Interval:
    """Interval for P(cand) - P(base) from paired binary outcomes (Newcombe 1998, method 10)."""
    if len(base) != len(cand) or not base:
        raise ValueError("paired outcomes need equal, non-zero lengths")
    n = len(base)
    a = sum(1 for b, c in zip(base, cand, strict=True) if b and c)
    b_ = sum(1 for b, c in zip(base, cand, strict=True) if b and not c)
    c_ = sum(1 for b, c in zip(base, cand, strict=True) if not b and c)
    d = n - a - b_ - c_
    p1, p2 = (a + c_) / n, (a + b_) / n  # candidate rate, baseline rate
    w1, w2 = wilson(a + c_, n, z), wilson(a + b_, n, z)
    denom = (a + b_) * (c_ + d) * (a + c_) * (b_ + d)
    phi = 0.0 if denom == 0 else (a * d - b_ * c_) / math.sqrt(denom)
    if a * d - b_ * c_ > 0:  # Newcombe's continuity adjustment of phi
        phi = max(0.0, a * d - b_ * c_ - n / 2) / math.sqrt(denom)
    dl1, du1 = p1 - w1.low, w1.high - p1
    dl2, du2 = p2 - w2.low, w2.high - p2
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, dl1**2 - 2 * phi * dl1 * du2 + du2**2))
    high = diff + math.sqrt(max(0.0, du1**2 - 2 * phi * du1 * dl2 + dl2**2))
    return Interval(diff, max(-1.0, low), min(1.0, high))


def mcnemar_exact(base: Sequence[bool], cand: Sequence[bool]) -> float:
    """One-sided exact McNemar p-value for "the candidate detects the concept more often"."""
    b_ = sum(1 for b, c in zip(base, cand, strict=True) if b and not c)
    c_ = sum(1 for b, c in zip(base, cand, strict=True) if not b and c)
    m = b_ + c_
    if m == 0:
        return 1.0
    # P(X >= c_) for X ~ Binomial(m, 1/2)
    return sum(math.comb(m, i) for i in range(c_, m + 1)) / 2**m


def bootstrap(
    statistic: Callable[[Sequence[int]], float], n: int, *, reps: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap over ``n`` paired units (indices resampled with a fixed seed)."""
    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(reps))
    lo = values[math.floor(alpha / 2 * reps)]
    hi = values[min(reps - 1, math.ceil((1 - alpha / 2) * reps) - 1)]
    return lo, hi


def resurgence(a_orig: float, a_unl: float, a_ft: float, eps: float = 0.05) -> float:
    """Normalised resurgence R = (A_ft - A_unl) / max(eps, A_orig - A_unl)."""
    return (a_ft - a_unl) / max(eps, a_orig - a_unl)
