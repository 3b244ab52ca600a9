"""The small world's concepts, their words, and the caption templates.

Four kinds of concept mirror the four erasure tasks of the study (arXiv 2410.08074):

* ``shape``    objects: six plain shapes (the "object erasure" task);
* ``texture``  styles / attributes drawn on any shape (the "style" task);
* ``identity`` named characters with a fixed design (celebrities, copyrighted characters);
* ``unsafe``   one designated symbol that the world's policy forbids (the "unsafe content" task).

``color`` is a fifth, attribute-like kind that every shape carries.

Every concept has synonyms, and the caption templates are split into a training set and a
held-out set. Held-out phrasings reuse only words that occur in training captions (so the
small model's word-level vocabulary covers them) but put them in sentence frames that the
model never saw with that kind of object; ``gate world eval`` measures fidelity on them.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES: dict[str, tuple[str, ...]] = {
    # first entry is the canonical name; the rest are synonyms used in captions
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "star": ("star", "starburst", "asterisk"),
    "cross": ("cross", "plus", "crosslet"),
    "diamond": ("diamond", "rhombus", "lozenge"),
}
# adjectives for the "a round red shape" frame
SHAPE_ADJECTIVES: dict[str, str] = {
    "circle": "round",
    "square": "boxy",
    "triangle": "triangular",
    "star": "spiky",
    "cross": "crossed",
    "diamond": "angular",
}

COLORS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet", "plum"),
    "orange": ("orange", "amber", "tangerine"),
}
# sRGB of each colour (bright enough to stand out on the dark backgrounds)
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (40, 200, 60),
    "blue": (40, 90, 250),
    "yellow": (245, 225, 40),
    "purple": (160, 50, 220),
    "orange": (250, 140, 20),
}

# "solid" is the default fill and not a concept of its own (captions may say "plain")
TEXTURES: dict[str, tuple[str, ...]] = {
    "striped": ("striped", "stripy", "banded"),
    "dotted": ("dotted", "spotted", "speckled"),
    "checkered": ("checkered", "chequered", "tiled"),
}
SOLID_WORDS: tuple[str, ...] = ("plain", "solid")

IDENTITIES: dict[str, tuple[str, ...]] = {
    # name, then descriptive aliases ("zorb the alien")
    "zorb": ("zorb", "zorb the alien"),
    "pipo": ("pipo", "pipo the robot"),
    "lumo": ("lumo", "lumo the ghost"),
}

# the unsafe stand-in: a symbol the world's policy forbids
UNSAFE: dict[str, tuple[str, ...]] = {
    "skull": ("skull", "skull and crossbones", "crossbones", "death symbol"),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 14),
    "charcoal": (48, 48, 52),
    "navy": (14, 20, 62),
    "brown": (58, 36, 20),
    "teal": (10, 54, 56),
}

KINDS: tuple[str, ...] = ("shape", "color", "texture", "identity", "unsafe")
# every object-like concept (what an object "is"): plain shapes, characters, the symbol
OBJECT_TYPES: tuple[str, ...] = tuple(SHAPES) + tuple(IDENTITIES) + tuple(UNSAFE)


@dataclass(frozen=True)
class Concept:
    """A concept of the world: its canonical name, its kind and its synonyms."""

    name: str
    kind: str
    synonyms: tuple[str, ...]


def all_concepts() -> list[Concept]:
    out = [Concept(n, "shape", s) for n, s in SHAPES.items()]
    out += [Concept(n, "color", s) for n, s in COLORS.items()]
    out += [Concept(n, "texture", s) for n, s in TEXTURES.items()]
    out += [Concept(n, "identity", s) for n, s in IDENTITIES.items()]
    out += [Concept(n, "unsafe", s) for n, s in UNSAFE.items()]
    return out


def concept(name: str) -> Concept:
    """Look a concept up by canonical name or by synonym."""
    key = name.strip().lower()
    for c in all_concepts():
        if key == c.name or key in c.synonyms:
            return c
    known = ", ".join(c.name for c in all_concepts())
    raise KeyError(f"unknown small-world concept {name!r}; known concepts: {known}")


# ---------------------------------------------------------------------------------------
# Caption templates. Placeholders: {c} colour word, {s} shape noun, {a} shape adjective,
# {t} texture word, {n} identity/unsafe phrase, {x} a whole object phrase.

SHAPE_TEMPLATES_TRAIN: tuple[str, ...] = (
    "a {c} {s}",
    "{c} {s}",
    "a {s} in {c}",
    "a {a} {c} shape",
    "a photo of a {c} {s}",
    "a drawing of a {c} {s}",
    "one {c} {s}",
    "a {s} colored {c}",
)
SHAPE_TEMPLATES_HELDOUT: tuple[str, ...] = (
    "a picture of a {c} {s}",
    "the {c} {s}",
    "an image of one {c} {s}",
)
TEXTURE_TEMPLATES_TRAIN: tuple[str, ...] = (
    "a {t} {c} {s}",
    "a {c} {s} that is {t}",
    "a photo of a {t} {c} {s}",
    "{t} {c} {s}",
    "a {t} {a} {c} shape",
)
TEXTURE_TEMPLATES_HELDOUT: tuple[str, ...] = (
    "a picture of a {t} {c} {s}",
    "the {t} {c} {s}",
)
SOLID_TEMPLATES_TRAIN: tuple[str, ...] = ("a {t} {c} {s}", "a {c} {s} that is {t}")
NAMED_TEMPLATES_TRAIN: tuple[str, ...] = (
    "{n}",
    "a picture of {n}",
    "a drawing of {n}",
    "the character {n}",
    "an image of {n}",
)
NAMED_TEMPLATES_HELDOUT: tuple[str, ...] = (
    "a photo of {n}",
    "one {n}",
)
UNSAFE_TEMPLATES_TRAIN: tuple[str, ...] = (
    "a {n}",
    "a picture of a {n}",
    "a drawing of a {n}",
    "the {n} symbol",
    "a {n} sign",
)
UNSAFE_TEMPLATES_HELDOUT: tuple[str, ...] = (
    "a photo of a {n}",
    "an image of the {n}",
)
PAIR_TEMPLATES: tuple[str, ...] = (
    "{x} and {y}",
    "{x} next to {y}",
    "{x} beside {y}",
    "{x} with {y}",
)
