"""The detector registry: names and hints, no detector built (the detectors on real models are in
tests/integration/test_detectors.py and tests/integration/test_detector_contract.py)."""

from __future__ import annotations

import pytest

from gate.detectors import detector_class, detector_names
from gate.errors import BadInput


def test_registry_lists_and_hints():
    assert {"open_clip", "nudenet", "fake"} <= set(detector_names())
    with pytest.raises(BadInput, match="did you mean 'nudenet'"):
        detector_class("nudnet")
