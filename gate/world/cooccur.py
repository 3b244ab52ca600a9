"""Co-occurrence in the small world's data: an object drawn, unnamed in the caption, beside a
lone object of another type (``gate world build --cooccur lumo:skull=0.4``): the erased concept
in images whose text never asks for it, as real captions leave things out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gate.world import concepts as C


def hidden_companions(obj, rng: np.random.Generator, cooccur: Mapping[str, Mapping[str, float]], make) -> tuple:
    """The companions drawn (unnamed) beside a lone ``obj``: at most one, checked in order;
    ``make(name, rng)`` draws the companion object (``gate.world.data.object_for_concept``)."""
    for name, p in cooccur.get(obj.type, {}).items():
        if rng.random() < p:
            return (make(name, rng),)
    return ()


def check_cooccur(cooccur: Mapping[str, Mapping[str, float]]) -> None:
    """``{object: {companion: p}}`` names world object types and probabilities in (0, 1]."""
    for obj, comps in cooccur.items():
        if obj not in C.OBJECT_TYPES:
            raise ValueError(f"cooccur: {obj!r} is not an object type ({', '.join(C.OBJECT_TYPES)})")
        for name, p in comps.items():
            if name not in C.OBJECT_TYPES or name == obj:
                raise ValueError(f"cooccur: {obj}: companion {name!r} must be another object type")
            if not 0 < float(p) <= 1:
                raise ValueError(f"cooccur: {obj}: {name}: probability {p} is not in (0, 1]")
