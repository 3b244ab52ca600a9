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

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gate.errors import InternalError
from gate.policy import PrescreenBudget

KV = ("attn2.to_k.weight", "attn2.to_v.weight")
# the budget the small world's validation was measured with (results/prescreen/)
VALIDATED_BUDGET = PrescreenBudget(latents=8, timesteps=(200, 500, 800), latent_size=None)
FORWARD_CHUNK = 8  # latents per UNet call


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


def _probe_latents(pipe, n_prompts: int, budget: PrescreenBudget, seed: int = 0) -> torch.Tensor:
    cfg = pipe.unet.config
    size = cfg.sample_size if budget.latent_size is None else min(budget.latent_size, cfg.sample_size)
    g = torch.Generator().manual_seed(seed)
    return torch.randn((budget.latents * n_prompts, cfg.in_channels, size, size), generator=g)


def _side(pipe, prompts: list[str], lat: torch.Tensor, budget: PrescreenBudget) -> _Side:
    unet = pipe.unet
    dev, dt = unet.device, unet.dtype
    out = _Side(token_embeddings(pipe, prompts))
    with torch.no_grad():
        cond = token_states(pipe, prompts).repeat_interleave(budget.latents, 0)
        uncond = token_states(pipe, [""]).expand_as(cond)
        x = lat.to(dev, dt)
        for t in budget.timesteps:
            e_c, e_u = [], []
            for i in range(0, len(x), FORWARD_CHUNK):
                xi = x[i : i + FORWARD_CHUNK]
                tt = torch.full((len(xi),), t, dtype=torch.long, device=dev)
                e_c.append(unet(xi, tt, encoder_hidden_states=cond[i : i + FORWARD_CHUNK]).sample.float().cpu())
                e_u.append(unet(xi, tt, encoder_hidden_states=uncond[i : i + FORWARD_CHUNK]).sample.float().cpu())
            ec, eu = torch.cat(e_c), torch.cat(e_u)
            out.eps.append(ec)
            out.guide.append(ec - eu)
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


def prescreen_pipe(
    pipe,
    *,
    checkpoint: str,
    original: str,
    update: str,
    prompt_sets: dict[str, list[str]],
    budget: PrescreenBudget = VALIDATED_BUDGET,
    lora_scale: float = 1.0,
    config: str | None = None,
    allow_pickle: bool = False,
    log=lambda m: None,
) -> dict[str, dict[str, Any]]:
    """Scores per concept on ``pipe``, the loaded unlearned model (``checkpoint``), which is given
    back holding exactly the weights it came with (checked). Stages: the unlearned model's
    probes; the update applied (fused) for the candidate's probes and the weight-space pass; the
    original's UNet and text encoder read in for its probes; the unlearned weights read back."""
    from gate.inplace import component_state, fingerprint, pipeline_folder, swap_components
    from gate.model import apply_update

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    parts = ("unet", "text_encoder")
    before = {p: fingerprint(getattr(pipe, p)) for p in parts}
    ck_dir = pipeline_folder(checkpoint, config=config, allow_pickle=allow_pickle, flag="--checkpoint")
    or_dir = pipeline_folder(original, config=config, allow_pickle=allow_pickle, flag="--original")
    saved = None
    if ck_dir is None:  # a single-file checkpoint has no per-component files to read back: keep a copy
        saved = {p: {k: v.detach().cpu().clone() for k, v in getattr(pipe, p).state_dict().items()} for p in parts}
    lat = {name: _probe_latents(pipe, len(ps), budget) for name, ps in prompt_sets.items()}

    def stage(name: str, fn):
        t = time.perf_counter()
        r = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        return r

    u = stage("unlearned", lambda: {n: _side(pipe, ps, lat[n], budget) for n, ps in prompt_sets.items()})
    w = _Weights()
    try:
        stage("apply_update", lambda: apply_update(pipe, update, lora_scale=lora_scale, allow_pickle=allow_pickle))
        c = stage("candidate", lambda: {n: _side(pipe, ps, lat[n], budget) for n, ps in prompt_sets.items()})
        if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
            pipe.fuse_lora()
            pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
        if budget.weights:
            unl = component_state(ck_dir, "unet") if ck_dir else saved["unet"]  # type: ignore[index]
            orig = component_state(or_dir, "unet") if or_dir else None
            if orig is None:
                orig = _original_unet_apart(original, config, allow_pickle)
            stage("weights", lambda: w.gather(pipe.unet, unl, orig))
        if or_dir is not None:
            stage("load_original", lambda: swap_components(pipe, or_dir, parts, f"--original {original}"))
        else:  # a single-file original: read it apart (more memory: a second UNet for a moment)
            stage("load_original", lambda: _swap_original_apart(pipe, original, config, allow_pickle))
        o = stage("original", lambda: {n: _side(pipe, ps, lat[n], budget) for n, ps in prompt_sets.items()})
    finally:
        if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
            pipe.unload_lora_weights()
        if ck_dir is not None:
            stage("restore", lambda: swap_components(pipe, ck_dir, parts, f"--checkpoint {checkpoint}"))
        else:
            from gate.inplace import load_into

            for p in parts:
                load_into(getattr(pipe, p), saved[p], f"--checkpoint {checkpoint} ({p})")  # type: ignore[index]
        if {p: fingerprint(getattr(pipe, p)) for p in parts} != before:
            raise InternalError("the pre-screen did not give the unlearned model back unchanged (checksums differ)")
    seconds = round(time.perf_counter() - t0, 2)
    out = {}
    for name in prompt_sets:
        out[name] = {
            **_noise_scores(o[name], u[name], c[name]),
            **w.kv_undo(o[name].emb, u[name].emb, c[name].emb),
            "weight_undo": w.weight_undo,
            "seconds": seconds,
            "budget": {**vars(budget), "timesteps": list(budget.timesteps)},
            "stages_s": timings,
        }
        if not budget.weights:
            out[name].update(kv_undo=None, weight_undo=None, note="weight-space scores off (prescreen.weights)")
        elif out[name]["kv_edit_energy"] == 0:
            out[name]["note"] = "the unlearning did not change cross-attention K/V on this concept"
        else:
            out[name]["note"] = None
    log(f"pre-screen stages (s): {timings}")
    return out


def _original_unet_apart(original: str, config: str | None, allow_pickle: bool):
    from gate.model import load_checkpoint

    opipe = load_checkpoint(original, config=config, allow_pickle=allow_pickle, flag="--original")[0]
    return {k: v.detach() for k, v in opipe.unet.state_dict().items()}


def _swap_original_apart(pipe, original: str, config: str | None, allow_pickle: bool) -> None:
    from gate.inplace import load_into
    from gate.model import load_checkpoint

    opipe = load_checkpoint(original, config=config, allow_pickle=allow_pickle, flag="--original")[0]
    for p in ("unet", "text_encoder"):
        load_into(getattr(pipe, p), getattr(opipe, p).state_dict(), f"--original {original} ({p})")
    del opipe


def weight_prescreen(
    original: str,
    checkpoint: str,
    update: str | None,
    concept_prompts: list[str],
    **kwargs: Any,
) -> dict[str, Any]:
    """The scores for one erased concept (see ``weight_prescreen_many``)."""
    return weight_prescreen_many(original, checkpoint, update, {"concept": concept_prompts}, **kwargs)["concept"]


def weight_prescreen_many(
    original: str,
    checkpoint: str,
    update: str | None,
    prompt_sets: dict[str, list[str]],
    *,
    lora_scale: float = 1.0,
    config: str | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
    dtype=None,
    budget: PrescreenBudget = VALIDATED_BUDGET,
    log=lambda m: None,
) -> dict[str, dict[str, Any]]:
    """``gate prescreen``: loads the unlearned model once (on ``device``, in ``dtype``) and runs
    ``prescreen_pipe`` on it; pickled weights only with ``allow_pickle``."""
    from gate.errors import BadInput
    from gate.model import load_checkpoint, preflight_update

    if not update:
        raise BadInput("the pre-screen needs the candidate (--update)")
    t0 = time.perf_counter()
    pipe = load_checkpoint(checkpoint, config=config, allow_pickle=allow_pickle, device=device, dtype=dtype)[0]
    preflight_update(pipe, update, allow_pickle=allow_pickle)
    t_load = time.perf_counter() - t0
    out = prescreen_pipe(
        pipe, checkpoint=checkpoint, original=original, update=update, prompt_sets=prompt_sets, budget=budget,
        lora_scale=lora_scale, config=config, allow_pickle=allow_pickle, log=log,
    )  # fmt: skip
    for r in out.values():
        r["seconds"] = round(r["seconds"] + t_load, 2)
        r["device"] = device
    return out


def data_overlap(
    checkpoint: str, data_dir: Path, concept_prompts: list[str], *, energy: float = 0.9, device: str = "cpu"
) -> dict[str, Any]:
    """Linear-model risk of a proposed fine-tuning set: ``sum_i (lambda_i / lambda_max) *
    ||U_f^T v_i||^2 / r`` with (lambda_i, v_i) the eigenpairs of the data's token-embedding
    second moment and U_f the top directions (``energy`` of the variance) of the concept's."""
    from gate.model import load_checkpoint

    t0 = time.perf_counter()
    pipe = load_checkpoint(checkpoint, device=device)[0]
    rows = [json.loads(x) for x in (Path(data_dir) / "metadata.jsonl").read_text().splitlines() if x.strip()]
    caps = [r.get("text") or r.get("caption") or "" for r in rows]
    embs = torch.cat([token_embeddings(pipe, caps[i : i + 256]) for i in range(0, len(caps), 256)])
    S = embs.T @ embs / len(embs)
    lam, V = torch.linalg.eigh(S)
    ef = token_embeddings(pipe, concept_prompts)
    _, sv, vt = torch.linalg.svd(ef, full_matrices=False)
    share = torch.cumsum(sv**2, 0) / (sv**2).sum()
    r = int((share < energy).sum()) + 1
    U = vt[:r].T  # dim x r
    proj = ((V.T @ U) ** 2).sum(1)  # ||U^T v_i||^2 for each eigen-direction
    score = float((lam.clamp(min=0) / lam.max() * proj).sum() / r)
    return {
        "data_overlap": score,
        "concept_rank": r,
        "n_captions": len(caps),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def prescreen_stage(check, log=lambda m: None) -> dict[str, Any]:
    """The fast first stage: how much of the unlearning edit the candidate undoes, per concept,
    before any image, on the check's loaded pipeline (its device and dtype), within the policy's
    budget. Reported only: the small world's validation does not support failing on it
    (docs/theory.md), so the verdict always comes from the images."""
    from gate.errors import GateError

    opts = check.opts
    budget = check.policy.prescreen
    if not (opts.original and opts.update and opts.prescreen and budget.enabled):
        return {}
    t0 = time.perf_counter()
    try:
        out = prescreen_pipe(
            check.pipe, checkpoint=opts.checkpoint, original=opts.original, update=opts.update,
            prompt_sets={c.name: list(c.prompts) for c in check.concepts}, budget=budget,
            lora_scale=opts.lora_scale, config=opts.config, allow_pickle=opts.allow_pickle, log=log,
        )  # fmt: skip
    except GateError:
        raise  # bad input stops here, as it would in the image stage; a failed restore too
    except Exception as e:  # the pre-screen only informs; the verdict comes from the images
        log(f"pre-screen skipped: {type(e).__name__}: {str(e)[:200]}")
        return {}
    finally:
        check.timings["prescreen"] += time.perf_counter() - t0
    for name, r in out.items():
        r.pop("layers", None)
        kv = "n/a" if r["kv_undo"] is None else f"{r['kv_undo']:.2f}"
        log(
            f"pre-screen {name}: the candidate undoes {r['eps_undo']:.2f} of the erasure's effect on the "
            f"noise prediction, {r['guidance_undo']:.2f} of it on the concept's guidance (K/V on the "
            f"concept's tokens {kv}, weights {r['weight_undo'] or 0:.2f}) in {r['seconds']:.1f} s; "
            "report only, the verdict comes from the images"
        )
    return out
