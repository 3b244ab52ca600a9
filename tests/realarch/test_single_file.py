"""Original-SD ("ldm") single-file checkpoints written by gate.realarch.ldm: diffusers'
``from_single_file`` reads back exactly the folder's tensors, and ``gate check --checkpoint FILE
--config FOLDER`` gives the folder's images. The files (4-5 GB) live only as long as their tests."""

from __future__ import annotations

import gc

import pytest

pytestmark = pytest.mark.realarch


def _same_tensors(folder, single_file):
    import torch
    from diffusers import StableDiffusionPipeline

    from gate.pipeline import load_pipeline

    ref = load_pipeline(folder)
    got = StableDiffusionPipeline.from_single_file(
        str(single_file), config=str(folder), local_files_only=True, safety_checker=None
    )
    try:
        for part in ("unet", "vae", "text_encoder"):
            a, b = ref.components[part].state_dict(), got.components[part].state_dict()
            assert set(a) == set(b), (part, sorted(set(a) ^ set(b))[:5])
            differ = [k for k in a if not torch.equal(a[k], b[k])]
            assert not differ, (part, len(differ), differ[:3])
        assert type(got.scheduler) is type(ref.scheduler) and dict(got.scheduler.config) == dict(ref.scheduler.config)
        assert got.tokenizer.get_vocab() == ref.tokenizer.get_vocab()
    finally:
        del ref, got
        gc.collect()


def test_sd21_single_file_reads_back_the_same_tensors(sd21_dir, transient, tmp_path):
    """SD 2.x's OpenCLIP text tower in open_clip's own layout (fused in_proj, 24 blocks)."""
    from gate.weights import read_safetensors_header

    with transient("single-file", sd21_dir, tmp_path / "sd21-ldm.safetensors") as f:
        keys = read_safetensors_header(f)[0]
        assert "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight" in keys
        assert "cond_stage_model.model.text_projection" in keys
        _same_tensors(sd21_dir, f)


@pytest.fixture(scope="module")
def sd14_single_file(sd14_dir, transient, tmp_path_factory):
    with transient("single-file", sd14_dir, tmp_path_factory.mktemp("ldm") / "sd14-ldm.safetensors") as f:
        yield f


def test_sd14_single_file_reads_back_the_same_tensors(sd14_dir, sd14_single_file):
    from gate.weights import read_safetensors_header

    keys = read_safetensors_header(sd14_single_file)[0]
    assert any(k.startswith("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.encoder.layers.11.") for k in keys)
    assert any(k.startswith("first_stage_model.decoder.up.3.block.2.") for k in keys)
    _same_tensors(sd14_dir, sd14_single_file)


def test_sd14_single_file_checkpoint(reached_a_verdict, report_scores, gate_check, realarch_policy, sd14_dir, sd14_single_file, sd14_kohya_lora, objects_on_folder):  # fmt: skip
    """The original-SD single file with --config: the same tensors as the folder, so the same
    images and scores as the folder's check with the same update, seeds and policy."""
    checked = gate_check(
        "--checkpoint", sd14_single_file, "--config", sd14_dir, "--update", sd14_kohya_lora,
        "--policy", realarch_policy("sd14-objects"), "--no-prescreen", name="sd14-single-file",
    )  # fmt: skip
    rep = reached_a_verdict(checked, "lora", sd14_kohya_lora)
    assert rep["inputs"]["checkpoint"]["kind"] == "single-file"
    assert rep["inputs"]["update"]["modules"] == {"unet": 128, "text_encoder": 48, "format": "kohya"}
    assert report_scores(rep) and report_scores(rep) == report_scores(objects_on_folder.report)
