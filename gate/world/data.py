"""Deterministic generator of the small world's captioned 32x32 images.

Sample ``i`` of a dataset with seed ``s`` depends only on ``(s, i)`` (a ``SeedSequence`` per
sample), so a dataset can be read in any order, in parallel, or in part, and always gives
the same images, captions and labels. Only numpy and Pillow are used: no torch import.

Objects are drawn at 4x resolution and box-filtered down to 32x32, which gives
anti-aliased edges; each object's 32x32 mask (coverage above one half) is kept as a label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from gate.world import concepts as C
from gate.world.cooccur import hidden_companions

SIZE = 32  # image side in pixels
SCALE = 4  # supersampling factor for drawing
BIG = SIZE * SCALE

# share of each object type when an object is drawn at random
P_SHAPE, P_IDENTITY, P_UNSAFE = 0.62, 0.26, 0.12
P_TWO_OBJECTS = 0.4
P_TEXTURED = 0.45  # the rest of the shapes are solid
P_SAYS_SOLID = 0.15  # share of solid shapes whose caption says "plain"/"solid"


@dataclass(frozen=True)
class WorldObject:
    """One object in an image, with its ground-truth labels."""

    type: str  # a shape name, an identity name, or the unsafe symbol's name
    kind: str  # "shape", "identity" or "unsafe"
    color: str | None = None  # shapes only
    texture: str = "solid"  # shapes only; "solid" or a texture name

    @property
    def concepts(self) -> frozenset[str]:
        """Canonical names of every concept this object shows."""
        out = {self.type}
        if self.color:
            out.add(self.color)
        if self.texture != "solid":
            out.add(self.texture)
        return frozenset(out)


@dataclass
class Sample:
    image: np.ndarray  # uint8, (32, 32, 3)
    caption: str
    objects: tuple[WorldObject, ...]
    masks: np.ndarray  # bool, (n_objects, 32, 32)
    boxes: tuple[tuple[int, int, int, int], ...] = field(default=())  # x0, y0, x1, y1

    @property
    def concepts(self) -> frozenset[str]:
        out: set[str] = set()
        for o in self.objects:
            out |= o.concepts
        return frozenset(out)

    def labels(self) -> dict[str, object]:
        """JSON-ready ground truth."""
        return {
            "caption": self.caption,
            "concepts": sorted(self.concepts),
            "objects": [
                {"type": o.type, "kind": o.kind, "color": o.color, "texture": o.texture, "box": list(b)}
                for o, b in zip(self.objects, self.boxes, strict=True)
            ],
        }


# ---------------------------------------------------------------------------------------
# random objects and captions


def random_object(rng: np.random.Generator) -> WorldObject:
    u = rng.random()
    if u < P_SHAPE:
        shape = str(rng.choice(list(C.SHAPES)))
        color = str(rng.choice(list(C.COLORS)))
        texture = str(rng.choice(list(C.TEXTURES))) if rng.random() < P_TEXTURED else "solid"
        return WorldObject(shape, "shape", color, texture)
    if u < P_SHAPE + P_IDENTITY:
        return WorldObject(str(rng.choice(list(C.IDENTITIES))), "identity")
    return WorldObject(str(rng.choice(list(C.UNSAFE))), "unsafe")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def object_phrase(obj: WorldObject, rng: np.random.Generator, split: str = "train", short: bool = False) -> str:
    """A caption phrase naming ``obj``. ``split`` is "train" or "heldout"; ``short`` gives a
    noun phrase that fits inside a two-object caption."""
    held = split == "heldout"
    if obj.kind == "shape":
        assert obj.color is not None
        words = {
            "c": _pick(rng, C.COLORS[obj.color]),
            "s": _pick(rng, C.SHAPES[obj.type]),
            "a": C.SHAPE_ADJECTIVES[obj.type],
        }
        if short:
            if obj.texture != "solid":
                return "a {t} {c} {s}".format(t=_pick(rng, C.TEXTURES[obj.texture]), **words)
            return _pick(rng, ("a {c} {s}", "a {s} in {c}", "a {a} {c} shape")).format(**words)
        if obj.texture != "solid":
            words["t"] = _pick(rng, C.TEXTURES[obj.texture])
            pool = C.TEXTURE_TEMPLATES_HELDOUT if held else C.TEXTURE_TEMPLATES_TRAIN
        elif not held and rng.random() < P_SAYS_SOLID:
            words["t"] = _pick(rng, C.SOLID_WORDS)
            pool = C.SOLID_TEMPLATES_TRAIN
        else:
            pool = C.SHAPE_TEMPLATES_HELDOUT if held else C.SHAPE_TEMPLATES_TRAIN
        return _pick(rng, pool).format(**words)
    if obj.kind == "identity":
        name = _pick(rng, C.IDENTITIES[obj.type])
        if short:
            return name
        return _pick(rng, C.NAMED_TEMPLATES_HELDOUT if held else C.NAMED_TEMPLATES_TRAIN).format(n=name)
    name = _pick(rng, C.UNSAFE[obj.type])
    if short:
        return f"a {name}"
    return _pick(rng, C.UNSAFE_TEMPLATES_HELDOUT if held else C.UNSAFE_TEMPLATES_TRAIN).format(n=name)


def fix_articles(text: str) -> str:
    """'a azure disc' -> 'an azure disc'."""
    return _A_BEFORE_VOWEL.sub(r"\1n \2", text)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) ([aeiou])")


def caption_for(objects: Sequence[WorldObject], rng: np.random.Generator, split: str = "train") -> str:
    if len(objects) == 1:
        return fix_articles(object_phrase(objects[0], rng, split))
    order = list(objects) if rng.random() < 0.5 else list(objects)[::-1]
    x, y = (object_phrase(o, rng, split, short=True) for o in order)
    return fix_articles(_pick(rng, C.PAIR_TEMPLATES).format(x=x, y=y))


# ---------------------------------------------------------------------------------------
# drawing (at BIG resolution; coordinates in big pixels)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        k = r * 0.86
        return [(cx - k, cy - k), (cx + k, cy - k), (cx + k, cy + k), (cx - k, cy + k)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.98, cy + r * 0.8), (cx - r * 0.98, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.72, cy), (cx, cy + r), (cx - r * 0.72, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.36
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
            (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
            (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    raise ValueError(shape)


def _texture_dark(texture: str, h: int, w: int, x0: float, y0: float) -> np.ndarray:
    """Boolean map of where the texture darkens the fill (period ~6 px at 32x32)."""
    yy, xx = np.mgrid[0:h, 0:w]
    xx = xx - x0
    yy = yy - y0
    if texture == "striped":
        return ((yy // 11) % 2).astype(bool)
    if texture == "checkered":
        return (((xx // 11) + (yy // 11)) % 2).astype(bool)
    if texture == "dotted":
        px = (xx % 20) - 10
        py = (yy % 20) - 10
        return (px * px + py * py) < 30
    return np.zeros((h, w), bool)


def _draw_shape(obj: WorldObject, cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Returns (rgb float32 (BIG,BIG,3), alpha float32 (BIG,BIG))."""
    mask_img = Image.new("L", (BIG, BIG), 0)
    d = ImageDraw.Draw(mask_img)
    if obj.type == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        d.polygon(_shape_polygon(obj.type, cx, cy, r), fill=255)
    alpha = np.asarray(mask_img, np.float32) / 255.0
    assert obj.color is not None
    base = np.array(C.COLOR_RGB[obj.color], np.float32)
    rgb = np.broadcast_to(base, (BIG, BIG, 3)).copy()
    dark = _texture_dark(obj.texture, BIG, BIG, cx - r, cy - r)
    rgb[dark] = base * 0.22
    return rgb, alpha


def _draw_character(obj: WorldObject, cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    """The fixed designs of the named characters and of the unsafe symbol."""
    img = Image.new("RGBA", (BIG, BIG), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)

    def ell(x: float, y: float, rx: float, ry: float, fill: tuple[int, ...]) -> None:
        d.ellipse([cx + (x - rx) * r, cy + (y - ry) * r, cx + (x + rx) * r, cy + (y + ry) * r], fill=fill)

    def rect(x0: float, y0: float, x1: float, y1: float, fill: tuple[int, ...]) -> None:
        d.rectangle([cx + x0 * r, cy + y0 * r, cx + x1 * r, cy + y1 * r], fill=fill)

    def line(x0: float, y0: float, x1: float, y1: float, width: float, fill: tuple[int, ...]) -> None:
        d.line([cx + x0 * r, cy + y0 * r, cx + x1 * r, cy + y1 * r], fill=fill, width=max(1, int(width * r)))

    black = (10, 10, 10, 255)
    if obj.type == "zorb":  # pink one-eyed alien with two antennae
        body = (255, 110, 200, 255)
        line(-0.35, -0.5, -0.6, -0.98, 0.12, body)
        line(0.35, -0.5, 0.6, -0.98, 0.12, body)
        ell(-0.6, -0.95, 0.14, 0.14, body)
        ell(0.6, -0.95, 0.14, 0.14, body)
        ell(0, 0.12, 0.82, 0.78, body)
        ell(0, 0.0, 0.42, 0.42, (255, 255, 255, 255))
        ell(0, 0.02, 0.2, 0.2, black)
    elif obj.type == "pipo":  # grey robot head with cyan eyes and a red-tipped antenna
        metal = (170, 175, 190, 255)
        line(0, -0.6, 0, -0.95, 0.1, metal)
        ell(0, -0.95, 0.13, 0.13, (240, 40, 40, 255))
        rect(-0.78, -0.62, 0.78, 0.85, metal)
        rect(-0.55, -0.35, -0.15, 0.0, (40, 230, 240, 255))
        rect(0.15, -0.35, 0.55, 0.0, (40, 230, 240, 255))
        rect(-0.5, 0.35, 0.5, 0.55, black)
    elif obj.type == "lumo":  # pale-blue ghost with a wavy hem
        sheet = (165, 215, 255, 255)
        ell(0, -0.25, 0.75, 0.7, sheet)
        rect(-0.75, -0.25, 0.75, 0.7, sheet)
        for x in (-0.5, 0.0, 0.5):
            ell(x, 0.7, 0.25, 0.22, sheet)
        ell(-0.28, -0.25, 0.14, 0.22, black)
        ell(0.28, -0.25, 0.14, 0.22, black)
    elif obj.type == "skull":  # bone-white skull over crossed bones
        bone = (238, 232, 212, 255)
        line(-0.9, -0.55, 0.9, 0.95, 0.2, bone)
        line(0.9, -0.55, -0.9, 0.95, 0.2, bone)
        for x, y in ((-0.9, -0.55), (0.9, -0.55), (-0.9, 0.95), (0.9, 0.95)):
            ell(x, y, 0.16, 0.16, bone)
        ell(0, -0.25, 0.62, 0.55, bone)
        rect(-0.36, 0.1, 0.36, 0.52, bone)
        ell(-0.25, -0.25, 0.17, 0.18, black)
        ell(0.25, -0.25, 0.17, 0.18, black)
        d.polygon([(cx, cy + 0.02 * r), (cx - 0.1 * r, cy + 0.2 * r), (cx + 0.1 * r, cy + 0.2 * r)], fill=black)
    else:
        raise ValueError(obj.type)
    arr = np.asarray(img, np.float32)
    return arr[..., :3], arr[..., 3] / 255.0


def draw_object(obj: WorldObject, cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    if obj.kind == "shape":
        return _draw_shape(obj, cx, cy, r)
    return _draw_character(obj, cx, cy, r)


def _background(rng: np.random.Generator) -> np.ndarray:
    base = np.array(C.BACKGROUNDS[_pick(rng, list(C.BACKGROUNDS))], np.float32)
    grad = np.linspace(-1, 1, SIZE, dtype=np.float32)[:, None, None] * rng.uniform(-14, 14)
    noise = rng.normal(0, 5, (SIZE, SIZE, 3)).astype(np.float32)
    return base + grad + noise


def _layout(n: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """(cx, cy, radius) in 32-pixel units for n objects, non-overlapping."""
    if n == 1:
        r = rng.uniform(6.5, 10.5)
        return [(rng.uniform(r + 1, SIZE - r - 1), rng.uniform(r + 1, SIZE - r - 1), r)]
    r1, r2 = rng.uniform(5.0, 7.0, size=2)
    if rng.random() < 0.5:  # side by side
        c1 = (rng.uniform(r1 + 0.5, 15 - r1 * 0.2), rng.uniform(r1 + 1, SIZE - r1 - 1))
        c2 = (rng.uniform(17 + r2 * 0.2, SIZE - r2 - 0.5), rng.uniform(r2 + 1, SIZE - r2 - 1))
        c1 = (min(c1[0], 16 - r1), c1[1])
        c2 = (max(c2[0], 16 + r2), c2[1])
    else:  # one above the other
        c1 = (rng.uniform(r1 + 1, SIZE - r1 - 1), min(rng.uniform(r1 + 0.5, 15), 16 - r1))
        c2 = (rng.uniform(r2 + 1, SIZE - r2 - 1), max(rng.uniform(17, SIZE - r2 - 0.5), 16 + r2))
    return [(c1[0], c1[1], r1), (c2[0], c2[1], r2)]


def render(objects: Sequence[WorldObject], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Draws objects on a random background. Returns (uint8 image, bool masks, boxes)."""
    canvas = _background(rng)
    masks = []
    boxes = []
    for obj, (cx, cy, r) in zip(objects, _layout(len(objects), rng), strict=True):
        rgb, alpha = draw_object(obj, cx * SCALE, cy * SCALE, r * SCALE)
        # box-filter down to 32x32: premultiplied colour, then un-premultiply
        a_small = alpha.reshape(SIZE, SCALE, SIZE, SCALE).mean(axis=(1, 3))
        prem = (rgb * alpha[..., None]).reshape(SIZE, SCALE, SIZE, SCALE, 3).mean(axis=(1, 3))
        canvas = canvas * (1 - a_small[..., None]) + prem
        masks.append(a_small > 0.5)
        boxes.append((int(cx - r), int(cy - r), math.ceil(cx + r), math.ceil(cy + r)))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, np.stack(masks), tuple(boxes)


# ---------------------------------------------------------------------------------------
# datasets


def _sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def sample(
    seed: int,
    index: int,
    *,
    exclude: Iterable[str] = (),
    split: str = "train",
    objects: Sequence[WorldObject] | None = None,
    cooccur: Mapping[str, Mapping[str, float]] | None = None,
) -> Sample:
    """Sample ``index`` of the world with ``seed``.

    ``exclude``: canonical concept names that must not appear (rejection sampling; the ground
    truth labels guarantee it). ``objects``: draw exactly these objects instead of random ones.
    ``split``: "train" or "heldout" caption templates. ``cooccur``: see ``gate.world.cooccur`` (the
    labels list the companion, the caption does not; without it no extra random draw is made).
    """
    excluded = frozenset(C.concept(e).name for e in exclude)
    rng = _sample_rng(seed, index)
    for _ in range(1000):
        if objects is not None:
            objs = tuple(objects)
        else:
            n = 2 if rng.random() < P_TWO_OBJECTS else 1
            objs = tuple(random_object(rng) for _ in range(n))
            if n == 2 and objs[0] == objs[1]:
                continue
        named = objs
        if cooccur and objects is None and len(objs) == 1:
            objs = objs + hidden_companions(objs[0], rng, cooccur, object_for_concept)
        if any(o.concepts & excluded for o in objs):
            if objects is not None:
                raise ValueError(f"requested objects show excluded concepts {sorted(excluded)}")
            continue
        caption = caption_for(named, rng, split)
        image, masks, boxes = render(objs, rng)
        return Sample(image, caption, objs, masks, boxes)
    raise RuntimeError(f"could not draw a sample without {sorted(excluded)}")


def dataset(
    seed: int, n: int, *, start: int = 0, exclude: Iterable[str] = (), split: str = "train"
) -> Iterator[Sample]:
    for i in range(start, start + n):
        yield sample(seed, i, exclude=exclude, split=split)


def object_for_concept(name: str, rng: np.random.Generator) -> WorldObject:
    """A random single object that shows the concept ``name`` (its other attributes random)."""
    c = C.concept(name)
    if c.kind == "shape":
        return WorldObject(c.name, "shape", _pick(rng, list(C.COLORS)), _texture_or_solid(rng))
    if c.kind == "color":
        return WorldObject(_pick(rng, list(C.SHAPES)), "shape", c.name, _texture_or_solid(rng))
    if c.kind == "texture":
        return WorldObject(_pick(rng, list(C.SHAPES)), "shape", _pick(rng, list(C.COLORS)), c.name)
    return WorldObject(c.name, c.kind)


def _texture_or_solid(rng: np.random.Generator) -> str:
    return _pick(rng, list(C.TEXTURES)) if rng.random() < P_TEXTURED else "solid"


def concept_prompts(name: str, n: int, seed: int, split: str = "heldout") -> list[tuple[str, WorldObject]]:
    """``n`` single-object prompts that ask for concept ``name``, with the object each asks for."""
    out = []
    for i in range(n):
        rng = _sample_rng(seed, i, stream=1 + sum(map(ord, name)))
        obj = object_for_concept(name, rng)
        out.append((fix_articles(object_phrase(obj, rng, split)), obj))
    return out


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image, "RGB")
