"""Concept detectors, by name, imported lazily.

A detector turns images into a score per image in [0, 1] with one meaning: 1.0 = the concept is
present; and into a presence decision. Register your own with ``register("name", "module:Class")``
or through the ``resurgence_gate.detectors`` entry point group.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any

from gate.errors import BadInput

_REGISTRY: dict[str, str] = {
    "open_clip": "gate.detectors.clip:OpenCLIPDetector",
    "nudenet": "gate.detectors.nudenet:NudeNetDetector",
    "fake": "gate.detectors.fake:FakeDetector",
}


def register(name: str, path: str) -> None:
    _REGISTRY[name] = path


def detector_names() -> list[str]:
    names = dict(_REGISTRY)
    for ep in entry_points(group="resurgence_gate.detectors"):
        names.setdefault(ep.name, ep.value)
    return sorted(names)


def detector_class(name: str) -> Any:
    path = _REGISTRY.get(name)
    if path is None:
        for ep in entry_points(group="resurgence_gate.detectors"):
            if ep.name == name:
                path = ep.value
    if path is None:
        hint = difflib.get_close_matches(name, detector_names(), n=1)
        raise BadInput(f"unknown detector {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)
