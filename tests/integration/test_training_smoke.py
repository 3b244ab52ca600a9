"""A few steps of each training stage, and a whole (tiny) build that loads back through the real APIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gate.world import train as T
from gate.world.build import build
from gate.world.vocab import make_tokenizer


@pytest.fixture(scope="module")
def tiny():
    samples = T.render_dataset(0, 96)
    return samples, np.stack([s.image for s in samples])


def _cfg():
    return T.BuildConfig(vae_steps=3, clip_steps=3, sd_steps=3, vae_batch=8, clip_batch=16, sd_batch=8)


def test_vae_steps_change_weights_and_set_scaling(tiny):
    _, images = tiny
    torch.manual_seed(1)
    vae = T.train_vae(images, _cfg())
    assert vae.config.scaling_factor != 0.18215 and np.isfinite(vae.config.scaling_factor)
    lat = vae.encode(T.images_to_tensor(images[:4])).latent_dist.mean
    assert lat.shape == (4, 4, 16, 16)


def test_clip_steps_lower_the_loss_on_a_fixed_batch(tiny):
    samples, images = tiny
    losses = []
    T.train_clip(samples, images, T.BuildConfig(clip_steps=12, clip_batch=32, clip_lr=2e-3),
                 lambda name, total: lambda step, logs: losses.append(logs["loss"]))  # fmt: skip
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_sd_steps_run_and_are_seeded(tiny):
    samples, images = tiny
    cfg = _cfg()
    vae = T.train_vae(images, cfg)
    lat = T.encode_latents(vae, images)
    tok = make_tokenizer(20)
    u1, _ = T.train_sd(samples, lat, tok, cfg)
    u2, _ = T.train_sd(samples, lat, tok, cfg)
    p1 = dict(u1.named_parameters())
    for name, p in u2.named_parameters():
        assert torch.equal(p, p1[name]), f"same seed, same weights: {name}"


def test_tiny_build_writes_loadable_world(tmp_path):
    rec = build(tmp_path / "w", T.BuildConfig().scaled(0.003), eval_kwargs=dict(n_clip=20, n_per_concept=1, steps=2))
    out = tmp_path / "w"
    assert (out / "MODEL_CARD.md").is_file()
    stored = json.loads((out / "build.json").read_text())
    assert stored["files"] == rec["files"] and "sd/unet/diffusion_pytorch_model.safetensors" in rec["files"]
    assert set(rec["quality"]["clip_accuracy"]) >= {"shape", "color", "texture", "identity", "unsafe"}
    from gate.pipeline import load_pipeline
    from gate.world.clip import WorldCLIP

    pipe = load_pipeline(out / "sd")
    img = pipe("a red circle", num_inference_steps=2, guidance_scale=2.0, output_type="np").images
    assert img.shape == (1, 32, 32, 3)
    WorldCLIP(out / "clip")
    assert not (tmp_path / "w.partial").exists()
