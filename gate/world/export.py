"""Captioned image folders in the layout of the diffusers training examples.

    out/metadata.jsonl   one JSON object a line: file_name, text, and the ground-truth labels
    out/00000.png ...

With ``exclude``, no image shows an excluded concept (guaranteed by the ground-truth labels)
and, since captions only name what an image shows, no caption names it either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from gate.world import data


def write_folder(out: Path, *, n: int, seed: int, exclude: Iterable[str] = ()) -> int:
    exclude = list(exclude)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, s in enumerate(data.dataset(seed, n, exclude=exclude)):
        name = f"{i:05d}.png"
        data.to_pil(s.image).save(out / name)
        lines.append(json.dumps({"file_name": name, "text": s.caption, "labels": s.labels()}))
    tmp = out / "metadata.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "metadata.jsonl")  # atomic: a folder never has a half-written index
    return n
