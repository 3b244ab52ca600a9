"""Update kinds on the small world's real pipeline: a bare UNet folder (what
``UNet2DConditionModel.save_pretrained`` writes) is a full fine-tune, never taken for a LoRA."""

from __future__ import annotations

import copy

import pytest

from gate.errors import BadInput
from gate.model import apply_update, preflight_update
from gate.updates import UPDATE_KINDS, update_kind


def test_a_bare_unet_folder_is_applied_as_full_weights(world_pipe, tmp_path):
    import torch

    unet = copy.deepcopy(world_pipe.unet)
    with torch.no_grad():
        unet.conv_in.bias.add_(0.5)
    unet.save_pretrained(tmp_path / "unet-ft")
    assert update_kind(str(tmp_path / "unet-ft")) == "unet-folder"
    target = copy.deepcopy(world_pipe)
    preflight_update(target, str(tmp_path / "unet-ft"))
    before = target.unet.conv_in.bias.detach().clone()
    ident = apply_update(target, str(tmp_path / "unet-ft"))
    assert ident is not None and ident.kind == "unet-folder" and len(ident.sha256) == 64
    assert torch.allclose(target.unet.conv_in.bias, before + 0.5)


def test_a_unet_folder_of_another_architecture_is_refused_before_any_image(world_pipe, tmp_path):
    from diffusers import UNet2DConditionModel

    cfg = dict(world_pipe.unet.config)
    cfg["block_out_channels"] = [c * 2 for c in cfg["block_out_channels"]]
    other = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(BadInput, match="another architecture"):
        preflight_update(world_pipe, str(tmp_path / "other"))


def test_every_update_kind_has_a_preflight_and_a_loader():
    assert set(UPDATE_KINDS) == {"lora", "full-folder", "unet-folder", "weights"}
    for kind in UPDATE_KINDS.values():
        assert callable(kind.preflight) and callable(kind.apply) and kind.describe


def test_a_missing_world_detector_file_is_bad_input(tmp_path):
    from gate.world.clip import WorldCLIP

    with pytest.raises(BadInput, match=r"no world-clip\.safetensors"):
        WorldCLIP(tmp_path)
