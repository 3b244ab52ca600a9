"""The small world's concept detector: an open_clip model, loaded the way any open_clip model is.

    open_clip.add_model_config(folder)          # registers folder/world-clip.json
    model, _, preprocess = open_clip.create_model_and_transforms(
        "world-clip", pretrained=str(folder / "world-clip.safetensors"))
    tokenizer = open_clip.get_tokenizer("world-clip")

``WorldCLIP`` wraps exactly that and adds zero-shot classification with prompt ensembles
(the text features of a label are the mean over its synonyms).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from gate.detectors.zeroshot import ZeroShotCLIP
from gate.errors import BadInput
from gate.world import concepts as C
from gate.world.models import CLIP_CONFIG, CLIP_MODEL_NAME

ASSETS = Path(__file__).parent / "assets"
CLIP_DIR = ASSETS / "clip"
CLIP_WEIGHTS = f"{CLIP_MODEL_NAME}.safetensors"


def register_config(folder: Path | None = None) -> None:
    """Registers the world-clip architecture with open_clip (from ``folder`` if given)."""
    import open_clip

    if folder is not None and (folder / f"{CLIP_MODEL_NAME}.json").is_file():
        open_clip.add_model_config(folder)
        return
    tmp = Path(tempfile.mkdtemp(prefix="world-clip-"))
    (tmp / f"{CLIP_MODEL_NAME}.json").write_text(json.dumps(CLIP_CONFIG, indent=2))
    open_clip.add_model_config(tmp)


def write_config(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{CLIP_MODEL_NAME}.json").write_text(json.dumps(CLIP_CONFIG, indent=2) + "\n")


# zero-shot label sets: label -> the texts whose mean feature stands for it
def object_texts() -> dict[str, list[str]]:
    from gate.world.data import fix_articles

    out = {s: [fix_articles(f"a {w}") for w in syns] for s, syns in C.SHAPES.items()}
    out.update({n: list(syns) for n, syns in C.IDENTITIES.items()})
    out.update({n: [fix_articles(f"a {w}") for w in syns] for n, syns in C.UNSAFE.items()})
    return out


def color_texts() -> dict[str, list[str]]:
    from gate.world.data import fix_articles

    return {c: [fix_articles(f"a {w} shape") for w in syns] for c, syns in C.COLORS.items()}


def texture_texts() -> dict[str, list[str]]:
    out = {"solid": [f"a {w} shape" for w in C.SOLID_WORDS]}
    out.update({t: [f"a {w} shape" for w in syns] for t, syns in C.TEXTURES.items()})
    return out


def label_texts(kind: str) -> dict[str, list[str]]:
    """The zero-shot label set that decides a concept of ``kind``."""
    if kind in ("shape", "identity", "unsafe"):
        return object_texts()
    if kind == "color":
        return color_texts()
    if kind == "texture":
        return texture_texts()
    raise KeyError(kind)


class WorldCLIP(ZeroShotCLIP):
    """The world's open_clip model with zero-shot helpers. Device and dtype are explicit."""

    def __init__(self, folder: Path | str = CLIP_DIR, device: str = "cpu") -> None:
        import open_clip

        folder = Path(folder)
        weights = folder / CLIP_WEIGHTS
        if not weights.is_file():
            raise BadInput(f"{folder}: no {CLIP_WEIGHTS} here, so no small world's detector; run `gate world build`")
        register_config(folder)
        model, _, preprocess = open_clip.create_model_and_transforms(
            CLIP_MODEL_NAME, pretrained=str(weights), device=device
        )
        super().__init__(model, preprocess, open_clip.get_tokenizer(CLIP_MODEL_NAME), device=device)
