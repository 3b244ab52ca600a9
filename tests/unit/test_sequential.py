"""The anytime-valid confidence sequences (gate.sequential): a published closed form, coverage
under continuous monitoring in fixed-seed simulations, monotonicity, and R's applicability."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gate import sequential as S
from gate.stats import wilson


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.1), (3, 10, 0.3), (7, 50, 0.2), (50, 50, 0.9)])
def test_uniform_prior_mixture_is_robbins_closed_form(k, n, p):
    """With a uniform prior the mixture e-value is 1 / ((n + 1) C(n, k) p^k (1 - p)^(n - k)): the
    criterion of Robbins (1970) that Ding, Gandy and Hahn (2017) reject on, b(n, p, S) < eps / (n + 1)."""
    closed = -math.log((n + 1) * math.comb(n, k) * p**k * (1 - p) ** (n - k))
    assert S.log_mixture(k, n, p, prior=(1.0, 1.0)) == pytest.approx(closed, rel=1e-12, abs=1e-12)


def test_rate_cs_inverts_the_e_value():
    b = S.rate_cs(6, 40, alpha=0.05)
    level = math.log(20)
    assert S.log_mixture(6, 40, b.low) == pytest.approx(level, abs=1e-6)
    assert S.log_mixture(6, 40, b.high) == pytest.approx(level, abs=1e-6)
    assert S.log_mixture(6, 40, 0.15) < level
    assert S.rate_cs(0, 40).low == 0.0 and S.rate_cs(40, 40).high == 1.0


def test_rate_cs_is_monotone_wider_than_wilson_and_shrinks():
    n = 64
    bs = [S.rate_cs(k, n) for k in range(n + 1)]
    assert all(a.low <= b.low and a.high <= b.high for a, b in itertools.pairwise(bs))
    w = wilson(16, n)
    cs = S.rate_cs(16, n)
    assert cs.low < w.low and cs.high > w.high  # the price of being valid at every look
    widths = [S.rate_cs(n // 4, n).high - S.rate_cs(n // 4, n).low for n in (16, 64, 256, 1024)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.1


def test_rate_cs_covers_at_every_look():
    """4,000 streams of 400 images at p = 0.25, looked at after every image: the share whose
    interval ever excludes p (there, E_t(p) >= 1/alpha) stays under alpha = 0.05."""
    from scipy.special import betaln

    rng = np.random.default_rng(0)
    p, n, runs = 0.25, 400, 4000
    ks = np.cumsum(rng.random((runs, n)) < p, axis=1)
    t = np.arange(1, n + 1)
    a, b = S.PRIOR
    log_e = betaln(a + ks, b + t - ks) - betaln(a, b) - ks * math.log(p) - (t - ks) * math.log1p(-p)
    ever = (log_e >= math.log(20)).any(axis=1).mean()
    assert ever < 0.05
    # the vectorised e-value is the module's, and its intervals agree with it at a few looks
    for r, tt in ((0, 10), (1, 100), (2, 400)):
        k = int(ks[r, tt - 1])
        assert log_e[r, tt - 1] == pytest.approx(S.log_mixture(k, tt, p))
        inside = S.rate_cs(k, tt).low <= p <= S.rate_cs(k, tt).high
        assert inside == (log_e[r, tt - 1] < math.log(20))


def test_betting_cs_covers_at_every_look_and_shrinks():
    rng = np.random.default_rng(1)
    runs, n, mu = 150, 100, 0.55
    ever = 0
    for _ in range(runs):
        x = rng.choice([0.0, 0.5, 1.0], size=n, p=[0.15, 0.6, 0.25])  # mean 0.55
        if any(not b.low <= mu <= b.high for b in S.betting_cs(x)):
            ever += 1
    assert ever / runs < 0.05
    seq = S.betting_cs(rng.choice([0.0, 1.0], size=400))
    assert all(a.low <= b.low and b.high <= a.high for a, b in itertools.pairwise(seq))  # intersection
    assert seq[-1].high - seq[-1].low < 0.25


def test_betting_first_step_capital_by_hand():
    """After one observation x = 1, the bet lambda_1 = sqrt(2 log(2/alpha) / (1/4 * 1 * log 2)),
    truncated at c / m: K+(m) = 1 + min(lambda_1, 1/(2m)) (1 - m), K-(m) = 1 - min(lambda_1, 1/(2(1-m))) (1 - m).
    At m = 0.02 the mixture (K+ + K-)/2 is computed here and the interval must reject m iff >= 20."""
    lam = math.sqrt(2 * math.log(40) / (0.25 * math.log(2)))
    m = 0.02
    kp = 1 + min(lam, 0.5 / m) * (1 - m)
    km = 1 - min(lam, 0.5 / (1 - m)) * (1 - m)
    assert (kp + km) / 2 < 20  # one image cannot reject any m yet
    assert S.betting_cs([1.0])[0].low == 0.0


def test_paired_increase_detects_a_clear_increase():
    base = [False] * 60
    cand = [i % 5 != 0 for i in range(60)]  # 80 % against 0 %
    b = S.paired_increase_cs(base, cand)
    assert b.value == pytest.approx(0.8) and b.low > 0.5 and b.high <= 1.0
    same = S.paired_increase_cs(cand, cand)
    assert same.value == 0 and same.low < 0 < same.high


def test_resurgence_only_where_the_erasure_is_established():
    b, why = S.resurgence_cs(orig=(60, 64), unl=(1, 64), ft=(40, 64))
    assert not why and b.low < (40 / 64 - 1 / 64) / (60 / 64 - 1 / 64) < b.high and 0.3 < b.low < b.high < 1.2
    b, why = S.resurgence_cs(orig=(1, 1), unl=(0, 1), ft=(1, 1))  # one image each: nothing established
    assert math.isnan(b.low) and "not established" in why
    b, why = S.resurgence_cs(orig=(3, 64), unl=(3, 64), ft=(10, 64))  # the erasure removed nothing
    assert "not established" in why


def test_paired_increase_covers_at_every_look():
    """Pairs with baseline rate 0.1 and candidate 0.2 (increase 0.1), looked at every 8 pairs:
    the share of streams whose interval ever misses 0.1 stays under alpha."""
    rng = np.random.default_rng(2)
    runs, n, ever = 100, 80, 0
    for _ in range(runs):
        u = rng.random(n)
        base = list(u < 0.1)
        cand = list((u < 0.1) ^ (rng.random(n) < 0.1))  # flips 10 % of pairs: rate 0.1 * 0.9 + 0.9 * 0.1 = 0.18
        inc = 0.18 - 0.1
        if any(not (b := S.paired_increase_cs(base[:t], cand[:t])).low <= inc <= b.high for t in range(8, n + 1, 8)):
            ever += 1
    assert ever / runs < 0.05
