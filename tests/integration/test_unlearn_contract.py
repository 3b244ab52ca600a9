"""Contract tests over every registered unlearning method, on the shipped small world.

Each method runs with its small-world preset cut to a few steps: the point here is the
contract (typed config, presets, output loadable by the standard diffusers API, complete
record, only the method's own parameters changed), not the erasure itself, which
tests/integration/test_unlearn_efficacy.py measures.
"""

from __future__ import annotations

import json

import pytest

from gate.errors import BadInput
from gate.unlearn import METHODS
from gate.unlearn.base import EraseRequest, erase

TINY = {
    "esd-x": {"iterations": 2, "batch_size": 2},
    "esd-u": {"iterations": 2, "batch_size": 2},
    "uce": {},
    "mace": {"lora_steps": 2, "batch_size": 2, "n_forget": 4, "n_retain": 4},
    "sdd": {"steps": 2, "batch_size": 2},
    "salun": {"epochs": 1, "n_forget": 4, "n_retain": 4, "batch_size": 2},
    "shs": {"epochs": 1, "n_forget": 4, "n_retain": 4, "batch_size": 2, "prune_num": 1},
    "erasediff": {"epochs": 1, "n_forget": 4, "n_retain": 4, "batch_size": 2},
}
# which UNet parameters each method may touch (by name)
ALLOWED = {
    "esd-x": lambda n: "attn2" in n,
    "sdd": lambda n: "attn2" in n,
    "uce": lambda n: "attn2.to_k" in n or "attn2.to_v" in n,
    "mace": lambda n: "attn2.to_k" in n or "attn2.to_v" in n,
    "esd-u": lambda n: "attn2" not in n,
}


def test_every_method_has_a_tiny_setting():
    assert set(TINY) == set(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_erase_output_loads_and_record_is_complete(name, world_dir, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    out = tmp_path / name
    rec = erase(world_dir / "sd", out, name, EraseRequest(["skull"], ["circle", "zorb"], seed=3), overrides=TINY[name])
    for key in (
        "method",
        "config",
        "seed",
        "preset",
        "inputs",
        "outputs",
        "wall_time_s",
        "parameters_changed",
        "libraries",
    ):
        assert key in rec, key
    assert rec["method"] == name and rec["preset"] == "small-world" and rec["seed"] == 3
    assert len(rec["inputs"]["checkpoint_sha256"]) == 64 and len(rec["outputs"]["model_sha256"]) == 64
    assert json.loads((out / "erase.json").read_text()) == json.loads(json.dumps(rec, default=str))
    assert rec["parameters_changed"]["values"] > 0
    pipe = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None, local_files_only=True)
    base = StableDiffusionPipeline.from_pretrained(str(world_dir / "sd"), safety_checker=None, local_files_only=True)
    changed = [
        n
        for (n, p), (_, q) in zip(pipe.unet.named_parameters(), base.unet.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed
    if name in ALLOWED:
        assert all(ALLOWED[name](n) for n in changed), [n for n in changed if not ALLOWED[name](n)][:3]
    img = pipe("a skull", num_inference_steps=2, guidance_scale=2.0, output_type="np").images
    assert img.shape == (1, 32, 32, 3)


def test_unknown_method_suggests_the_closest(world_dir, tmp_path):
    with pytest.raises(BadInput, match="did you mean 'esd-x'"):
        erase(world_dir / "sd", tmp_path / "o", "esdx", EraseRequest(["skull"]))


def test_unknown_setting_is_named(world_dir, tmp_path):
    with pytest.raises(BadInput, match="has no setting 'iters'"):
        erase(world_dir / "sd", tmp_path / "o", "esd-x", EraseRequest(["skull"]), overrides={"iters": 3})
