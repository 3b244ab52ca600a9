"""Contract tests over every registered attack, on the shipped small world's SD: each attack's
sampling or learning runs on a diffusers pipeline and gives it back unchanged (scheduler,
tokenizer, token table, trainable flags), is a function of its seed, and handles both epsilon
and v prediction. What an attack finds is measured in benchmarks/attacks.py, not here."""

from __future__ import annotations

import pytest
import torch

from gate.attacks import textual_inversion as T
from gate.attacks.config import ATTACK_CONFIGS, NoiseProbeConfig, TextualInversionConfig
from gate.attacks.noise import attack_sampling
from gate.generate import generate

TINY = {
    "noise_probe": NoiseProbeConfig(etas=(1.9,), variance_scales=(1.02,)),
    "textual_inversion": TextualInversionConfig(steps=3, batch_size=2, restarts=2, tokens=2, init="a skull"),
}


def test_every_attack_has_a_tiny_setting():
    assert set(TINY) == set(ATTACK_CONFIGS)


@pytest.fixture(scope="module")
def pipe(world_dir):
    from gate.pipeline import load_pipeline

    p = load_pipeline(world_dir / "sd")
    p.set_progress_bar_config(disable=True)
    return p


def _state(pipe):
    table = pipe.text_encoder.get_input_embeddings().weight
    return (type(pipe.scheduler), len(pipe.tokenizer), tuple(table.shape), table.detach().clone(),
            [p.requires_grad for p in pipe.unet.parameters()])  # fmt: skip


def _same(a, b):
    assert a[0] is b[0] and a[1:3] == b[1:3] and torch.equal(a[3], b[3]) and a[4] == b[4]


@pytest.fixture(scope="module")
def targets(pipe):
    return generate(pipe, ["a skull", "a skull and crossbones"] * 2, [1, 2, 3, 4], steps=4, guidance=3.0)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", list(TINY))
def test_attack_runs_and_gives_the_pipeline_back(name, prediction, pipe, targets):
    own = pipe.scheduler
    pipe.scheduler = type(own).from_config({**own.config, "prediction_type": prediction})
    try:
        before = _state(pipe)
        cfg = TINY[name]
        if name == "noise_probe":
            (setting,) = cfg.settings()
            with attack_sampling(pipe, setting) as extra:
                ims = generate(pipe, ["a skull"], [5], steps=4, guidance=3.0, pipe_kwargs=extra)
            assert len(ims) == 1 and extra["eta"] == 1.9
        else:
            lat = T.target_latents(pipe, targets, None, None)
            learned = T.learn(pipe, lat, cfg, cfg.placeholder("skull"), seed=11)
            assert learned.vectors.shape == (2, pipe.text_encoder.config.hidden_size)
            assert len(learned.restart_losses) == 2 and learned.chosen == min(
                range(2), key=learned.restart_losses.__getitem__
            )
            assert all(x == x for x in learned.restart_losses)  # no NaN
            with T.loaded(pipe, learned):
                ims = generate(
                    pipe, [t.format("<skull-ti>") for t in cfg.templates], [1, 2, 3, 4], steps=4, guidance=3.0
                )
            assert len(ims) == 4
        _same(before, _state(pipe))
    finally:
        pipe.scheduler = own


def test_textual_inversion_is_a_function_of_its_seed(pipe, targets):
    cfg = TextualInversionConfig(steps=3, batch_size=2, restarts=1)
    lat = T.target_latents(pipe, targets, None, None)
    a = T.learn(pipe, lat, cfg, "<x-ti>", seed=5)
    b = T.learn(pipe, lat, cfg, "<x-ti>", seed=5)
    c = T.learn(pipe, lat, cfg, "<x-ti>", seed=6)
    assert torch.equal(a.vectors, b.vectors) and a.restart_losses == b.restart_losses
    assert not torch.equal(a.vectors, c.vectors)
    assert not torch.equal(a.vectors, T._token_vectors(pipe, "a", 1))  # it moved from the initial word


def test_learned_token_changes_the_images_and_is_removed_after(pipe, targets):
    """With the token loaded the templates give other images than the initial word; after the
    block the placeholder is gone from the tokenizer (a prompt with it tokenizes as plain text)."""
    cfg = TextualInversionConfig(steps=10, batch_size=2, restarts=1, lr=5e-2)
    lat = T.target_latents(pipe, targets, None, None)
    learned = T.learn(pipe, lat, cfg, "<y-ti>", seed=1)
    plain = generate(pipe, ["a a"], [9], steps=4, guidance=3.0)[0]
    with T.loaded(pipe, learned):
        assert "<y-ti>" in pipe.tokenizer.get_vocab()
        attacked = generate(pipe, ["a <y-ti>"], [9], steps=4, guidance=3.0)[0]
    assert "<y-ti>" not in pipe.tokenizer.get_vocab()
    assert plain.tobytes() != attacked.tobytes()
