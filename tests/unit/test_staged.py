"""Sequential verdicts without a model: the ``stopping:`` policy block, stage planning (every
stage covers every prompt; a stopped run's images are a prefix of the full run's), the rules
judged on their confidence sequences, and R's "not applicable" in both paths."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from gate import judge
from gate.check_parts import Outcome
from gate.judge_seq import OPEN, groups_needed, judge_open
from gate.policy import PolicyError, load_policy
from gate.probes import jobs_for
from gate.report.model import ConceptReport, Report
from gate.staged import ConceptRun, Sides

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "policies" / "small-world.yaml").read_text())


def _policy(tmp_path: Path, stopping: dict | None = None, **concept) -> object:
    d = copy.deepcopy(RAW)
    if stopping is not None:
        d["stopping"] = stopping
    d["concepts"]["skull"].update(concept)
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_policy(p)


# -- the policy block ------------------------------------------------------------------------


def test_stopping_defaults_to_fixed(tmp_path):
    pol = _policy(tmp_path)
    assert pol.stopping.method == "fixed" and not pol.stopping.sequential
    assert pol.stopping.max_for(8) == 32  # 4 x n, the simulation's choice


def test_stopping_sequential_is_read(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential", "stage_samples": 2, "max_samples": 20, "alpha": 0.01})
    s = pol.stopping
    assert (s.method, s.stage_samples, s.max_for(8), s.alpha) == ("sequential", 2, 20, 0.01)
    assert s.describe(8) == {
        "method": "sequential",
        "stage_samples": 2,
        "max_samples": 20,
        "alpha": 0.01,
        "until": "all",
    }


@pytest.mark.parametrize(
    "stopping, message",
    [
        ({"methd": "sequential"}, "did you mean 'method'"),
        ({"method": "adaptive"}, "use fixed or sequential"),
        ({"method": "sequential", "alpha": 0.7}, "between 0 and 0.5"),
        ({"method": "sequential", "stage_samples": 0}, "at least 1"),
        ({"method": "sequential", "stage_samples": 4, "max_samples": 2}, "less than one stage"),
        ({"method": "sequential", "max_samples": "many"}, "a whole number"),
        ("sequential", "a mapping"),
    ],
)
def test_stopping_mistakes_are_named(tmp_path, stopping, message):
    with pytest.raises(PolicyError, match=message):
        _policy(tmp_path, stopping)


# -- stage planning ----------------------------------------------------------------------------


def test_every_stage_covers_every_prompt_and_the_stages_are_a_prefix(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential", "stage_samples": 3, "max_samples": 8})
    c = pol.concept("skull")
    run = ConceptRun(c, pol.stopping.max_for(c.samples_per_prompt), has_original=True)
    stages = []
    while run.samples < run.most:
        stages.append(run.next_jobs(pol, pol.stopping.stage_samples))
    assert [len({j.sample for j in s}) for s in stages] == [3, 3, 2]  # the last stage stops at the maximum
    for s in stages:  # every prompt of every group, in every stage
        for group, prompts in (("concept", c.prompts), ("incidental", c.incidental_prompts)):
            assert {j.prompt for j in s if j.group == group} == set(prompts)
        assert {(j.label, j.prompt) for j in s if j.group == "retained"} == {
            (r, p) for r, ps in c.retained.items() for p in ps
        }
    staged = sorted((j.group, j.label, j.prompt, j.sample, j.seed) for s in stages for j in s)
    fixed = sorted((j.group, j.label, j.prompt, j.sample, j.seed) for j in jobs_for(pol, c, range(8)))
    assert staged == fixed  # the same images, seeds and all
    # and a fixed run's own jobs are the first samples_per_prompt of them
    assert {j.seed for j in jobs_for(pol, c)} <= {j.seed for j in jobs_for(pol, c, range(32))}


def test_a_decided_group_is_not_generated_again(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential"})
    c = pol.concept("skull")
    run = ConceptRun(c, 32, has_original=False)
    for rule in ("max_presence_rate", "max_increase_over_baseline", "max_resurgence", "min_retained_fidelity"):
        run.decided[rule] = judge.RuleResult.skipped("skull", rule, 0.0, "test")
    assert groups_needed(run.open_rules) == {"incidental"}
    assert {j.group for j in run.next_jobs(pol, 1)} == {"incidental"}
    assert not run.wants_original()


def test_sides_visit_the_held_model_first():
    s = Sides.__new__(Sides)
    s.side = "baseline"
    assert s.order(True) == ["baseline", "candidate", "original"]
    s.side = "original"
    assert s.order(True) == ["original", "baseline", "candidate"]
    assert s.order(False) == ["baseline", "candidate"]  # the original no longer needed
    s.side = "candidate"
    assert s.order(False) == ["candidate", "baseline"]


# -- the rules on their sequences --------------------------------------------------------------


def _outs(pol, c, group, hits, samples):
    jobs = [j for j in jobs_for(pol, c, range(samples)) if j.group == group]
    return [Outcome(j, float(h), bool(h)) for j, h in zip(jobs, hits, strict=False)]


def test_a_clear_presence_fails_at_the_first_stage_and_an_unclear_one_stays_open(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential"}, rules={"max_presence_rate": 0.25})
    c = pol.concept("skull")
    base = _outs(pol, c, "concept", [0] * 8, 1)
    (r,) = judge_open(c, ["max_presence_rate"], base, _outs(pol, c, "concept", [1] * 8, 1), None,
                      alpha=0.05, stage=1, final=False)  # fmt: skip
    assert (r.verdict, r.n, r.stage) == (judge.FAIL, 8, 1) and r.low > 0.25
    (r,) = judge_open(c, ["max_presence_rate"], base, _outs(pol, c, "concept", [0] * 8, 1), None,
                      alpha=0.05, stage=1, final=False)  # fmt: skip
    assert r.verdict == OPEN and r.stage is None  # 0 of 8 cannot show a rate under 0.25 yet
    (r,) = judge_open(c, ["max_presence_rate"], base, _outs(pol, c, "concept", [0] * 8, 1), None,
                      alpha=0.05, stage=1, final=True)  # fmt: skip
    assert r.verdict == judge.INCONCLUSIVE and r.stage == 1


def test_the_sequence_is_wider_than_a_fixed_interval_at_the_same_n(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential"}, rules={"max_presence_rate": 0.25})
    c = pol.concept("skull")
    cand = _outs(pol, c, "concept", [1, 0, 0, 0] * 16, 8)
    (r,) = judge_open(c, ["max_presence_rate"], cand, cand, None, alpha=0.05, stage=8, final=False)
    w = judge.rate_rule("skull", "max_presence_rate", 0.25, [o.present for o in cand])
    assert r.low < w.low and r.high > w.high and math.isclose(r.observed, w.observed)


def test_r_is_not_applicable_while_the_erasure_shows_no_effect(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential"}, rules={"max_resurgence": 0.3})
    c = pol.concept("skull")
    same = _outs(pol, c, "concept", [1, 0] * 32, 8)
    (r,) = judge_open(c, ["max_resurgence"], same, same, same, alpha=0.05, stage=2, final=False)
    assert r.verdict == OPEN
    (r,) = judge_open(c, ["max_resurgence"], same, same, same, alpha=0.05, stage=8, final=True)
    assert r.verdict == judge.NOT_APPLICABLE and "not established" in r.note
    orig = _outs(pol, c, "concept", [1] * 64, 8)
    unl = _outs(pol, c, "concept", [0] * 64, 8)
    (r,) = judge_open(c, ["max_resurgence"], unl, unl, orig, alpha=0.05, stage=8, final=False)
    assert r.verdict == judge.PASS and r.high <= 0.3  # effect 1.0, candidate as erased: R near 0


def test_fixed_path_r_is_not_applicable_without_an_established_effect():
    same = [True, False] * 10
    r = judge.resurgence_rule("skull", 0.3, same, same, same, seed=0)
    assert r.verdict == judge.NOT_APPLICABLE and "not established" in r.note
    r = judge.resurgence_rule("skull", 0.3, [True] * 20, [False] * 20, [False] * 20, seed=0)
    assert r.verdict == judge.PASS


@pytest.mark.parametrize("inconclusive_fails, expected", [(True, judge.FAIL), (False, judge.PASS)])
def test_not_applicable_counts_as_the_policy_says_and_never_as_a_pass_of_the_rule(inconclusive_fails, expected):
    na = judge.RuleResult("skull", "max_resurgence", 0.3, 0.0, 0.0, 0.0, judge.NOT_APPLICABLE, 20)
    ok = judge.RuleResult("skull", "max_presence_rate", 0.25, 0.0, 0.0, 0.1, judge.PASS, 20)
    assert judge.verdict([ok, na], inconclusive_fails) == expected


def test_stopping_and_stage_round_trip_through_the_report():
    r = judge.RuleResult("skull", "max_presence_rate", 0.25, 1.0, 0.6, 1.0, judge.FAIL, 8, stage=1)
    stop = {"method": "sequential", "stages": 1, "images": {"baseline": 8, "candidate": 8}}
    c = ConceptReport.judged("skull", [r], True, stop)
    rep = Report("fail", "fail", {}, "gate check", 0, {}, "cpu", [c])
    back = Report.from_json(rep.to_json())
    assert back.concepts[0].stopping == stop and back.concepts[0].rules[0].stage == 1


def test_until_verdict_stops_a_failed_concept_and_reports_the_rest_as_stopped(tmp_path):
    pol = _policy(tmp_path, {"method": "sequential", "until": "verdict"},
                  rules={"max_presence_rate": 0.25, "max_incidental_rate": 0.1})  # fmt: skip
    c = pol.concept("skull")
    run = ConceptRun(c, 32, has_original=False)
    jobs = run.next_jobs(pol, 1)
    for side in ("baseline", "candidate"):  # every concept image shows the skull, no incidental one does
        run.outs[side] = [Outcome(j, 1.0, side == "candidate" and j.group == "concept") for j in jobs]
    run.judge(pol.stopping.alpha, pol.stopping.until)
    assert run.done and run.decided["max_presence_rate"].verdict == judge.FAIL
    inc = run.decided["max_incidental_rate"]
    assert inc.verdict == judge.INCONCLUSIVE and "stopped undecided" in inc.note
    # with until: all the same look leaves the incidental rule open
    again = ConceptRun(c, 32, has_original=False, outs=run.outs)
    again.judge(pol.stopping.alpha, "all")
    assert not again.done and again.open_rules == ["max_incidental_rate"]
    with pytest.raises(PolicyError, match="use all"):
        _policy(tmp_path, {"method": "sequential", "until": "first"})
