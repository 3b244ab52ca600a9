"""The small world's detector as a detector type of its own (``type: world_clip``), registered
through the ``resurgence_gate.detectors`` entry point like any third-party detector.

    detectors:
      world-clip:
        type: world_clip
        labels: {skull: [a skull, ...], circle: [a circle, ...], ...}
        # clip_dir: folder        optional: another build's clip/ folder (default: the shipped one)

It is the open_clip detector with the world's model (``gate.world.clip.WorldCLIP``) loaded
from the package's assets instead of an open_clip tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gate.detectors.clip import OpenCLIPDetector
from gate.detectors.zeroshot import ZeroShotCLIP


class WorldCLIPDetector(OpenCLIPDetector):
    kind = "world_clip"
    settings_allowed = frozenset({"labels", "decision", "clip_dir"})

    def _load(self, settings: Mapping[str, Any], base_dir: Path, device: str) -> ZeroShotCLIP:
        from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS, WorldCLIP
        from gate.world.models import CLIP_MODEL_NAME

        folder = (base_dir / settings["clip_dir"]).resolve() if settings.get("clip_dir") else CLIP_DIR
        self.model_name, self.pretrained = CLIP_MODEL_NAME, str(folder / CLIP_WEIGHTS)
        return WorldCLIP(folder, device=device)
