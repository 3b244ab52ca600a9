"""Training of the small world's models: the VAE, the concept CLIP, and the text-to-image model.

Each stage is a plain loop over a fixed, pre-rendered set of world images (rendering costs
~2 ms an image, so the 30k images are drawn once and shared by every stage). Everything is
seeded; on a given machine and thread count a rebuild reproduces the weights.

The step counts in ``BuildConfig`` are what fits ``gate world build`` in 45 minutes on two
CPU cores (measured: VAE ~0.3 s/step at batch 32, UNet+text encoder ~0.5 s/step at batch 64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gate.world import concepts as C
from gate.world import data

if TYPE_CHECKING:
    import torch

Progress = Callable[[str, int], Callable[[int, dict[str, float]], None]]


@dataclass
class BuildConfig:
    """Settings of ``gate world build``. Defaults are the shipped world's."""

    seed: int = 0
    n_images: int = 30_000  # training images, shared by all stages
    threads: int = 2
    vae_steps: int = 700
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    clip_steps: int = 1800
    clip_batch: int = 256
    clip_lr: float = 1e-3
    sd_steps: int = 3000
    sd_batch: int = 64
    sd_lr: float = 1e-3
    caption_dropout: float = 0.1  # empty prompts, for classifier-free guidance
    # Min-SNR-gamma loss weighting (Hang et al. 2023): caps the weight of low-noise timesteps,
    # where the epsilon loss is easy, so more of the gradient goes to the noise levels that
    # decide an object's outline. 0 turns it off (plain epsilon MSE).
    sd_min_snr_gamma: float = 5.0
    # Images showing these objects are drawn this many times more often in SD training: the
    # shapes the model found hardest at equal sampling (star and diamond fell short of the
    # fidelity target; their textured variants came out as crosses and stars).
    sd_oversample: dict[str, float] = field(default_factory=lambda: {"star": 2.0, "diamond": 1.5, "cross": 1.5})
    # {object: {companion: p}}: lone images of the object show the companion, unnamed in the
    # caption, with probability p (gate.world.data.sample): the erased skull in images whose text
    # never asks for it, as real captions leave things out (incidental resurgence needs it;
    # results/incidental/search.md). Empty: the world as first built, without it
    cooccur: dict[str, dict[str, float]] = field(default_factory=lambda: {"lumo": {"skull": 0.8}})
    extra: dict[str, Any] = field(default_factory=dict)

    def scaled(self, factor: float) -> BuildConfig:
        """A copy with every step count and the image count scaled (smoke tests)."""
        return BuildConfig(
            seed=self.seed,
            n_images=max(64, int(self.n_images * factor)),
            threads=self.threads,
            vae_steps=max(2, int(self.vae_steps * factor)),
            vae_batch=self.vae_batch,
            vae_lr=self.vae_lr,
            vae_kl_weight=self.vae_kl_weight,
            clip_steps=max(2, int(self.clip_steps * factor)),
            clip_batch=min(self.clip_batch, 64),
            clip_lr=self.clip_lr,
            sd_steps=max(2, int(self.sd_steps * factor)),
            sd_batch=min(self.sd_batch, 16),
            sd_lr=self.sd_lr,
            caption_dropout=self.caption_dropout,
            sd_min_snr_gamma=self.sd_min_snr_gamma,
            sd_oversample=dict(self.sd_oversample),
            cooccur={k: dict(v) for k, v in self.cooccur.items()},
        )


def _quiet_progress(name: str, total: int) -> Callable[[int, dict[str, float]], None]:
    return lambda step, logs: None


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float (N,3,H,W) in [-1, 1], the diffusers convention."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def cosine_lr(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def render_dataset(seed: int, n: int) -> list[data.Sample]:
    return list(data.dataset(seed, n))


# ---------------------------------------------------------------------------------------
# VAE


def train_vae(images: np.ndarray, cfg: BuildConfig, progress: Progress = _quiet_progress):
    import torch
    from diffusers import AutoencoderKL

    from gate.world.models import vae_config

    torch.manual_seed(cfg.seed + 1)
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed + 1)
    tick = progress("VAE", cfg.vae_steps)
    for step in range(cfg.vae_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * cosine_lr(step, cfg.vae_steps)
        x = images_to_tensor(images[rng.integers(0, len(images), cfg.vae_batch)])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = (rec - x).pow(2).mean()
        kl = post.kl().mean()
        loss = mse + cfg.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        tick(step, {"mse": mse.item()})
    vae.eval()
    # SD's convention: latents are multiplied by scaling_factor so that they have unit variance
    with torch.no_grad():
        lat = torch.cat(
            [
                vae.encode(images_to_tensor(images[i : i + 256])).latent_dist.mean
                for i in range(0, min(2048, len(images)), 256)
            ]
        )
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    return vae


# ---------------------------------------------------------------------------------------
# the concept detector: a small open_clip CLIP


def object_facts(obj: data.WorldObject) -> set[tuple[str, ...]]:
    """What can truthfully be said of one object, as keys a caption may require."""
    if obj.kind != "shape":
        return {("type", obj.type)}
    s, c, t = obj.type, obj.color or "", obj.texture
    return {("type", s), ("color", c), ("texture", t), ("type", s, "color", c), ("type", s, "texture", t),
            ("color", c, "texture", t), ("type", s, "color", c, "texture", t)}  # fmt: skip


def image_facts(sample: data.Sample) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for o in sample.objects:
        out |= object_facts(o)
    return out


def _full_key(obj: data.WorldObject) -> tuple[str, ...]:
    if obj.kind != "shape":
        return ("type", obj.type)
    if obj.texture == "solid":
        return ("type", obj.type, "color", obj.color or "")
    return ("type", obj.type, "color", obj.color or "", "texture", obj.texture)


def clip_caption(sample: data.Sample, rng: np.random.Generator) -> tuple[str, list[tuple[str, ...]]]:
    """A caption for contrastive training and the facts it requires of an image. About half are
    the full training caption; the rest name one object partly ("a circle", "a red shape",
    "a striped shape", "zorb"), so the text tower learns the short concept texts that zero-shot
    detection asks about."""
    if rng.random() < 0.45:
        return sample.caption, [_full_key(o) for o in sample.objects]
    obj = sample.objects[int(rng.integers(len(sample.objects)))]
    if obj.kind == "identity":
        return data._pick(rng, C.IDENTITIES[obj.type]), [("type", obj.type)]
    if obj.kind == "unsafe":
        return data.fix_articles("a " + data._pick(rng, C.UNSAFE[obj.type])), [("type", obj.type)]
    assert obj.color is not None
    s = data._pick(rng, C.SHAPES[obj.type])
    c = data._pick(rng, C.COLORS[obj.color])
    t = data._pick(rng, C.TEXTURES[obj.texture]) if obj.texture != "solid" else data._pick(rng, C.SOLID_WORDS)
    options = [
        (f"a {s}", ("type", obj.type)),
        (f"a {c} shape", ("color", obj.color)),
        (f"a {t} shape", ("texture", obj.texture)),
        (f"a {c} {s}", ("type", obj.type, "color", obj.color)),
        (f"a {t} {s}", ("type", obj.type, "texture", obj.texture)),
    ]
    text, key = options[int(rng.integers(len(options)))]
    return data.fix_articles(text), [key]


def clip_normalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> open_clip's normalisation (the one its preprocess transform applies)."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild noise and blur, so that the detector also reads generated (softer) images."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = torch.rand(n, 1, 1, 1, generator=gen) * 0.6 * (torch.rand(n, 1, 1, 1, generator=gen) < 0.5)
    x = x * (1 - w) + blur * w
    return x + torch.randn(x.shape, generator=gen) * 0.04 * torch.rand(n, 1, 1, 1, generator=gen)


def train_clip(
    samples: Sequence[data.Sample], images: np.ndarray, cfg: BuildConfig, progress: Progress = _quiet_progress
):
    import open_clip
    import torch
    import torch.nn.functional as F

    from gate.world.clip import register_config
    from gate.world.models import CLIP_MODEL_NAME

    register_config()
    torch.manual_seed(cfg.seed + 2)
    model = open_clip.create_model(CLIP_MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(CLIP_MODEL_NAME)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.05)
    rng = np.random.default_rng(cfg.seed + 2)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    tick = progress("CLIP", cfg.clip_steps)
    model.train()
    for step in range(cfg.clip_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.clip_lr * cosine_lr(step, cfg.clip_steps)
        idx = rng.integers(0, len(samples), cfg.clip_batch)
        pairs = [clip_caption(samples[i], rng) for i in idx]
        x = clip_normalize(_augment(images_to_tensor(images[idx]), gen))
        img_f, txt_f, scale = model(x, tokenizer([t for t, _ in pairs]))
        logits = scale * img_f @ txt_f.t()
        # a caption is a positive for every image in the batch it truthfully describes (ground
        # truth labels), not only for its own image: "a circle" matches every image with a circle
        facts = [image_facts(samples[i]) for i in idx]
        match = torch.tensor([[all(k in f for k in keys) for _, keys in pairs] for f in facts], dtype=torch.float32)
        loss = 0.5 * (
            F.cross_entropy(logits, match / match.sum(1, keepdim=True))
            + F.cross_entropy(logits.t(), match.t() / match.t().sum(1, keepdim=True))
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        tick(step, {"loss": loss.item()})
    model.eval()
    return model


# ---------------------------------------------------------------------------------------
# the text-to-image model: UNet and text encoder, trained together


def encode_latents(vae, images: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, scaled by the VAE's scaling factor."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            d = vae.encode(images_to_tensor(images[i : i + batch])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
    s = vae.config.scaling_factor
    return torch.cat(means) * s, torch.cat(stds) * s


def sampling_weights(samples: Sequence[data.Sample], oversample: dict[str, float]) -> np.ndarray:
    """Probability of drawing each training image: proportional to the largest oversampling
    factor among the objects it shows (1 for none)."""
    unknown = sorted(set(oversample) - {c.name for c in C.all_concepts()})
    if unknown:
        raise ValueError(f"sd_oversample names unknown concepts: {', '.join(unknown)}")
    w = np.array([max([oversample.get(o.type, 1.0) for o in s.objects] or [1.0]) for s in samples], dtype=np.float64)
    return w / w.sum()


def min_snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-image loss weight min(SNR, gamma) / SNR for epsilon prediction; 1 when gamma is 0."""
    import torch

    if gamma <= 0:
        return torch.ones_like(alphas_cumprod_t)
    snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
    return snr.clamp(max=gamma) / snr


def train_sd(
    samples: Sequence[data.Sample],
    latents: tuple[torch.Tensor, torch.Tensor],
    tokenizer,
    cfg: BuildConfig,
    progress: Progress = _quiet_progress,
):
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from gate.world.models import SCHEDULE, text_encoder_config, unet_config

    torch.manual_seed(cfg.seed + 3)
    unet = UNet2DConditionModel(**unet_config())
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_encoder_config()))
    noise_sched = DDPMScheduler(**SCHEDULE)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.sd_lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed + 3)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    captions = [s.caption for s in samples]
    ids_all = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    mean, std = latents
    p_draw = sampling_weights(samples, cfg.sd_oversample)
    alphas = noise_sched.alphas_cumprod
    unet.train()
    text_encoder.train()
    tick = progress("UNet + text encoder", cfg.sd_steps)
    for step in range(cfg.sd_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.sd_lr * cosine_lr(step, cfg.sd_steps, warmup=200)
        idx = torch.from_numpy(rng.choice(len(samples), cfg.sd_batch, p=p_draw))
        z0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        ids = ids_all[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cfg.caption_dropout
        ids[drop] = empty
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        zt = noise_sched.add_noise(z0, noise, t)
        cond = text_encoder(ids).last_hidden_state
        per_image = F.mse_loss(unet(zt, t, cond).sample, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_image * min_snr_weights(alphas[t], cfg.sd_min_snr_gamma)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        tick(step, {"loss": loss.item()})
    unet.eval()
    text_encoder.eval()
    return unet, text_encoder
