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
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

KV = ("attn2.to_k.weight", "attn2.to_v.weight")


def token_embeddings(pipe, prompts: list[str]) -> torch.Tensor:
    """(tokens, dim): the text encoder's output for every real token (BOS to EOS) of the prompts."""
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        h = pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]
    mask = tok.attention_mask.bool().to(h.device)
    return h[mask].float()


def _fused_unet_state(pipe) -> dict[str, torch.Tensor]:
    if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    return {k: v.detach().float().clone() for k, v in pipe.unet.state_dict().items()}


def weight_prescreen(
    original: str,
    checkpoint: str,
    update: str | None,
    concept_prompts: list[str],
    *,
    lora_scale: float = 1.0,
    config: str | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """The scores for one erased concept (see ``weight_prescreen_many``)."""
    return weight_prescreen_many(
        original, checkpoint, update, {"concept": concept_prompts}, lora_scale=lora_scale, config=config,
        allow_pickle=allow_pickle, device=device,
    )["concept"]  # fmt: skip


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
) -> dict[str, dict[str, Any]]:
    """Scores per concept (name -> its prompts); the three models load once for all concepts,
    on ``device``; pickled weights only with ``allow_pickle`` (as for the check itself)."""
    from gate.model import apply_update, load_checkpoint

    t0 = time.perf_counter()

    def load(spec: str, flag: str):
        return load_checkpoint(spec, config=config, allow_pickle=allow_pickle, device=device, flag=flag)[0]

    p_o = load(original, "--original")
    p_u = load(checkpoint, "--checkpoint")
    p_c = load(checkpoint, "--checkpoint")
    apply_update(p_c, update, lora_scale=lora_scale, allow_pickle=allow_pickle)
    so = {k: v.detach().float() for k, v in p_o.unet.state_dict().items()}
    su = {k: v.detach().float() for k, v in p_u.unet.state_dict().items()}
    sc = _fused_unet_state(p_c)
    weight_undo = _weight_undo(so, su, sc)
    t_load = time.perf_counter() - t0
    out = {}
    for name, prompts in prompt_sets.items():
        t1 = time.perf_counter()
        e_o, e_u, e_c = (token_embeddings(p, prompts) for p in (p_o, p_u, p_c))
        num = den = 0.0
        layers = {}
        for k in so:
            if not k.endswith(KV):
                continue
            a = su[k] @ e_u.T - so[k] @ e_o.T  # what unlearning did to the concept's keys/values
            b = sc[k] @ e_c.T - su[k] @ e_u.T  # what the candidate does to them
            aa = float((a * a).sum())
            ab = float((a * b).sum())
            num += -ab
            den += aa
            if aa > 0:
                layers[k.removesuffix(".weight")] = round(-ab / aa, 4)
        out[name] = {
            **noise_undo(p_o, p_u, p_c, prompts),
            "kv_undo": num / den if den > 0 else None,
            "weight_undo": weight_undo,
            "kv_edit_energy": den,
            "layers": layers,
            "seconds": round(t_load + time.perf_counter() - t1, 2),
            "note": None if den > 0 else "the unlearning did not change cross-attention K/V on this concept",
        }
    return out


def _weight_undo(so: dict, su: dict, sc: dict) -> float | None:
    wn = wd = 0.0
    for k in so:
        du = su[k] - so[k]
        dd = float((du * du).sum())
        if dd == 0.0:
            continue
        wn += -float(((sc[k] - su[k]) * du).sum())
        wd += dd
    return wn / wd if wd > 0 else None


def noise_undo(
    p_o, p_u, p_c, prompts: list[str], *, n: int = 8, timesteps=(200, 500, 800), seed: int = 0
) -> dict[str, float]:
    """One conditional and one unconditional UNet forward per model and noise level (no sampling
    loop, no image), on fixed noisy latents with the concept's prompts as conditioning:

    * ``eps_undo``: the share of the unlearning edit's change in the conditional noise
      prediction that the candidate reverses (projection onto the reversed edit);
    * ``guidance_undo``: how far the candidate brings the concept's guidance vector
      ``g = eps(concept) - eps(empty prompt)``, the part of the prediction that classifier-free
      guidance amplifies, back to the original model's: ``1 - |g_c - g_o| / |g_u - g_o|`` (1: back
      at the original's, 0: no closer than the unlearned model's, below 0: further away). Drift
      that moves the conditional and unconditional predictions alike, as benign fine-tuning
      does, cancels in ``g``.
    """
    g = torch.Generator().manual_seed(seed)
    cfg = p_u.unet.config
    size = cfg.sample_size
    dev = p_u.unet.device
    lat = torch.randn((n * len(prompts), cfg.in_channels, size, size), generator=g).to(dev, p_u.unet.dtype)
    num = den = 0.0
    d_c = d_u = 0.0
    with torch.no_grad():
        conds = [token_states(p, prompts).repeat_interleave(n, 0) for p in (p_o, p_u, p_c)]
        unconds = [token_states(p, [""]).expand_as(c) for p, c in zip((p_o, p_u, p_c), conds, strict=True)]
        for t in timesteps:
            tt = torch.full((lat.shape[0],), t, dtype=torch.long, device=dev)
            e_o, e_u, e_c = (
                p.unet(lat, tt, encoder_hidden_states=c).sample.float()
                for p, c in zip((p_o, p_u, p_c), conds, strict=True)
            )
            a, b = e_u - e_o, e_c - e_u
            num += -float((a * b).sum())
            den += float((a * a).sum())
            g_o, g_u, g_c = (
                e - p.unet(lat, tt, encoder_hidden_states=u).sample.float()
                for p, u, e in zip((p_o, p_u, p_c), unconds, (e_o, e_u, e_c), strict=True)
            )
            d_c += float(((g_c - g_o) ** 2).sum())
            d_u += float(((g_u - g_o) ** 2).sum())
    return {
        "eps_undo": num / den if den > 0 else 0.0,
        "guidance_undo": 1.0 - (d_c / d_u) ** 0.5 if d_u > 0 else 0.0,
    }


def token_states(pipe, prompts: list[str]) -> torch.Tensor:
    from gate.sd import prompt_ids

    return pipe.text_encoder(prompt_ids(pipe, prompts))[0]


def data_overlap(checkpoint: str, data_dir: Path, concept_prompts: list[str], *, energy: float = 0.9) -> dict[str, Any]:
    """Linear-model risk of a proposed fine-tuning set: ``sum_i (lambda_i / lambda_max) *
    ||U_f^T v_i||^2 / r`` with (lambda_i, v_i) the eigenpairs of the data's token-embedding
    second moment and U_f the top directions (``energy`` of the variance) of the concept's."""
    from gate.model import load_checkpoint

    t0 = time.perf_counter()
    pipe = load_checkpoint(checkpoint)[0]
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
    before any image. Reported only: the small world's validation does not support failing on
    it (docs/theory.md), so the verdict always comes from the images."""
    from gate.errors import GateError

    opts = check.opts
    if not (opts.original and opts.update and opts.prescreen):
        return {}
    try:
        out = weight_prescreen_many(
            opts.original, opts.checkpoint, opts.update, {c.name: list(c.prompts) for c in check.concepts},
            lora_scale=opts.lora_scale, config=opts.config, allow_pickle=opts.allow_pickle, device=opts.device,
        )  # fmt: skip
    except GateError:
        raise  # bad input stops here, as it would in the image stage
    except Exception as e:  # the pre-screen only informs; the verdict comes from the images
        log(f"pre-screen skipped: {type(e).__name__}: {str(e)[:200]}")
        return {}
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
