"""Candidate updates: full and LoRA fine-tunes load back through the standard diffusers API,
and LoRAs that do not fit the model are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gate.errors import BadInput
from gate.finetune import LORA_WEIGHTS, FinetuneConfig, finetune
from gate.pipeline import load_pipeline
from gate.updates import load_lora
from gate.world.export import write_folder


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    d = tmp_path_factory.mktemp("benign")
    write_folder(d, n=24, seed=9, exclude=["skull"])
    return d


def _out(pipe, prompt="a red circle"):
    g = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=3, guidance_scale=2.0, generator=g, output_type="np").images


def test_lora_round_trips_with_its_scale(world_dir, benign, tmp_path):
    out = tmp_path / "lora"
    rec = finetune(
        world_dir / "sd",
        benign,
        out,
        FinetuneConfig(mode="lora", steps=4, batch_size=4, rank=2, alpha=8.0, save_steps=(2,)),
    )
    assert (out / LORA_WEIGHTS).is_file() and (out / "checkpoint-2" / LORA_WEIGHTS).is_file()
    assert rec["checkpoints"] == ["checkpoint-2"] and json.loads((out / "finetune.json").read_text())["mode"] == "lora"
    # the standard API ...
    p1 = load_pipeline(world_dir / "sd")
    p1.load_lora_weights(str(out), weight_name=LORA_WEIGHTS)
    assert p1.unet.peft_config["default_0"].lora_alpha == 8 and p1.unet.peft_config["default_0"].r == 2
    # ... and the gate's checked loader give the same images, which differ from the base model's
    p2 = load_pipeline(world_dir / "sd")
    counts = load_lora(p2, out)
    assert counts["unet"] > 0
    assert np.allclose(_out(p1), _out(p2), atol=1e-5)
    assert not np.allclose(_out(p2), _out(load_pipeline(world_dir / "sd")), atol=1e-4)


def test_text_encoder_lora_round_trips(world_dir, benign, tmp_path):
    """LoRA on the UNet and the text encoder: both load back through the standard API, with the
    adapter's alpha, and change the text embeddings."""
    out = tmp_path / "te"
    finetune(
        world_dir / "sd", benign, out,
        FinetuneConfig(mode="lora", steps=3, batch_size=4, rank=2, alpha=4.0, lr=1e-2, train_text_encoder=True),
    )  # fmt: skip
    base = load_pipeline(world_dir / "sd")
    ids = base.tokenizer(["a red circle"], return_tensors="pt").input_ids
    with torch.no_grad():
        e0 = base.text_encoder(ids)[0]
    pipe = load_pipeline(world_dir / "sd")
    counts = load_lora(pipe, out)
    assert counts["text_encoder"] > 0 and counts["unet"] > 0
    assert pipe.text_encoder.peft_config["candidate"].lora_alpha == 4
    with torch.no_grad():
        assert (pipe.text_encoder(ids)[0] - e0).abs().max() > 1e-4


def test_full_finetune_loads_with_from_pretrained(world_dir, benign, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "full"
    finetune(world_dir / "sd", benign, out, FinetuneConfig(mode="full", steps=2, batch_size=4))
    pipe = StableDiffusionPipeline.from_pretrained(str(out), safety_checker=None, local_files_only=True)
    base = load_pipeline(world_dir / "sd")
    diff = sum(float((a - b).abs().sum()) for a, b in zip(pipe.unet.parameters(), base.unet.parameters(), strict=True))
    assert diff > 0


def test_full_finetune_applies_as_a_gate_update(world_dir, benign, tmp_path):
    """The gate applies a full fine-tune folder (and its intermediate checkpoints) to the model:
    the folder's saved config names another path, which is not another architecture."""
    from diffusers import UNet2DConditionModel

    from gate.model import apply_update
    from gate.world.models import unet_config

    out = tmp_path / "full"
    finetune(world_dir / "sd", benign, out, FinetuneConfig(mode="full", steps=2, batch_size=4, save_steps=(1,)))
    for folder in (out, out / "checkpoint-1"):
        pipe = load_pipeline(world_dir / "sd")
        ident = apply_update(pipe, str(folder))
        assert ident is not None and ident.kind == "full-folder"
        saved = UNet2DConditionModel.from_pretrained(str(folder / "unet"), local_files_only=True)
        for (name, a), b in zip(pipe.unet.state_dict().items(), saved.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    # a folder whose UNet has other block sizes is refused, naming the difference
    other = tmp_path / "other"
    UNet2DConditionModel(**dict(unet_config(), block_out_channels=(16, 32, 48))).save_pretrained(other / "unet")
    with pytest.raises(BadInput, match=r"another architecture.*block_out_channels"):
        apply_update(load_pipeline(world_dir / "sd"), str(other))


def test_lora_for_another_architecture_is_refused(world_dir, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from gate.world.models import unet_config

    other = UNet2DConditionModel(**dict(unet_config(), block_out_channels=(16, 32, 48)))
    other.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_k", "to_v"]))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(other))
    pipe = load_pipeline(world_dir / "sd")
    with pytest.raises(BadInput, match="built for another architecture"):
        load_lora(pipe, tmp_path / LORA_WEIGHTS)


def test_truncated_and_pickled_loras_are_refused(world_dir, benign, tmp_path):
    out = tmp_path / "lora"
    finetune(world_dir / "sd", benign, out, FinetuneConfig(mode="lora", steps=1, batch_size=2))
    blob = (out / LORA_WEIGHTS).read_bytes()
    bad = tmp_path / "bad" / "x.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(blob[: len(blob) // 2])
    pipe = load_pipeline(world_dir / "sd")
    with pytest.raises(BadInput, match="not a readable safetensors file"):
        load_lora(pipe, bad)
    pkl = tmp_path / "lora.bin"
    pkl.write_bytes(b"not even read")
    with pytest.raises(BadInput, match="pickled weights are never loaded"):
        load_lora(pipe, pkl)


def test_finetune_cli(world_dir, benign, tmp_path, capsys):
    from gate.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "finetune",
            "--checkpoint",
            str(world_dir / "sd"),
            "--data",
            str(benign),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "2",
        ]
    )
    assert code == 0 and (out / LORA_WEIGHTS).is_file()
    assert main(["finetune", "--checkpoint", str(world_dir / "sd"), "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "no metadata.jsonl" in capsys.readouterr().err
