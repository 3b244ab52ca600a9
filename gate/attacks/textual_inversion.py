"""The textual inversion attack: one new token learned on images of the erased concept.

Pham et al. 2023 ("Circumventing Concept Erasure Methods for Text-to-Image Generative Models")
recovered erased concepts from all seven erasure methods they tried by learning a new word
embedding (textual inversion, Gal et al. 2022) on images of the concept, with the erased model
frozen. Here the same learning runs, with the same budget, restarts and seeds, on the unlearned
baseline and on the candidate; the question the gate asks is whether the update makes the
concept easier to recover.

Learning (per model): the target images are encoded by the pipeline's VAE (latent mean, times
its scaling factor); each step takes ``batch_size`` latents, a timestep and noise drawn from a
generator seeded by (seed, restart), a template with the placeholder token, and minimises the
pipeline's own training loss (epsilon or v prediction, by its scheduler's config) in the token's
vectors only: everything else is frozen, and the vectors enter through a forward hook on the
text encoder's token embedding, so the optimiser holds ``tokens x width`` numbers, not the
vocabulary. Restarts start from the same initial word with other noise; the restart with the
lowest loss on a fixed evaluation set (the same latents, timesteps and noise for every restart
and both models) is kept. The placeholder is added with diffusers' ``load_textual_inversion``
and removed with ``unload_textual_inversion``, and the learned vectors are saved in diffusers'
format (``{token: tensor}``), so a reviewer loads the evidence with the same call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from gate.attacks.config import TextualInversionConfig

EVAL_DRAWS = 32  # (latent, timestep, noise) draws of the fixed evaluation set that picks the restart


@dataclass
class Learned:
    """A learned token: its vectors (tokens x width, float32, CPU) and how it was learned."""

    placeholder: str
    vectors: torch.Tensor
    restart_losses: list[float]  # evaluation loss of each restart (the lowest was kept)
    chosen: int
    init_loss: float  # evaluation loss of the initial word's vectors, before any step
    seconds: float = 0.0
    curve: list[float] = field(default_factory=list)  # the kept restart's training loss, every 10 steps

    def info(self) -> dict[str, Any]:
        return {
            "placeholder": self.placeholder,
            "restart_eval_losses": [round(x, 6) for x in self.restart_losses],
            "chosen_restart": self.chosen,
            "init_eval_loss": round(self.init_loss, 6),
            "seconds": round(self.seconds, 1),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """diffusers' format: ``pipe.load_textual_inversion(file, token=...)`` reads it."""
        return {self.placeholder: self.vectors.contiguous()}


def target_latents(pipe, images: list, height: int | None, width: int | None) -> torch.Tensor:
    """The target images as the pipeline's latents (the VAE's mean, scaled), on its device."""
    vae = pipe.vae
    px = pipe.image_processor.preprocess(images, height=height, width=width)
    px = px.to(device=vae.device, dtype=vae.dtype)
    with torch.no_grad():
        lat = vae.encode(px).latent_dist.mean * vae.config.scaling_factor
    return lat


def _token_vectors(pipe, words: str, n: int) -> torch.Tensor:
    """The mean input embedding of ``words``' tokens, repeated ``n`` times: the start of learning."""
    ids = pipe.tokenizer(words, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"textual_inversion.init {words!r} has no tokens")
    table = pipe.text_encoder.get_input_embeddings().weight
    v = table[torch.tensor(ids, device=table.device)].float().mean(0)
    return v.detach().cpu().repeat(n, 1)


@contextlib.contextmanager
def added_token(pipe, placeholder: str, vectors: torch.Tensor) -> Iterator[list[int]]:
    """Within the block the tokenizer knows ``placeholder`` (for several vectors, diffusers'
    ``placeholder placeholder_1 ...``), its rows hold ``vectors``; yields the token ids. The
    tokenizer and the text encoder's table are put back afterwards, whatever happens."""
    te = pipe.text_encoder
    pipe.load_textual_inversion(vectors.to(te.dtype), token=placeholder)
    names = [placeholder] + [f"{placeholder}_{i}" for i in range(1, vectors.shape[0])]
    try:
        yield [pipe.tokenizer.convert_tokens_to_ids(t) for t in names]
    finally:
        pipe.unload_textual_inversion(names)


@contextlib.contextmanager
def _trainable(pipe, ids: list[int], vec: torch.nn.Parameter) -> Iterator[None]:
    """The token rows ``ids`` read from ``vec`` (a forward hook on the token embedding), every
    model weight frozen; all put back afterwards."""
    emb = pipe.text_encoder.get_input_embeddings()
    id_t = torch.tensor(ids, device=emb.weight.device)

    def hook(module, inputs, output):
        tokens = inputs[0]
        for k in range(len(ids)):
            mask = (tokens == id_t[k]).unsqueeze(-1)
            output = torch.where(mask, vec[k].to(output.dtype), output)
        return output

    mods = [pipe.unet, pipe.text_encoder, pipe.vae]
    flags = [[p.requires_grad for p in m.parameters()] for m in mods]
    for m in mods:
        m.requires_grad_(False)
    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        for m, fl in zip(mods, flags, strict=True):
            for p, f in zip(m.parameters(), fl, strict=True):
                p.requires_grad_(f)


class _Objective:
    """The pipeline's denoising loss for prompts with the placeholder, on the target latents."""

    def __init__(self, pipe, latents: torch.Tensor, cfg: TextualInversionConfig, placeholder: str) -> None:
        from diffusers import DDPMScheduler

        self.pipe, self.latents, self.cfg = pipe, latents, cfg
        self.sched = DDPMScheduler.from_config(pipe.scheduler.config)
        self.T = int(self.sched.config.num_train_timesteps)
        prompts = [t.format(placeholder) for t in cfg.templates]
        tok = pipe.tokenizer
        ids = tok(pipe.maybe_convert_prompt(prompts, tok), padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids  # fmt: skip
        self.ids = ids.to(pipe.text_encoder.device)

    def draw(self, g: torch.Generator, n: int) -> tuple[torch.Tensor, ...]:
        """``n`` (latent index, template index, timestep, noise) draws from ``g`` (CPU)."""
        idx = torch.randint(0, len(self.latents), (n,), generator=g)
        tpl = torch.randint(0, len(self.ids), (n,), generator=g)
        t = torch.randint(0, self.T, (n,), generator=g)
        noise = torch.randn((n, *self.latents.shape[1:]), generator=g)
        return idx, tpl, t, noise

    def loss(self, draw: tuple[torch.Tensor, ...]) -> torch.Tensor:
        idx, tpl, t, noise = draw
        unet = self.pipe.unet
        dev = unet.device
        lat = self.latents[idx.to(self.latents.device)]
        noise = noise.to(dev, lat.dtype)
        t = t.to(dev)
        noisy = self.sched.add_noise(lat, noise, t)
        enc = self.pipe.text_encoder(self.ids[tpl.to(self.ids.device)])[0]
        pred = unet(noisy.to(unet.dtype), t, encoder_hidden_states=enc.to(unet.dtype)).sample
        kind = self.sched.config.prediction_type
        target = self.sched.get_velocity(lat, noise, t) if kind == "v_prediction" else noise
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def evaluate(self, draws: list[tuple[torch.Tensor, ...]]) -> float:
        with torch.no_grad():
            return float(sum(self.loss(d).item() for d in draws) / len(draws))


def learn(
    pipe, latents: torch.Tensor, cfg: TextualInversionConfig, placeholder: str, seed: int,
    progress: Callable[[int], None] | None = None,
) -> Learned:  # fmt: skip
    """Learns the placeholder's vectors on ``pipe`` (frozen) from the target ``latents``: ``restarts``
    x ``steps`` Adam steps, seeds from ``seed``; the pipeline is left as it was."""
    import time

    t0 = time.perf_counter()
    init = _token_vectors(pipe, cfg.init, cfg.tokens)
    dev = pipe.text_encoder.device
    with added_token(pipe, placeholder, init) as ids:
        obj = _Objective(pipe, latents, cfg, placeholder)
        ge = torch.Generator().manual_seed(seed)
        per = min(cfg.batch_size, 8)
        evals = [obj.draw(ge, per) for _ in range(max(1, EVAL_DRAWS // per))]
        best: tuple[float, int, torch.Tensor, list[float]] | None = None
        losses, done = [], 0
        init_loss = float("nan")
        for r in range(cfg.restarts):
            vec = torch.nn.Parameter(init.clone().to(dev))
            opt = torch.optim.AdamW([vec], lr=cfg.lr, weight_decay=0.0)
            g = torch.Generator().manual_seed(seed + 7919 * (r + 1))
            curve: list[float] = []
            with _trainable(pipe, ids, vec):
                if r == 0:
                    init_loss = obj.evaluate(evals)
                for step in range(cfg.steps):
                    with torch.enable_grad():
                        loss = obj.loss(obj.draw(g, cfg.batch_size))
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                    opt.step()
                    if step % 10 == 0:
                        curve.append(round(float(loss.item()), 6))
                    done += 1
                    if progress:
                        progress(done)
                ev = obj.evaluate(evals)
            losses.append(ev)
            if best is None or ev < best[0]:
                best = (ev, r, vec.detach().float().cpu().clone(), curve)
    assert best is not None
    return Learned(placeholder, best[2], losses, best[1], init_loss, time.perf_counter() - t0, best[3])


@contextlib.contextmanager
def loaded(pipe, learned: Learned) -> Iterator[None]:
    """Within the block the pipeline's prompts may use the learned token."""
    with added_token(pipe, learned.placeholder, learned.vectors):
        yield
