"""One pipeline at a time: the pre-screen and the original model's images work on the pipeline
the check has loaded, reading other weights into it and back (gate.inplace). Real small-world
models and files; nothing mocked."""

from __future__ import annotations

import numpy as np
import pytest

from gate.errors import BadInput
from gate.inplace import component_state, fingerprint, load_into, swap_components
from gate.model import load_checkpoint
from gate.policy import PrescreenBudget
from gate.prescreen_command import prescreen_pipe, weight_prescreen
from gate.world import concepts as C

SMALL = PrescreenBudget(latents=2, timesteps=(500,), latent_size=None, weights=True)


def _images(pipe, n=2):
    from gate.generate import generate

    return [np.asarray(im) for im in generate(pipe, ["a skull"] * n, list(range(n)), steps=4, guidance=3.0)]


def test_prescreen_gives_the_pipeline_back_unchanged(zoo):
    pipe = load_checkpoint(zoo["checkpoint"])[0]
    before = {p: fingerprint(getattr(pipe, p)) for p in ("unet", "text_encoder", "vae")}
    images = _images(pipe)
    prompts = list(C.concept("skull").synonyms)
    out = prescreen_pipe(
        pipe, checkpoint=zoo["checkpoint"], original=zoo["original"], update=zoo["resurgent"],
        prompt_sets={"skull": prompts}, budget=SMALL,
    )  # fmt: skip
    assert not getattr(pipe.unet, "peft_config", None)  # the LoRA is gone again
    assert {p: fingerprint(getattr(pipe, p)) for p in ("unet", "text_encoder", "vae")} == before
    assert all(np.array_equal(a, b) for a, b in zip(images, _images(pipe), strict=True))
    # the same scores as the standalone command on its own load, with the same budget
    alone = weight_prescreen(zoo["original"], zoo["checkpoint"], zoo["resurgent"], prompts, budget=SMALL)
    for k in ("eps_undo", "guidance_undo", "kv_undo", "weight_undo"):
        assert out["skull"][k] == pytest.approx(alone[k], rel=1e-5, abs=1e-6), k
    assert out["skull"]["kv_undo"] > 0 and out["skull"]["budget"]["latents"] == 2


def test_a_full_update_is_undone_too(zoo, tmp_path):
    """A full fine-tune (a bare UNet folder) overwrites the UNet; the unlearned weights are read back."""
    pipe = load_checkpoint(zoo["checkpoint"])[0]
    before = fingerprint(pipe.unet)
    cand = load_checkpoint(zoo["original"])[0]
    cand.unet.save_pretrained(tmp_path / "unet", safe_serialization=True)  # the original as a "fine-tune"
    out = prescreen_pipe(
        pipe, checkpoint=zoo["checkpoint"], original=zoo["original"], update=str(tmp_path / "unet"),
        prompt_sets={"skull": list(C.concept("skull").synonyms)}, budget=SMALL,
    )  # fmt: skip
    assert fingerprint(pipe.unet) == before
    # a candidate that is the original model undoes the whole edit
    assert out["skull"]["weight_undo"] == pytest.approx(1.0, abs=1e-6)
    assert out["skull"]["guidance_undo"] == pytest.approx(1.0, abs=1e-6)


def test_original_read_in_place_makes_the_same_images(zoo):
    pipe = load_checkpoint(zoo["checkpoint"])[0]
    swap_components(pipe, zoo["original"], ("unet", "text_encoder", "vae"), "--original")
    fresh = load_checkpoint(zoo["original"])[0]
    assert all(np.array_equal(a, b) for a, b in zip(_images(pipe), _images(fresh), strict=True))


def test_weights_of_another_architecture_are_refused(zoo, world_dir):
    pipe = load_checkpoint(zoo["checkpoint"])[0]
    te = component_state(world_dir / "sd", "text_encoder")
    with pytest.raises(BadInput, match="does not fit the loaded model"):
        load_into(pipe.unet, te, "--original x (unet)")


def test_check_holds_one_pipeline_and_records_what_it_did(zoo, tmp_path):
    """A whole check on the tiny policy: pre-screen timed, the original read in place, the
    sampler's attention recorded; the figures equal a check whose original is loaded apart."""
    from pathlib import Path

    from gate.runner import CheckOptions, run_check

    tiny = str(Path(__file__).parents[1] / "policies" / "tiny.yaml")

    def check(name, **kw):
        opts = CheckOptions(
            checkpoint=zoo["checkpoint"], policy=tiny, update=zoo["resurgent"], original=zoo["original"],
            cache_dir=None, report_dir=str(tmp_path / name), track=False, **kw,
        )  # fmt: skip
        return run_check(opts)

    out = check("a")
    rep = out.report
    assert rep.timings_s["prescreen"] > 0 and rep.prescreen["skull"]["eps_undo"] is not None
    assert "AttnProcessor" in rep.sampler["attention"] and rep.sampler["batch_size_used"] == 48
    assert rep.inputs["original"]["kind"] == "diffusers-folder"
    import gate.runner as R

    real = R.original_pipe

    def apart(self):  # the fallback path: the original loaded as a pipeline of its own
        self.pipe = None
        return self._load_model(self.opts.original, "--original")

    R.original_pipe = apart
    try:
        other = check("b", prescreen=False)
    finally:
        R.original_pipe = real
    for a, b in zip(rep.concepts, other.report.concepts, strict=True):
        assert [(r.rule, r.observed, r.low, r.high, r.verdict) for r in a.rules] == [
            (r.rule, r.observed, r.low, r.high, r.verdict) for r in b.rules
        ]
    assert rep.inputs["original"]["sha256"] == other.report.inputs["original"]["sha256"]


def test_a_folder_with_pickled_components_is_refused(world_dir, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "sd"
    shutil.copytree(world_dir / "sd", folder)
    f = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(f)), folder / "unet" / "diffusion_pytorch_model.bin")  # made here, by the test
    f.unlink()
    with pytest.raises(BadInput, match="unet/ holds only pickled weights"):
        load_checkpoint(str(folder))
    pipe = load_checkpoint(str(folder), allow_pickle=True)[0]  # opted in: read with weights_only=True
    assert pipe.unet is not None
