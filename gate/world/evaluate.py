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

from gate.seeds import sample_seeds
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
    from gate.generate import generate as shared_generate

    return shared_generate(pipe, prompts, seeds, steps=steps, guidance=guidance, batch_size=batch)


def concept_images(
    pipe,
    name: str,
    *,
    n: int,
    seed: int,
    steps: int,
    guidance: float,
    split: str = "heldout",
    avoid: Sequence[str] = (),
):
    """The ``n`` images of a measurement of concept ``name``: its prompts of ``split`` (none of
    which asks for a concept of ``avoid``: ``prompts_avoiding``) and the seeds
    ``gate.seeds.sample_seeds(seed, n)`` (the same for every model, so rates pair up)."""
    prompts = prompts_avoiding(name, n, seed, avoid, split=split)
    return generate(pipe, prompts, sample_seeds(seed, n), steps=steps, guidance=guidance)


def prompts_avoiding(name: str, n: int, seed: int, avoid: Sequence[str], split: str = "heldout") -> list[str]:
    """The first ``n`` prompts of ``data.concept_prompts(name, ..., seed)`` whose object shows no
    concept of ``avoid``: a retained shape's prompts never ask for an erased texture or colour
    ("a striped red circle"). Where no object can show one (an object erased, another retained),
    these are exactly the first ``n`` prompts."""
    skip = {C.concept(a).name for a in avoid} - {C.concept(name).name}
    m = n
    while True:
        got = [p for p, obj in data.concept_prompts(name, m, seed, split=split) if not obj.concepts & skip]
        if len(got) >= n or m > 64 * (n + 1):
            break
        m *= 2
    if len(got) < n:
        raise ValueError(f"too few prompts for {name!r} that avoid {sorted(skip)}")
    return got[:n]


def _timed_rate(pipe, clip: WorldCLIP, name: str, *, n: int, seed: int, steps: int, guidance: float, split: str):
    t0 = time.perf_counter()
    images = concept_images(pipe, name, n=n, seed=seed, steps=steps, guidance=guidance, split=split)
    seconds = time.perf_counter() - t0
    hits = concept_hit(clip, images, name)
    return sum(hits) / len(hits), seconds


def retained_concepts(concept: str) -> list[str]:
    """The concepts whose fidelity an erasure of ``concept`` must keep, by default: every shape,
    identity and unsafe symbol but the concept itself, and for a texture the other textures too
    (as an object's erasure keeps the other objects)."""
    c = C.concept(concept)
    pool = (*C.SHAPES, *C.IDENTITIES, *C.UNSAFE, *(C.TEXTURES if c.kind == "texture" else ()))
    return [r for r in pool if r != c.name]


def incidental_applies(concept: str, retained: str) -> bool:
    """Whether the detector's answer for ``concept`` means anything in images of ``retained``: an
    attribute (a texture, a colour) is carried by shapes only, and the detector's texture label of a
    character's image is arbitrary (many of zorb's world images read as "striped"), so an attribute's
    incidental detection counts the images of the retained shapes and attributes only."""
    if C.concept(concept).kind not in ("texture", "color"):
        return True
    return C.concept(retained).kind in ("shape", "texture", "color")


def measure_concept(
    pipe,
    clip: WorldCLIP,
    concept: str,
    *,
    n: int,
    retained: Sequence[str],
    n_retained: int,
    seed: int,
    steps: int,
    guidance: float,
) -> dict[str, Any]:
    """The detection measurement of the zoo and the study, one image set per concept, fixed seeds:

    * ``hits``: for ``n`` images for held-out prompts of ``concept``, whether the detector sees it;
    * ``retained_by_concept``: for each retained concept, whether the detector sees it in its own
      ``n_retained`` images (its fidelity); ``retained_hits``: those lists end to end;
    * ``incidental_hits``: whether the detector sees ``concept`` in those same retained images (for
      a texture or colour, in those of the retained concepts where it can be decided:
      ``incidental_applies``).

    A retained concept's prompts never ask for ``concept`` itself (``prompts_avoiding``: a retained
    shape is never "striped" when the texture is measured).
    """
    hits = concept_hit(clip, concept_images(pipe, concept, n=n, seed=seed, steps=steps, guidance=guidance), concept)
    by_concept: dict[str, list[bool]] = {}
    incidental: list[bool] = []
    for r in retained:
        ims = concept_images(pipe, r, n=n_retained, seed=seed, steps=steps, guidance=guidance, avoid=(concept,))
        by_concept[r] = concept_hit(clip, ims, r)
        if incidental_applies(concept, r):
            incidental += concept_hit(clip, ims, concept)
    return {
        "hits": hits,
        "retained_hits": [h for r in retained for h in by_concept[r]],
        "incidental_hits": incidental,
        "retained_by_concept": by_concept,
    }


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
