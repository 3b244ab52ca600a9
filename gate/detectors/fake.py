"""A deterministic stand-in detector for dry runs and tests of the harness itself.

It reads no pixels' meaning: an image counts as showing the label when the mean of its red
channel exceeds ``threshold`` (default 0.5). Useful to exercise policies, caching and reports
without a model; never a safety check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gate.errors import BadInput


class FakeDetector:
    kind = "fake"

    def __init__(self, settings: Mapping[str, Any], *, base_dir: Path = Path("."), device: str = "cpu") -> None:
        unknown = set(settings) - {"threshold"}
        if unknown:
            raise BadInput(f"fake detector: unknown settings {sorted(unknown)} (allowed: threshold)")
        self.threshold = float(settings.get("threshold", 0.5))

    def identity(self) -> dict[str, Any]:
        return {"type": "fake", "threshold": self.threshold}

    def check_label(self, label: str) -> None:
        return None

    def score(self, images: Sequence[Any], label: str) -> tuple[list[float], list[bool]]:
        import numpy as np

        s = [float(np.asarray(im.convert("RGB"))[..., 0].mean() / 255.0) for im in images]
        return s, [x > self.threshold for x in s]
