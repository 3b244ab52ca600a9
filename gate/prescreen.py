"""``gate prescreen``: how much of the unlearning edit a candidate undoes, without generating
a single image (seconds instead of minutes).

Given the original, the unlearned and the candidate weights (the candidate as any ``--update``
the gate accepts; a LoRA is fused first):

* ``kv_undo``: for every cross-attention key/value projection, the unlearning edit's effect on
  the erased concept's text embeddings, ``A_l = (Wu_l - Wo_l) E``, and the candidate's change,
  ``B_l = (Wc_l - Wu_l) E`` (E: the token embeddings of the concept's prompts). The score is the
  share of the edit that the candidate reverses, ``-sum_l <B_l, A_l> / sum_l ||A_l||^2``: 0 when
  the candidate leaves the concept's keys and values alone, 1 when it puts them back where the
  original had them. This is the linear model's restored fraction (``docs/theory.md``) read off
  the real layers.
* ``eps_undo`` and ``guidance_undo`` (``noise_undo``): the same question asked of the UNet's
  noise prediction for the concept's prompts, one forward pass per model and noise level.
* ``weight_undo``: the same projection in weight space over every tensor the unlearning changed,
  ``-<Wc - Wu, Wu - Wo> / ||Wu - Wo||^2``.

Given a fine-tuning data folder instead of a candidate (``data_overlap``): the overlap between
the erased concept's embedding directions and the directions the data's conditioning excites,
weighted by how strongly (the eigenvalues of the data's embedding second moment): the two
quantities that set resurgence in the linear model, measured before any training.

How well these predict the measured resurgence is validated on the small world's study
(``benchmarks/prescreen_validation.py``, output in ``results/prescreen/``).

Memory: one pipeline. The pre-screen runs on the pipeline the check has loaded (the unlearned
model, on the check's device and dtype): the candidate is the update applied to it (a LoRA
fused for the weight-space scores), the original is its UNet and text encoder read into the same
modules (``gate.inplace``), and the unlearned weights are read back at the end and checked
(checksum) to be the ones the check loaded. What it may spend is the policy's ``prescreen``
budget (``gate.policy.PrescreenBudget``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gate.policy import PrescreenBudget

KV = ("attn2.to_k.weight", "attn2.to_v.weight")
# the budget the small world's validation was measured with (results/prescreen/)
VALIDATED_BUDGET = PrescreenBudget(latents=8, timesteps=(200, 500, 800), latent_size=None, weights=True)
FORWARD_CHUNK = 16  # latents per UNet call (twice that with the unconditional half)


def token_embeddings(pipe, prompts: list[str]) -> torch.Tensor:
    """(tokens, dim): the text encoder's output for every real token (BOS to EOS) of the prompts."""
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        h = pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]
    mask = tok.attention_mask.bool().to(h.device)
    return h[mask].float()


def token_states(pipe, prompts: list[str]) -> torch.Tensor:
    from gate.sd import prompt_ids

    return pipe.text_encoder(prompt_ids(pipe, prompts))[0]


@dataclass
class _Side:
    """What one model (original, unlearned or candidate) gives on a concept's probes."""

    emb: torch.Tensor  # token embeddings (tokens, dim), float32
    eps: list[torch.Tensor] = field(default_factory=list)  # conditional prediction per timestep
    guide: list[torch.Tensor] = field(default_factory=list)  # eps(concept) - eps("") per timestep


def _probe_latents(
    pipe, n_prompts: int, budget: PrescreenBudget, seed: int = 0, max_size: int | None = None
) -> torch.Tensor:
    cfg = pipe.unet.config
    size = cfg.sample_size if budget.latent_size is None else min(budget.latent_size, cfg.sample_size)
    size = min(size, max_size) if max_size else size  # never larger than the check's own images
    g = torch.Generator().manual_seed(seed)
    return torch.randn((budget.latents * n_prompts, cfg.in_channels, size, size), generator=g)


def _sides(pipe, prompt_sets: dict[str, list[str]], lat: dict[str, torch.Tensor], budget: PrescreenBudget):
    """Every concept's probes on one model, batched together: the conditional and unconditional
    predictions of all concepts' latents go through the UNet in as few calls as the chunk allows
    (at SD size on a CPU a small-latent forward costs mostly the weights' reads, so one call of
    many latents costs little more than one of a few)."""
    unet = pipe.unet
    dev, dt = unet.device, unet.dtype
    names = list(prompt_sets)
    out = {n: _Side(token_embeddings(pipe, prompt_sets[n])) for n in names}
    with torch.no_grad():
        cond = torch.cat([token_states(pipe, prompt_sets[n]).repeat_interleave(budget.latents, 0) for n in names])
        uncond = token_states(pipe, [""]).expand_as(cond)
        x = torch.cat([lat[n] for n in names]).to(dev, dt)
        sizes = [len(lat[n]) for n in names]
        for t in budget.timesteps:
            e_c, e_u = [], []
            for i in range(0, len(x), FORWARD_CHUNK):
                xi = x[i : i + FORWARD_CHUNK]
                k = len(xi)
                tt = torch.full((2 * k,), t, dtype=torch.long, device=dev)
                states = torch.cat([cond[i : i + k], uncond[i : i + k]])
                e = unet(torch.cat([xi, xi]), tt, encoder_hidden_states=states).sample.float().cpu()
                e_c.append(e[:k])
                e_u.append(e[k:])
            for n, ec, eu in zip(names, torch.cat(e_c).split(sizes), torch.cat(e_u).split(sizes), strict=True):
                out[n].eps.append(ec)
                out[n].guide.append(ec - eu)
    return out


def _noise_scores(o: _Side, u: _Side, c: _Side) -> dict[str, float]:
    """``eps_undo``: the share of the unlearning edit's change in the conditional noise
    prediction that the candidate reverses (projection onto the reversed edit);
    ``guidance_undo``: how far the candidate brings the concept's guidance vector
    ``g = eps(concept) - eps(empty prompt)``, the part classifier-free guidance amplifies, back to
    the original's: ``1 - |g_c - g_o| / |g_u - g_o|`` (1: back at the original's, 0: no closer
    than the unlearned model's). Drift that moves both predictions alike cancels in ``g``."""
    num = den = d_c = d_u = 0.0
    for eo, eu, ec, go, gu, gc in zip(o.eps, u.eps, c.eps, o.guide, u.guide, c.guide, strict=True):
        a, b = eu - eo, ec - eu
        num += -float((a * b).sum())
        den += float((a * a).sum())
        d_c += float(((gc - go) ** 2).sum())
        d_u += float(((gu - go) ** 2).sum())
    return {
        "eps_undo": num / den if den > 0 else 0.0,
        "guidance_undo": 1.0 - (d_c / d_u) ** 0.5 if d_u > 0 else 0.0,
    }


class _Weights:
    """The weight-space terms, gathered in one pass while the candidate's weights are loaded:
    ``-<Wc - Wu, Wu - Wo>`` and ``||Wu - Wo||^2`` over every UNet tensor, and the three versions of
    each cross-attention K/V projection (small) for ``kv_undo``."""

    def __init__(self) -> None:
        self.num = self.den = 0.0
        self.kv: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def gather(self, cand_unet, unlearned: Any, original: Any) -> None:
        with torch.no_grad():
            for k, wc in cand_unet.state_dict().items():
                if not wc.is_floating_point():
                    continue
                wu, wo = unlearned[k].float(), original[k].float()
                wc = wc.detach().float().cpu().clone()  # the live tensor is overwritten next
                du = wu - wo
                dd = float((du * du).sum())
                if k.endswith(KV):
                    self.kv[k] = (wo, wu, wc)
                if dd == 0.0:
                    continue
                self.num += -float(((wc - wu) * du).sum())
                self.den += dd

    @property
    def weight_undo(self) -> float | None:
        return self.num / self.den if self.den > 0 else None

    def kv_undo(self, e_o: torch.Tensor, e_u: torch.Tensor, e_c: torch.Tensor) -> dict[str, Any]:
        num = den = 0.0
        layers = {}
        for k, (wo, wu, wc) in self.kv.items():
            a = wu @ e_u.T - wo @ e_o.T  # what unlearning did to the concept's keys/values
            b = wc @ e_c.T - wu @ e_u.T  # what the candidate does to them
            aa, ab = float((a * a).sum()), float((a * b).sum())
            num += -ab
            den += aa
            if aa > 0:
                layers[k.removesuffix(".weight")] = round(-ab / aa, 4)
        return {"kv_undo": num / den if den > 0 else None, "kv_edit_energy": den, "layers": layers}


class Screen:
    """The pre-screen's probes and terms, gathered side by side wherever the models are loaded:
    ``probe(side, pipe)`` for the unlearned, candidate and original sides (the same fixed latents
    for all three), ``gather`` for the weight-space pass while the candidate's weights are loaded,
    then ``scores()``. ``gate check`` calls them at the stages where it holds each model anyway
    (no extra pass over the weights but the optional weight-space one); ``prescreen_pipe`` calls
    them on their own."""

    def __init__(
        self, pipe, prompt_sets: dict[str, list[str]], budget: PrescreenBudget, max_size: int | None = None
    ) -> None:
        self.prompt_sets = prompt_sets
        self.budget = budget
        self.lat = {name: _probe_latents(pipe, len(ps), budget, max_size=max_size) for name, ps in prompt_sets.items()}
        self.sides: dict[str, dict[str, _Side]] = {}
        self.w = _Weights()
        self.timings: dict[str, float] = {}

    def timed(self, name: str, fn):
        t = time.perf_counter()
        r = fn()
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 2)
        return r

    def probe(self, side: str, pipe) -> None:
        self.sides[side] = self.timed(side, lambda: _sides(pipe, self.prompt_sets, self.lat, self.budget))

    def gather(self, cand_unet, unlearned: Any, original: Any) -> None:
        self.timed("weights", lambda: self.w.gather(cand_unet, unlearned, original))

    @property
    def seconds(self) -> float:
        return round(sum(self.timings.values()), 2)

    def scores(self) -> dict[str, dict[str, Any]]:
        o, u, c = (self.sides[k] for k in ("original", "unlearned", "candidate"))
        out = {}
        for name in self.prompt_sets:
            out[name] = {
                **_noise_scores(o[name], u[name], c[name]),
                **self.w.kv_undo(o[name].emb, u[name].emb, c[name].emb),
                "weight_undo": self.w.weight_undo,
                "seconds": self.seconds,
                "budget": {**vars(self.budget), "timesteps": list(self.budget.timesteps)},
                "stages_s": dict(self.timings),
            }
            if not self.budget.weights:
                out[name].update(kv_undo=None, weight_undo=None, note="weight-space scores off (prescreen.weights)")
            elif out[name]["kv_edit_energy"] == 0:
                out[name]["note"] = "the unlearning did not change cross-attention K/V on this concept"
            else:
                out[name]["note"] = None
        return out


def fuse_update(pipe) -> None:
    """A loaded LoRA folded into the weights (the weight-space pass reads Wc from the modules)."""
    if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go


def log_scores(out: dict[str, dict[str, Any]], log) -> None:
    for name, r in out.items():
        r.pop("layers", None)
        kv = "n/a" if r["kv_undo"] is None else f"{r['kv_undo']:.2f}"
        w = "n/a" if r["weight_undo"] is None else f"{r['weight_undo']:.2f}"
        log(
            f"pre-screen {name}: the candidate undoes {r['eps_undo']:.2f} of the erasure's effect on the "
            f"noise prediction, {r['guidance_undo']:.2f} of it on the concept's guidance (K/V on the "
            f"concept's tokens {kv}, weights {w}) in {r['seconds']:.1f} s; report only, the verdict comes "
            "from the images"
        )


class CheckScreen:
    """The pre-screen inside ``gate check``, at the stages where the check holds each model
    anyway: the unlearned model's probes after the baseline images, the candidate's after its
    images (and, with ``prescreen.weights``, the weight-space pass while its weights are loaded),
    the original's once it is read in for its images. It costs its probes' UNet forwards (and that
    one pass), nothing else. Reported only: the small world's validation does not support failing
    on it (docs/theory.md), so the verdict comes from the images. A failure that is not bad input
    only drops the pre-screen (logged)."""

    def __init__(self, check, log=lambda m: None) -> None:
        o, budget = check.opts, check.policy.prescreen
        self.check, self.log = check, log
        on = bool(o.original and o.update and o.prescreen and budget.enabled and check.procs.is_main)
        self.sc = None
        if on:
            from gate.sd import vae_factor

            px = check.policy.sampler.height
            size = px // vae_factor(check.pipe) if px else None  # the images' latent side
            prompts = {c.name: list(c.prompts) for c in check.concepts}
            self.sc = self._step(lambda: Screen(check.pipe, prompts, budget, max_size=size))

    def _step(self, fn):
        from gate.errors import GateError

        t0 = time.perf_counter()
        try:
            return fn()
        except GateError:
            raise  # bad input stops the check, as it would anywhere
        except Exception as e:  # the pre-screen only informs
            self.log(f"pre-screen skipped: {type(e).__name__}: {str(e)[:200]}")
            self.sc = None
        finally:
            self.check.timings["prescreen"] += time.perf_counter() - t0

    def unlearned(self) -> None:
        if self.sc:
            self._step(lambda: self.sc.probe("unlearned", self.check.pipe))

    def candidate(self) -> None:
        if not self.sc:
            return
        self._step(lambda: self.sc.probe("candidate", self.check.pipe))
        if self.sc and self.sc.budget.weights:
            self._step(self._weights)

    def _weights(self) -> None:
        from gate.inplace import component_state, pipeline_folder

        o = self.check.opts
        ck = pipeline_folder(o.checkpoint, config=o.config, allow_pickle=o.allow_pickle)
        orig = pipeline_folder(o.original, config=o.config, allow_pickle=o.allow_pickle, flag="--original")
        if ck is None or orig is None:
            self.log("pre-screen: weight-space scores need diffusers folders (single-file input); left out")
            self.sc.budget = dataclasses.replace(self.sc.budget, weights=False)  # type: ignore[union-attr]
            return
        fuse_update(self.check.pipe)  # the candidate's images are made: its LoRA may be folded in now
        self.sc.gather(self.check.pipe.unet, component_state(ck, "unet"), component_state(orig, "unet"))  # type: ignore[union-attr]

    def original(self, pipe) -> None:
        if self.sc:
            self._step(lambda: self.sc.probe("original", pipe))

    def result(self) -> dict[str, Any]:
        if not self.sc or "original" not in self.sc.sides:
            return {}
        out = self._step(self.sc.scores) or {}
        self.log(f"pre-screen stages (s): {self.sc.timings if self.sc else {}}")
        log_scores(out, self.log)
        return out
