"""``gate world show``: a PNG grid of generated images, one row per concept, labelled."""

from __future__ import annotations

from pathlib import Path

from gate.world import concepts as C
from gate.world import data


def concept_grid(world: Path, out: Path, *, n: int, steps: int, guidance: float, seed: int, zoom: int = 3) -> Path:
    from PIL import Image, ImageDraw

    from gate.pipeline import load_pipeline
    from gate.world.evaluate import generate

    pipe = load_pipeline(world / "sd")
    names = [c.name for c in C.all_concepts()]
    label_w, cell = 90, data.SIZE * zoom
    grid = Image.new("RGB", (label_w + n * (cell + 2), len(names) * (cell + 2)), (250, 250, 250))
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(names):
        prompts = [p for p, _ in data.concept_prompts(name, n, seed, split="heldout")]
        images = generate(
            pipe, prompts, [seed * 100_003 + row * 1000 + i for i in range(n)], steps=steps, guidance=guidance
        )
        y = row * (cell + 2)
        draw.text((4, y + cell // 2 - 12), name, fill=(0, 0, 0))
        draw.text((4, y + cell // 2), C.concept(name).kind, fill=(110, 110, 110))
        for col, im in enumerate(images):
            grid.paste(im.resize((cell, cell), Image.Resampling.NEAREST), (label_w + col * (cell + 2), y))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
