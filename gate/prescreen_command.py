"""``gate prescreen`` on its own: the weight-space estimate for a candidate (or a proposed data
set), without images. It loads one pipeline, the unlearned model, and runs the pre-screen's
stages on it (``gate.prescreen``): the update applied and removed, the original's UNet and text
encoder read in and the unlearned weights read back (checked). ``gate check`` runs the same
probes inside its own stages instead (``gate.prescreen.CheckScreen``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from gate.errors import InternalError
from gate.policy import PrescreenBudget
from gate.prescreen import VALIDATED_BUDGET, Screen, fuse_update, token_embeddings


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
    """``gate prescreen``'s scores per concept on ``pipe``, the loaded unlearned model
    (``checkpoint``), which is given back holding exactly the weights it came with (checked).
    Stages: the unlearned model's probes; the update applied (fused) for the candidate's probes
    and the weight-space pass; the original's UNet and text encoder read in for its probes; the
    unlearned weights read back."""
    from gate.inplace import component_state, fingerprint, pipeline_folder, swap_components
    from gate.model import apply_update

    parts = ("unet", "text_encoder")
    before = {p: fingerprint(getattr(pipe, p)) for p in parts}
    ck_dir = pipeline_folder(checkpoint, config=config, allow_pickle=allow_pickle, flag="--checkpoint")
    or_dir = pipeline_folder(original, config=config, allow_pickle=allow_pickle, flag="--original")
    saved = None
    if ck_dir is None:  # a single-file checkpoint has no per-component files to read back: keep a copy
        saved = {p: {k: v.detach().cpu().clone() for k, v in getattr(pipe, p).state_dict().items()} for p in parts}
    sc = Screen(pipe, prompt_sets, budget)
    sc.probe("unlearned", pipe)
    try:
        sc.timed("apply_update", lambda: apply_update(pipe, update, lora_scale=lora_scale, allow_pickle=allow_pickle))
        sc.probe("candidate", pipe)
        fuse_update(pipe)
        if budget.weights:
            unl = component_state(ck_dir, "unet") if ck_dir else saved["unet"]  # type: ignore[index]
            orig = component_state(or_dir, "unet") if or_dir else _original_unet_apart(original, config, allow_pickle)
            sc.gather(pipe.unet, unl, orig)
        if or_dir is not None:
            sc.timed("load_original", lambda: swap_components(pipe, or_dir, parts, f"--original {original}"))
        else:  # a single-file original: read it apart (more memory: a second UNet for a moment)
            sc.timed("load_original", lambda: _swap_original_apart(pipe, original, config, allow_pickle))
        sc.probe("original", pipe)
    finally:
        if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
            pipe.unload_lora_weights()
        if ck_dir is not None:
            sc.timed("restore", lambda: swap_components(pipe, ck_dir, parts, f"--checkpoint {checkpoint}"))
        else:
            from gate.inplace import load_into

            for p in parts:
                load_into(getattr(pipe, p), saved[p], f"--checkpoint {checkpoint} ({p})")  # type: ignore[index]
        if {p: fingerprint(getattr(pipe, p)) for p in parts} != before:
            raise InternalError("the pre-screen did not give the unlearned model back unchanged (checksums differ)")
    log(f"pre-screen stages (s): {sc.timings}")
    return sc.scores()


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
