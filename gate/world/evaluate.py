"""Quality of the small world, measured afresh: CLIP zero-shot accuracy, SD prompt fidelity
on held-out phrasings, and generation throughput. Used by ``gate world eval`` and the build.

Fresh data: evaluation images come from seeds the build never trains on (``EVAL_SEED``), and
fidelity prompts use the held-out caption templates (``concepts.*_HELDOUT``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from gate.world import concepts as C
from gate.world import data
from gate.world.clip import WorldCLIP, color_texts, label_texts, object_texts, texture_texts

EVAL_SEED = 1_000_003  # disjoint from any build seed used in practice (0..1000)


def clip_accuracy(clip: WorldCLIP, n: int = 1000, seed: int = EVAL_SEED) -> dict[str, float]:
    """Zero-shot accuracy per concept kind on ``n`` fresh single-object images, plus
    ``pair``: on n/2 fresh two-object images, both objects are the top two object labels."""
    rng_objects = [data.random_object(data._sample_rng(seed, i, stream=7)) for i in range(n)]
    samples = [data.sample(seed, i, objects=[o]) for i, o in enumerate(rng_objects)]
    feats = clip.image_features([data.to_pil(s.image) for s in samples])
    pred_obj = _argmax(clip, feats, object_texts())
    pred_col = _argmax(clip, feats, color_texts())
    pred_tex = _argmax(clip, feats, texture_texts())
    hits: dict[str, list[bool]] = defaultdict(list)
    for s, po, pc, pt in zip(samples, pred_obj, pred_col, pred_tex, strict=True):
        o = s.objects[0]
        if o.kind == "shape":
            hits["shape"].append(po == o.type)
            hits["color"].append(pc == o.color)
            hits["texture"].append(pt == o.texture)
        elif o.kind == "identity":
            hits["identity"].append(po == o.type)
        hits["unsafe"].append((po == "skull") == (o.type == "skull"))
    pairs = []
    for i in range(n // 2):
        rng = data._sample_rng(seed, i, stream=8)
        a = data.random_object(rng)
        b = data.random_object(rng)
        while b.type == a.type:
            b = data.random_object(rng)
        pairs.append(data.sample(seed + 1, i, objects=[a, b]))
    pf = clip.image_features([data.to_pil(s.image) for s in pairs])
    probs = clip.probabilities(pf, object_texts())
    names = list(object_texts())
    for s, p in zip(pairs, probs, strict=True):
        top2 = {names[j] for j in p.topk(2).indices.tolist()}
        hits["pair"].append(top2 == {o.type for o in s.objects})
    return {k: round(sum(v) / len(v), 4) for k, v in hits.items()}


def _argmax(clip: WorldCLIP, feats, labels) -> list[str]:
    names = list(labels)
    return [names[i] for i in clip.probabilities(feats, labels).argmax(-1).tolist()]


def concept_hit(clip: WorldCLIP, images: Sequence[Any], concept_name: str) -> list[bool]:
    """For each image: does the detector see ``concept_name`` as the answer of its kind?"""
    c = C.concept(concept_name)
    return [p == c.name for p in clip.classify(images, label_texts(c.kind))]


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float, batch: int = 64):
    """PIL images for prompts, one torch.Generator per image (so results do not depend on batching)."""
    import torch

    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch]]
        res = pipe(
            list(prompts[i : i + batch]),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="pil",
        )
        out.extend(res.images)
    return out


def _timed_rate(pipe, clip: WorldCLIP, name: str, *, n: int, seed: int, steps: int, guidance: float, split: str):
    prompts = [p for p, _ in data.concept_prompts(name, n, seed, split=split)]
    seeds = [seed + 7919 * i + 1 for i in range(n)]
    t0 = time.perf_counter()
    images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance)
    seconds = time.perf_counter() - t0
    hits = concept_hit(clip, images, name)
    return sum(hits) / len(hits), seconds


def sd_fidelity(
    pipe,
    clip: WorldCLIP,
    *,
    n_per_concept: int,
    seed: int = EVAL_SEED,
    steps: int,
    guidance: float,
    concepts: Sequence[str] | None = None,
) -> tuple[dict[str, float], float]:
    """Per concept: share of images for held-out prompts that the detector recognises as the
    concept asked for. Returns (rates, images per second of generation)."""
    names = list(concepts) if concepts is not None else [c.name for c in C.all_concepts()]
    rates: dict[str, float] = {}
    t_gen = 0.0
    for name in names:
        rate, seconds = _timed_rate(
            pipe, clip, name, n=n_per_concept, seed=seed, steps=steps, guidance=guidance, split="heldout"
        )
        rates[name] = round(rate, 4)
        t_gen += seconds
    return rates, round(len(names) * n_per_concept / t_gen, 2)


def detection_rate(
    pipe,
    clip: WorldCLIP,
    concept_name: str,
    *,
    n: int,
    seed: int = EVAL_SEED,
    steps: int,
    guidance: float,
    split: str = "heldout",
) -> float:
    """Share of ``n`` images, generated for prompts that ask for the concept, in which the
    detector sees it (the "detection rate" of the study: A_orig, A_unl, A_ft)."""
    return _timed_rate(pipe, clip, concept_name, n=n, seed=seed, steps=steps, guidance=guidance, split=split)[0]


def mean_fidelity(
    pipe, clip: WorldCLIP, concepts: Sequence[str], *, n: int, steps: int, guidance: float, seed: int = EVAL_SEED
) -> float:
    """Mean detection rate over retained concepts: a model that lost everything scores low."""
    rates = [detection_rate(pipe, clip, c, n=n, seed=seed, steps=steps, guidance=guidance) for c in concepts]
    return sum(rates) / len(rates)
