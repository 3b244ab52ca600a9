"""Update kinds on the small world's real pipeline: a bare UNet folder (what
``UNet2DConditionModel.save_pretrained`` writes) is a full fine-tune, never taken for a LoRA."""

from __future__ import annotations

import copy
import re

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


# ---------------------------------------------------------------------------------------
# LoRAs: every module of the file must be applied, counted per component


def _loaded(world_dir):
    from gate.pipeline import load_pipeline

    return load_pipeline(world_dir / "sd")


def test_a_kohya_lora_is_applied_module_for_module(world_dir, world_pipe, tmp_path):
    from gate.lora import injected_layers
    from gate.realarch import kohya_names, make_kohya_lora
    from gate.updates import update_form

    f = make_kohya_lora(world_dir / "sd", tmp_path / "k.safetensors")
    names = kohya_names(world_dir / "sd")
    n_unet = sum(n.startswith("lora_unet_") for n in names)
    n_te = sum(n.startswith("lora_te_") for n in names)
    assert n_unet > 0 and n_te > 0
    assert update_kind(str(f)) == "lora" and update_form(str(f)) == "a kohya LoRA file"
    preflight_update(world_pipe, str(f))
    pipe = _loaded(world_dir)
    ident = apply_update(pipe, str(f))
    assert ident is not None and ident.extra["modules"] == {"unet": n_unet, "text_encoder": n_te, "format": "kohya"}
    got = injected_layers(pipe)
    assert (len(got["unet"]), len(got["text_encoder"])) == (n_unet, n_te)


def test_a_kohya_module_this_model_lacks_is_refused_before_any_image(world_dir, world_pipe, tmp_path):
    """diffusers on its own drops the module with a warning and applies the rest."""
    from gate.realarch import kohya_names, make_kohya_lora

    extra = {"lora_unet_down_blocks_2_attentions_5_transformer_blocks_0_attn1_to_q": (96, 96)}
    f = make_kohya_lora(world_dir / "sd", tmp_path / "k.safetensors", extra=extra)
    total = len(kohya_names(world_dir / "sd")) + 1
    with pytest.raises(
        BadInput, match=rf"\(a kohya LoRA file\): 1 of its {total} LoRA modules do not fit.*no such layer"
    ):
        preflight_update(world_pipe, str(f))


def test_a_lora_that_diffusers_applies_only_in_part_is_refused(world_dir, tmp_path, monkeypatch):
    """The check after loading: if diffusers places fewer layers than the file holds (here its
    converter is made to lose three UNet modules), the update is refused, naming the counts."""
    from diffusers import StableDiffusionPipeline

    from gate.realarch import kohya_names, make_kohya_lora
    from gate.updates import load_lora

    f = make_kohya_lora(world_dir / "sd", tmp_path / "k.safetensors")
    original = StableDiffusionPipeline.lora_state_dict.__func__

    def losing(cls, *a, **k):
        state, *rest = original(cls, *a, **k)
        lost = sorted({key.rsplit(".", 2)[0] for key in state if ".attn2." in key and key.startswith("unet.")})[:3]
        return ({key: v for key, v in state.items() if key.rsplit(".", 2)[0] not in lost}, *rest)

    monkeypatch.setattr(StableDiffusionPipeline, "lora_state_dict", classmethod(losing))
    n_unet = sum(n.startswith("lora_unet_") for n in kohya_names(world_dir / "sd"))
    with pytest.raises(BadInput) as e:
        load_lora(_loaded(world_dir), f)
    pattern = (
        rf"\(a kohya LoRA file\): diffusers applied this LoRA only in part: {n_unet - 3} of {n_unet} unet modules "
        r"applied \(not applied: lora_unet_\w+_attn2_\w+, lora_unet_\w+, lora_unet_\w+\); a partly applied LoRA is refused"
    )
    assert re.search(pattern, str(e.value)), str(e.value)


def test_a_peft_lora_reports_its_modules_and_format(world_dir, tmp_path):
    from gate.realarch import make_peft_lora
    from gate.updates import update_form

    out = make_peft_lora(world_dir / "sd", tmp_path / "lora")
    assert update_form(str(out)) == "a diffusers/peft LoRA folder"
    ident = apply_update(_loaded(world_dir), str(out))
    n_attn = sum(n.endswith(("attn1.to_q", "attn2.to_q")) for n, _ in _loaded(world_dir).unet.named_modules())
    assert ident is not None and ident.extra["modules"] == {
        "unet": 4 * n_attn,
        "text_encoder": 0,
        "format": "diffusers",
    }


def test_a_text_encoder_lora_with_the_old_text_model_prefix_fits(world_dir, tmp_path):
    """LoRAs saved before transformers 5 name text-encoder layers text_encoder.text_model.<...>;
    diffusers still places them, so the pre-flight must not refuse them."""
    import torch
    from safetensors.torch import save_file

    pipe = _loaded(world_dir)
    state = {}
    for n, m in pipe.text_encoder.named_modules():
        if n.endswith("self_attn.q_proj"):
            state[f"text_encoder.text_model.{n}.lora_A.weight"] = torch.randn(2, m.in_features) * 0.1
            state[f"text_encoder.text_model.{n}.lora_B.weight"] = torch.randn(m.out_features, 2) * 0.1
    (tmp_path / "old").mkdir()
    save_file(state, str(tmp_path / "old" / "pytorch_lora_weights.safetensors"))
    ident = apply_update(pipe, str(tmp_path / "old"))
    n = pipe.text_encoder.config.num_hidden_layers
    assert ident is not None and ident.extra["modules"] == {"unet": 0, "text_encoder": n, "format": "diffusers"}


# ---------------------------------------------------------------------------------------
# every refusal names the form it detected


def _unet_state(pipe, **changes):
    import torch

    state = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items() if k.startswith("conv_in.")}
    for k, shape in changes.items():
        state[k] = torch.zeros(shape)
    return state


def _form_cases(world_pipe, root):
    """(name, path, regex the refusal must match), one per form and way of not fitting."""
    import json

    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {k: v for k, v in world_pipe.unet.config.items() if not k.startswith("_")}
    other_unet = UNet2DConditionModel(**{**cfg, "block_out_channels": [c * 2 for c in cfg["block_out_channels"]]})
    cases = []
    # a bare UNet folder: another architecture; only pickle weights
    other_unet.save_pretrained(root / "unet-other")
    cases.append(("unet-other", root / "unet-other", r"\(a bare UNet folder\): its UNet is another architecture"))
    (root / "unet-pickle").mkdir()
    (root / "unet-pickle" / "config.json").write_text(json.dumps(dict(world_pipe.unet.config)))
    (root / "unet-pickle" / "diffusion_pytorch_model.bin").write_bytes(b"never unpickled")
    cases.append(("unet-pickle", root / "unet-pickle", r"\(a bare UNet folder\): it holds only pickle weights \(diffusion_pytorch_model\.bin\)"))  # fmt: skip
    # a diffusers pipeline folder: UNet of another architecture, no unet config, text encoder of another size
    other_unet.save_pretrained(root / "full-other" / "unet")
    cases.append(("full-other", root / "full-other", r"\(a diffusers pipeline folder\): its UNet is another architecture"))  # fmt: skip
    (root / "full-noconfig" / "unet").mkdir(parents=True)
    cases.append(("full-noconfig", root / "full-noconfig", r"\(a diffusers pipeline folder\): no unet/config\.json"))
    world_pipe.unet.save_pretrained(root / "full-te" / "unet")
    te_cfg = world_pipe.text_encoder.config.to_dict()
    te_cfg["hidden_size"] = te_cfg["hidden_size"] * 2
    CLIPTextModel(CLIPTextConfig(**{k: v for k, v in te_cfg.items() if not k.startswith("_")})).save_pretrained(
        root / "full-te" / "text_encoder"
    )
    cases.append(("full-te", root / "full-te", r"\(a diffusers pipeline folder\): its text encoder is another architecture.*hidden_size"))  # fmt: skip
    # state-dict files: a UNet tensor of another shape, a text-encoder key the model lacks, an ldm checkpoint, unknown keys
    save_file(_unet_state(world_pipe, **{"conv_in.weight": (1, 2, 3, 3)}), str(root / "unet-shape.safetensors"))
    cases.append(("unet-shape", root / "unet-shape.safetensors", r"\(a UNet state-dict file\): 1 of its 2 tensors do not fit.*conv_in\.weight"))  # fmt: skip
    save_file({"encoder.layers.99.mlp.fc1.weight": torch.zeros(2, 2)}, str(root / "te-extra.safetensors"))
    cases.append(("te-extra", root / "te-extra.safetensors", r"\(a text-encoder state-dict file\): 1 of its 1 tensors do not fit"))  # fmt: skip
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(root / "ldm.safetensors"))
    cases.append(("ldm", root / "ldm.safetensors", r"\(an original-SD single-file checkpoint\): .*--checkpoint FILE --config FOLDER"))  # fmt: skip
    save_file({"foo.bar": torch.zeros(2)}, str(root / "unknown.safetensors"))
    cases.append(("unknown", root / "unknown.safetensors", r"\(a state-dict file with neither UNet nor text-encoder keys\): none of its 1 tensors"))  # fmt: skip
    # LoRAs: another architecture; a folder with two files and no pytorch_lora_weights; truncated
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    other_unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_k", "to_v"]))
    StableDiffusionPipeline.save_lora_weights(
        root / "lora-other", unet_lora_layers=get_peft_model_state_dict(other_unet)
    )
    cases.append(("lora-other", root / "lora-other", r"\(a diffusers/peft LoRA file\): \d+ of its \d+ LoRA modules do not fit: this LoRA was built for another architecture"))  # fmt: skip
    (root / "lora-two").mkdir()
    for n in ("a", "b"):
        save_file({"unet.x.lora_A.weight": torch.zeros(2, 2)}, str(root / "lora-two" / f"{n}.safetensors"))
    cases.append(("lora-two", root / "lora-two", r"\(a LoRA folder\): several \.safetensors files"))
    blob = (root / "lora-other" / "pytorch_lora_weights.safetensors").read_bytes()
    (root / "cut.safetensors").write_bytes(blob[: len(blob) // 2])
    cases.append(("cut", root / "cut.safetensors", r"\(a \.safetensors file\): not a readable safetensors file"))
    # neither: a folder of nothing known, a file of an unknown type, a pickle
    (root / "empty").mkdir()
    cases.append(("empty", root / "empty", r"\(a folder\): neither a diffusers pipeline"))
    (root / "notes.txt").write_text("hi")
    cases.append(("txt", root / "notes.txt", r"\(a \.txt file\): unknown file type"))
    (root / "w.ckpt").write_bytes(b"never unpickled")
    cases.append(("pickle", root / "w.ckpt", r"\(a pickle state-dict file\): pickles can run code and are refused"))
    return cases


def test_every_refusal_names_the_form_it_detected(world_pipe, tmp_path):
    for name, path, pattern in _form_cases(world_pipe, tmp_path):
        with pytest.raises(BadInput) as e:
            preflight_update(world_pipe, str(path))
        msg = str(e.value)
        assert msg.startswith(f"--update {path}"), (name, msg)
        assert re.search(pattern, msg), (name, msg)


def test_state_dict_files_of_each_part_apply(world_dir, world_pipe, tmp_path):
    """A UNet state dict (bare keys), a text-encoder one (with and without text_model.), prefixed ones."""
    import torch
    from safetensors.torch import save_file

    from gate.updates import update_form

    te_key = "final_layer_norm.bias"
    files = {
        "unet": ({"conv_in.bias": torch.full_like(world_pipe.unet.conv_in.bias, 0.25)}, "a UNet state-dict file"),
        "te": ({te_key: torch.full((world_pipe.text_encoder.config.hidden_size,), 0.5)}, "a text-encoder state-dict file"),
        "te-old": ({f"text_model.{te_key}": torch.full((world_pipe.text_encoder.config.hidden_size,), 0.75)},
                   "a text-encoder state-dict file"),
        "both": ({"unet.conv_in.bias": torch.full_like(world_pipe.unet.conv_in.bias, 1.0),
                  f"text_encoder.{te_key}": torch.full((world_pipe.text_encoder.config.hidden_size,), 1.0)},
                 "a UNet and text-encoder state-dict file"),
    }  # fmt: skip
    for name, (state, form) in files.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(state, str(path))
        assert update_kind(str(path)) == "weights" and update_form(str(path)) == form, name
        preflight_update(world_pipe, str(path))
        pipe = _loaded(world_dir)
        ident = apply_update(pipe, str(path))
        assert ident is not None and ident.kind == "weights-file"
        value = next(iter(state.values())).flatten()[0]
        live = pipe.unet.conv_in.bias if name == "unet" or name == "both" else pipe.text_encoder.final_layer_norm.bias
        assert torch.allclose(live, torch.full_like(live, float(value))), name
