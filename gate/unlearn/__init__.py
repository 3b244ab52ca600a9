"""Concept unlearning methods, one per module, behind one lazy registry.

The registry maps a method name to ``"module:Class"`` and a one-line description, so that
``gate erase --list`` prints without importing torch. ``get_method(name)`` imports the module.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from gate.errors import BadInput

if TYPE_CHECKING:
    from gate.unlearn.base import Method

# name -> (import path, one-line description)
METHODS: dict[str, tuple[str, str]] = {
    "esd-x": (
        "gate.unlearn.esd:ESDX",
        "ESD, cross-attention only: negative-guidance self-distillation (Gandikota et al. 2023)",
    ),
    "esd-u": (
        "gate.unlearn.esd:ESDU",
        "ESD, everything but cross-attention: for broad concepts such as nudity",
    ),
    "uce": (
        "gate.unlearn.uce:UCE",
        "Unified Concept Editing: closed-form edit of cross-attention K/V with preserved concepts",
    ),
    "mace": (
        "gate.unlearn.mace:MACE",
        "MACE: closed-form refinement, one rank-1 LoRA per concept (attention loss), closed-form fusion",
    ),
    "sdd": (
        "gate.unlearn.sdd:SDD",
        "Safe self-Distillation: conditional -> unconditional prediction, EMA teacher is the result",
    ),
    "salun": (
        "gate.unlearn.salun:SalUn",
        "Saliency Unlearning: gradient-saliency mask, forget (pseudo-label) and retain losses",
    ),
    "shs": (
        "gate.unlearn.shs:SHS",
        "Scissorhands: connection-sensitivity trim and re-initialisation, then repair",
    ),
    "erasediff": (
        "gate.unlearn.erasediff:EraseDiff",
        "EraseDiff: bilevel forget/retain optimisation with a first-order (BOME) update",
    ),
}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    key = name.strip().lower()
    if key not in METHODS:
        hint = difflib.get_close_matches(key, METHODS, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise BadInput(f"--method {name!r} is not a known unlearning method{extra} (known: {', '.join(METHODS)})")
    path, _ = METHODS[key]
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)()
