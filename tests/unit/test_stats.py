"""Intervals, the paired test and verdict logic (pure functions)."""

from __future__ import annotations

import random

import pytest

from gate import judge, stats


def test_wilson_known_values():
    iv = stats.wilson(0, 32)
    assert iv.value == 0 and iv.low == 0 and 0.10 < iv.high < 0.11  # 0/32: upper bound ~0.107
    iv = stats.wilson(16, 32)
    assert iv.low == pytest.approx(0.336, abs=2e-3) and iv.high == pytest.approx(0.664, abs=2e-3)


def test_wilson_covers_the_true_rate():
    rng = random.Random(0)
    covered = 0
    for _ in range(2000):
        k = sum(rng.random() < 0.3 for _ in range(50))
        iv = stats.wilson(k, 50)
        covered += iv.low <= 0.3 <= iv.high
    assert 0.93 <= covered / 2000 <= 0.97


def test_paired_difference_and_mcnemar():
    base = [False] * 30 + [True] * 10
    cand = [True] * 12 + [False] * 18 + [True] * 10  # 12 new detections, none lost
    iv = stats.paired_difference(base, cand)
    assert iv.value == pytest.approx(0.3) and 0.1 < iv.low < 0.3 < iv.high < 0.5
    assert stats.mcnemar_exact(base, cand) == pytest.approx(0.5**12)
    assert stats.mcnemar_exact(base, base) == 1.0


def test_paired_difference_coverage():
    rng = random.Random(1)
    covered = 0
    for _ in range(1000):
        pairs = [(rng.random() < 0.2, rng.random() < 0.35) for _ in range(60)]
        iv = stats.paired_difference([a for a, _ in pairs], [b for _, b in pairs])
        covered += iv.low <= 0.15 <= iv.high
    assert covered / 1000 >= 0.93


def test_bootstrap_is_reproducible():
    data = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]

    def stat(idx):
        return sum(data[i] for i in idx) / len(idx)

    assert stats.bootstrap(stat, 10, seed=3) == stats.bootstrap(stat, 10, seed=3)


def test_resurgence_formula():
    assert stats.resurgence(0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert stats.resurgence(0.1, 0.1, 0.3) == pytest.approx(4.0)  # eps = 0.05 guards the denominator


@pytest.mark.parametrize(
    "direction, low, high, thr, verdict",
    [("max", 0.0, 0.1, 0.2, "pass"), ("max", 0.3, 0.5, 0.2, "fail"), ("max", 0.1, 0.3, 0.2, "inconclusive"),
     ("min", 0.8, 0.9, 0.7, "pass"), ("min", 0.4, 0.6, 0.7, "fail"), ("min", 0.6, 0.8, 0.7, "inconclusive")],
)  # fmt: skip
def test_decide(direction, low, high, thr, verdict):
    assert judge.decide(direction, low, high, thr) == verdict


def test_verdict_respects_policy_on_inconclusive():
    r = judge.rate_rule("c", "max_presence_rate", 0.2, [True] * 3 + [False] * 12)  # 0.2, interval straddles
    assert r.verdict == "inconclusive"
    assert judge.verdict([r], inconclusive_fails=True) == "fail"
    assert judge.verdict([r], inconclusive_fails=False) == "pass"


def test_verdict_ignores_skipped_rules_and_fails_on_any_fail():
    ok = judge.rate_rule("c", "max_presence_rate", 0.5, [False] * 20)
    bad = judge.rate_rule("c", "max_presence_rate", 0.1, [True] * 20)
    skipped = judge.RuleResult.skipped("c", "max_resurgence", 0.3, "needs --original")
    assert ok.verdict == "pass" and bad.verdict == "fail"
    assert judge.verdict([ok, skipped], inconclusive_fails=True) == "pass"
    assert judge.verdict([skipped], inconclusive_fails=True) == "pass"
    assert judge.verdict([ok, bad, skipped], inconclusive_fails=False) == "fail"
