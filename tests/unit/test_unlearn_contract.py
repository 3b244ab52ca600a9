"""The unlearning methods' contract that needs no model: typed configs with both presets, and
``gate erase --list`` without torch (the erasures themselves are in
tests/integration/test_unlearn_contract.py)."""

from __future__ import annotations

import dataclasses

import pytest

from gate.unlearn import METHODS, get_method


@pytest.mark.parametrize("name", list(METHODS))
def test_config_is_a_dataclass_with_both_presets(name):
    m = get_method(name)
    assert dataclasses.is_dataclass(m.config_cls)
    presets = m.presets()
    assert set(presets) == {"original", "small-world"}
    for cfg in presets.values():
        assert isinstance(cfg, m.config_cls)
    assert presets["original"] != presets["small-world"]


def test_erase_list_needs_no_torch():
    import subprocess
    import sys

    code = "import sys; from gate.cli import main; main(['erase', '--list']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in METHODS:
        assert name in out
    assert out.strip().endswith("False")
