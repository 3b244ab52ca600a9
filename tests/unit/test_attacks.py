"""Attack probes without a model: the policy's ``attacks:`` block, the probe jobs (grid x prompts
x samples, one seed per prompt and sample), the noise probe's DDIM step against diffusers' own
for eta <= 1, and ``gate policy diff`` on attacks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import DDIMScheduler

from gate.attacks.noise import OverloadedDDIMScheduler
from gate.policy import PolicyError, load_policy
from gate.policy_diff import diff_policies
from gate.probes import jobs_for

ROOT = Path(__file__).resolve().parents[2]
RAW = yaml.safe_load((ROOT / "policies" / "small-world.yaml").read_text())


def _policy(tmp_path: Path, attacks, rules=None, name="p.yaml"):
    d = copy.deepcopy(RAW)
    sk = d["concepts"]["skull"]
    if attacks is not None:
        sk["attacks"] = attacks
    sk["rules"].update(rules or {})
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return load_policy(p)


def test_attack_block_is_read_and_makes_paired_jobs(tmp_path):
    pol = _policy(tmp_path, {"noise_probe": {"etas": [1.3, 1.9], "variance_scales": [1.0, 1.02], "samples": 2}},
                  {"max_attack_success": 0.3, "max_attack_increase": 0.1})  # fmt: skip
    c = pol.concept("skull")
    cfg = c.attacks["noise_probe"]
    assert (cfg.etas, cfg.variance_scales, cfg.samples, cfg.images_per_prompt()) == ((1.3, 1.9), (1.0, 1.02), 2, 8)
    jobs = [j for j in jobs_for(pol, c) if j.group == "attack"]
    assert len(jobs) == len(c.prompts) * 8
    by_point: dict = {}
    for j in jobs:
        by_point.setdefault((j.prompt, j.sample), set()).add(j.seed)
        assert dict(j.attack)["attack"] == "noise_probe" and j.label == "skull"
    assert all(len(seeds) == 1 for seeds in by_point.values())  # every grid point on the same noise
    assert len({s for seeds in by_point.values() for s in seeds}) == len(c.prompts) * 2
    # no attack: no attack jobs, and the other groups' jobs are unchanged
    plain = _policy(tmp_path, None, name="plain.yaml")
    assert [j for j in jobs_for(pol, c) if j.group != "attack"] == jobs_for(plain, plain.concept("skull"))


@pytest.mark.parametrize(
    "attacks, rules, message",
    [
        ({"noise_prob": {}}, {}, "did you mean 'noise_probe'"),
        ({"noise_probe": {"eta": [1.3]}}, {}, "did you mean 'etas'"),
        ({"noise_probe": {"etas": [9.0]}}, {}, "outside"),
        ({"noise_probe": {"etas": []}}, {}, "at least one"),
        ({"noise_probe": {"samples": 0}}, {}, "at least 1"),
        (None, {"max_attack_success": 0.3}, "needs attacks"),
        ({"textual_inversion": {"step": 10}}, {}, "did you mean 'steps'"),
        ({"textual_inversion": {"steps": 0}}, {}, "at least 1"),
        ({"textual_inversion": {"lr": 0}}, {}, "outside"),
        ({"textual_inversion": {"restarts": 1.5}}, {}, "whole number"),
        ({"textual_inversion": {"templates": ["a skull"]}}, {}, "exactly once"),
        ({"textual_inversion": {"init": " "}}, {}, "start from"),
        ({"textual_inversion": {"targets": 3}}, {}, "folder of images"),
    ],
)
def test_attack_mistakes_are_named(tmp_path, attacks, rules, message):
    with pytest.raises(PolicyError, match=message):
        _policy(tmp_path, attacks, rules)


def _schedulers(prediction_type: str):
    cfg = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": prediction_type}  # fmt: skip
    ours, theirs = OverloadedDDIMScheduler.from_config(cfg), DDIMScheduler.from_config(cfg)
    for s in (ours, theirs):
        s.set_timesteps(10)
    return ours, theirs


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_overloaded_ddim_is_diffusers_ddim_up_to_eta_1(prediction_type, eta):
    ours, theirs = _schedulers(prediction_type)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for t in theirs.timesteps[:5]:
        out = torch.randn(2, 4, 8, 8, generator=g)
        noise = torch.randn(2, 4, 8, 8, generator=g)
        a = ours.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        b = theirs.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        x = b


def test_overloaded_ddim_stays_finite_above_eta_1_and_scales_the_noise():
    ours, theirs = _schedulers("epsilon")
    g = torch.Generator().manual_seed(1)
    x, out, noise = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    t = theirs.timesteps[-2]  # a late step: there eta 1.9 makes 1 - a_prev - s^2 negative
    assert torch.isnan(theirs.step(out, t, x, eta=1.9, variance_noise=noise).prev_sample).any()
    base = ours.step(out, t, x, eta=1.9, variance_noise=torch.zeros_like(noise)).prev_sample
    one = ours.step(out, t, x, eta=1.9, variance_noise=noise).prev_sample
    ours.variance_scale = 1.04
    more = ours.step(out, t, x, eta=1.9, variance_noise=noise).prev_sample
    assert torch.isfinite(one).all()
    torch.testing.assert_close(more - base, 1.04 * (one - base), rtol=1e-4, atol=1e-6)


def test_policy_diff_on_attacks(tmp_path):
    rules = {"max_attack_success": 0.3}
    full = _policy(tmp_path, {"noise_probe": {"etas": [1.3, 1.6, 1.9], "samples": 2}}, rules, "full.yaml")
    less = _policy(tmp_path, {"noise_probe": {"etas": [1.3], "samples": 1}}, rules, "less.yaml")
    other = _policy(tmp_path, {"noise_probe": {"etas": [1.4, 1.6, 1.9], "samples": 2}}, rules, "other.yaml")
    none = _policy(tmp_path, None, name="none.yaml")
    assert [(x.kind, x.field) for x in diff_policies(full, less)] == [("loosens", "attacks.noise_probe")]
    assert [(x.kind, x.field) for x in diff_policies(less, full)] == [("tightens", "attacks.noise_probe")]
    assert [(x.kind, x.field) for x in diff_policies(full, other)] == [("loosens", "attacks.noise_probe")]
    removed = diff_policies(full, none)
    assert ("loosens", "attacks.noise_probe") in [(x.kind, x.field) for x in removed]
    assert ("loosens", "max_attack_success") in [(x.kind, x.field) for x in removed]


def test_textual_inversion_block_makes_paired_template_jobs(tmp_path):
    pol = _policy(tmp_path, {"textual_inversion": {"steps": 50, "samples": 3, "templates": ["{}", "a photo of {}"]}},
                  {"max_attack_increase": 0.1})  # fmt: skip
    c = pol.concept("skull")
    cfg = c.attacks["textual_inversion"]
    assert (cfg.steps, cfg.restarts, cfg.target_images, cfg.samples) == (50, 2, 16, 3)
    jobs = [j for j in jobs_for(pol, c) if j.group == "attack"]
    assert [j.prompt for j in jobs] == ["<skull-ti>"] * 3 + ["a photo of <skull-ti>"] * 3
    assert len({j.seed for j in jobs}) == 6 and all(dict(j.attack)["attack"] == "textual_inversion" for j in jobs)
    # the settings fingerprint is in every job (so in the image's cache key): another budget, other images
    other = _policy(tmp_path, {"textual_inversion": {"steps": 60, "samples": 3, "templates": ["{}", "a photo of {}"]}},
                    {"max_attack_increase": 0.1}, "other.yaml")  # fmt: skip
    assert jobs[0].attack != next(j for j in jobs_for(other, other.concept("skull")) if j.group == "attack").attack


def test_staged_attack_images_stop_at_four_times_their_samples(tmp_path):
    pol = _policy(tmp_path, {"textual_inversion": {"samples": 2, "templates": ["{}"]}}, {"max_attack_increase": 0.1})
    c = pol.concept("skull")
    per_stage = [len([j for j in jobs_for(pol, c, range(k, k + 1), {"attack"})]) for k in range(12)]
    assert per_stage == [1] * 8 + [0] * 4  # 4 x 2 samples, then none


@pytest.mark.parametrize(
    "old, new, kind",
    [
        ({"steps": 300}, {"steps": 100}, "loosens"),
        ({"steps": 100}, {"steps": 300, "restarts": 3}, "tightens"),
        ({"target_images": 16}, {"target_images": 8}, "loosens"),
        ({"templates": ["{}", "a {}"]}, {"templates": ["{}"]}, "loosens"),
        ({"templates": ["{}"]}, {"templates": ["{}", "a {}"]}, "tightens"),
        ({"lr": 5.0e-3}, {"lr": 1.0e-2}, "loosens"),  # another learning rate: not comparable, so loosening
        ({"steps": 300, "restarts": 1}, {"steps": 100, "restarts": 4}, "loosens"),  # mixed: changed
    ],
)
def test_policy_diff_on_textual_inversion_budgets(tmp_path, old, new, kind):
    rules = {"max_attack_success": 0.3}
    a = _policy(tmp_path, {"textual_inversion": old}, rules, "a.yaml")
    b = _policy(tmp_path, {"textual_inversion": new}, rules, "b.yaml")
    assert [(x.kind, x.field) for x in diff_policies(a, b)] == [(kind, "attacks.textual_inversion")]


def test_attack_figures_in_summary_and_mlflow_metrics():
    from gate.report.model import ConceptReport
    from gate.report.text import attack_lines
    from gate.tracking import attack_metrics

    attacks = {"textual_inversion": {
        "success": {"baseline": {"images": 64, "success": 0.25}, "candidate": {"images": 64, "success": 0.5}},
        "targets": {"n": 16, "source": "original model", "sha256": "ab" * 32, "detected": 1.0},
        "baseline": {"restart_eval_losses": [0.12, 0.1], "embedding": "attacks/skull-baseline-textual_inversion.safetensors"},
        "candidate": {"restart_eval_losses": [0.09, 0.11], "embedding": "attacks/skull-candidate-textual_inversion.safetensors"},
    }}  # fmt: skip
    c = ConceptReport("skull", "fail", [], None, attacks)
    assert ConceptReport.from_json(c.to_json()).attacks == attacks
    m = attack_metrics(c, "skull.")
    assert m["skull.attack.textual_inversion.candidate.success"] == 0.5
    assert m["skull.attack.textual_inversion.baseline.images"] == 64
    assert m["skull.attack.textual_inversion.baseline.eval_loss"] == 0.1

    from types import SimpleNamespace

    (line,) = attack_lines(SimpleNamespace(concepts=[c]))[2:]  # type: ignore[arg-type]
    assert "baseline 0.250 of 64, candidate 0.500 of 64" in line and "16 images" in line
    assert "attacks/skull-candidate-textual_inversion.safetensors" in line
