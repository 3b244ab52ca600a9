"""The shipped small world's files: hashes recorded in the model card, safetensors only, small.
No model is loaded (tests/integration/test_world_models.py loads them)."""

from __future__ import annotations

import json

from gate.world.build import file_hashes


def test_shipped_files_match_the_model_card_hashes(world_dir):
    record = json.loads((world_dir / "build.json").read_text())
    assert file_hashes(world_dir) == record["files"]
    card = (world_dir / "MODEL_CARD.md").read_text()
    for name, digest in record["files"].items():
        assert f"| {name} | {digest} |" in card


def test_shipped_weights_are_safetensors_and_small(world_dir):
    files = [p for p in world_dir.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert sum(p.stat().st_size for p in files) < 30 * 2**20
