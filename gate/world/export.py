"""Captioned image folders in the layout of the diffusers training examples.

    out/metadata.jsonl   one JSON object a line: file_name, text, the ground-truth labels,
                         and mask_file when masks are asked for
    out/00000.png ...

With ``exclude``, no image shows an excluded concept (guaranteed by the ground-truth labels)
and, since captions only name what an image shows, no caption names it either. With
``require``, every image shows the concept (a forget set); ``masks`` adds a PNG per image
marking the pixels of the objects that show it (what MACE's segmentation masks give).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from gate.world import concepts as C
from gate.world import data


def required_sample(seed: int, index: int, require: str, exclude: frozenset[str]) -> data.Sample:
    rng = data._sample_rng(seed, index, stream=11)
    objs = [data.object_for_concept(require, rng)]
    while objs[0].concepts & exclude:  # a required shape that shows an excluded texture: drawn again
        objs = [data.object_for_concept(require, rng)]
    if rng.random() < data.P_TWO_OBJECTS:
        while True:
            other = data.random_object(rng)
            if other.type != objs[0].type and not (other.concepts & exclude):
                break
        objs.insert(int(rng.integers(2)), other)
    return data.sample(seed, index, objects=objs)


def write_folder(
    out: Path, *, n: int, seed: int, exclude: Iterable[str] = (), require: str | None = None, masks: bool = False
) -> int:
    excluded = frozenset(C.concept(e).name for e in exclude)
    req = C.concept(require).name if require else None
    if req and req in excluded:
        raise ValueError(f"{req!r} cannot be both required and excluded")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        s = required_sample(seed, i, req, excluded) if req else data.sample(seed, i, exclude=excluded)
        name = f"{i:05d}.png"
        data.to_pil(s.image).save(out / name)
        row: dict[str, object] = {"file_name": name, "text": s.caption, "labels": s.labels()}
        if masks:
            show = [k for k, o in enumerate(s.objects) if req is None or req in o.concepts]
            m = np.any(s.masks[show], axis=0) if show else np.zeros(s.masks.shape[1:], bool)
            mname = f"{i:05d}_mask.png"
            Image.fromarray((m * 255).astype(np.uint8), "L").save(out / mname)
            row["mask_file"] = mname
        lines.append(json.dumps(row))
    tmp = out / "metadata.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "metadata.jsonl")  # atomic: a folder never has a half-written index
    return n
