"""The models are the released architectures, in the released formats: parameter counts, the
CLIP tokenizer, the original-SD single file read back by diffusers, open_clip's own loader,
and a kohya LoRA applied module for module."""

from __future__ import annotations

import gc
import json

import pytest

pytestmark = pytest.mark.realarch

# the released models' parameter counts (UNet / VAE / text encoder)
RELEASED = {
    "sd14": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
}


@pytest.mark.parametrize("arch", ["sd14", "sd21"])
def test_the_released_architectures(arch, request):
    folder = request.getfixturevalue(f"{arch}_dir")
    record = json.loads((folder / "realarch.json").read_text())
    assert record["arch"] == arch and record["parameters"] == RELEASED[arch]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if arch == "sd14":
        assert sched["_class_name"] == "PNDMScheduler" and sched["skip_prk_steps"] is True
    else:
        assert sched["_class_name"] == "DDIMScheduler" and sched["prediction_type"] == "v_prediction"
        unet = json.loads((folder / "unet" / "config.json").read_text())
        assert (
            unet["use_linear_projection"] and unet["upcast_attention"] and unet["attention_head_dim"] == [5, 10, 20, 20]
        )
    assert all(p.suffix != ".bin" for p in folder.rglob("*")), "weights are safetensors only"


@pytest.mark.parametrize("arch,pad", [("sd14", "<|endoftext|>"), ("sd21", "!")])
def test_the_tokenizer_is_clips(arch, pad, request):
    from open_clip.tokenizer import SimpleTokenizer

    from gate.realarch.tokenizer import bpe_file, load_tokenizer

    tok = load_tokenizer(request.getfixturevalue(f"{arch}_dir") / "tokenizer")
    reference = SimpleTokenizer(str(bpe_file()))
    assert len(tok) == 49408 and tok.model_max_length == 77 and tok.pad_token == pad
    # no "!" here: it is SD 2's pad token, so that tokenizer keeps it whole (id 0) instead of BPE's "!</w>"
    for text in ("a photo of an astronaut", "A naïve café, 1984.", "a   nude   person"):
        want = [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]
        assert tok(text).input_ids == want, text
    # the ids the released tokenizer gives (CLIP ViT-L/14's vocab.json)
    assert tok("a photo of an astronaut").input_ids == [49406, 320, 1125, 539, 550, 18376, 49407]


def test_ensure_builds_once(sd14_dir, realarch_cache):
    from gate.realarch import ensure

    stamp = (sd14_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert ensure("sd14", realarch_cache) == sd14_dir
    assert (sd14_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in realarch_cache.iterdir() if ".tmp-" in p.name], "no half-built folders left behind"


def test_open_clip_loads_the_random_vit_l14(clip_l14_file):
    import open_clip
    import torch
    from safetensors.torch import load_file

    model, _, _ = open_clip.create_model_and_transforms("ViT-L-14", pretrained=str(clip_l14_file))
    saved = load_file(str(clip_l14_file))
    state = model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    assert sum(v.numel() for v in saved.values()) > 400_000_000  # ViT-L/14: 428 M
    del model, saved, state
    gc.collect()


def test_every_kohya_module_is_applied(sd14_dir, sd14_kohya_lora):
    """The count of kohya modules in the file, per component, is the number of LoRA layers the
    gate's loader (diffusers + peft) injected, and so is what report.json records."""
    from gate.lora import injected_layers, load_lora
    from gate.pipeline import load_pipeline
    from gate.realarch import kohya_names
    from gate.weights import read_safetensors_header

    keys = read_safetensors_header(sd14_kohya_lora)[0]
    in_file = {
        part: len({k.split(".")[0] for k in keys if k.startswith(prefix) and k.endswith(".lora_down.weight")})
        for part, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_"))
    }
    # every attn1/attn2 to_q/to_k/to_v/to_out.0 of SD 1.4's 16 transformer blocks; 4 projections x 12 layers
    assert in_file == {"unet": 16 * 2 * 4, "text_encoder": 12 * 4}
    assert len(kohya_names(sd14_dir)) == sum(in_file.values())
    pipe = load_pipeline(sd14_dir)
    try:
        counts = load_lora(pipe, sd14_kohya_lora)
        got = injected_layers(pipe)
        assert counts == {**in_file, "format": "kohya"}
        assert {p: len(got[p]) for p in in_file} == in_file
    finally:
        del pipe
        gc.collect()
