"""Training helpers that need no model: the SD sampler's weights over the data and the min-SNR
loss weights (the training stages themselves are in tests/integration/test_training_smoke.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gate.world import train as T


@pytest.fixture(scope="module")
def tiny():
    samples = T.render_dataset(0, 96)
    return samples, np.stack([s.image for s in samples])


def test_sd_sampling_oversamples_the_named_objects(tiny):
    samples, _ = tiny
    p = T.sampling_weights(samples, {"star": 2.0})
    assert p.sum() == pytest.approx(1.0)
    has_star = np.array([any(o.type == "star" for o in s.objects) for s in samples])
    assert has_star.any() and not has_star.all()
    # every image with a star is twice as likely as every image without one
    assert np.allclose(p[has_star], 2 * p[~has_star][0]) and np.allclose(p[~has_star], p[~has_star][0])
    assert np.allclose(T.sampling_weights(samples, {}), 1 / len(samples))
    with pytest.raises(ValueError, match="unknown concepts: hexagon"):
        T.sampling_weights(samples, {"hexagon": 2.0})


def test_min_snr_weights_cap_only_low_noise_steps():
    from diffusers import DDPMScheduler

    from gate.world.models import SCHEDULE

    a = DDPMScheduler(**SCHEDULE).alphas_cumprod
    w = T.min_snr_weights(a, 5.0)
    snr = a / (1 - a)
    assert torch.allclose(w[snr <= 5], torch.ones_like(w[snr <= 5]))  # noisy steps keep weight 1
    assert (w[snr > 5] < 1).all() and torch.allclose(w[snr > 5] * snr[snr > 5], torch.full_like(w[snr > 5], 5.0))
    assert torch.equal(T.min_snr_weights(a, 0.0), torch.ones_like(a))
