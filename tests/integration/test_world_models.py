"""The shipped small world loads through the real diffusers and open_clip APIs and works."""

from __future__ import annotations

import numpy as np
import pytest

from gate.world import data
from gate.world.evaluate import concept_hit, generate


def test_pipeline_loads_offline_with_sd_layout(world_pipe):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    p = world_pipe
    assert isinstance(p.unet, UNet2DConditionModel) and isinstance(p.vae, AutoencoderKL)
    assert isinstance(p.text_encoder, CLIPTextModel) and isinstance(p.tokenizer, CLIPTokenizer)
    assert isinstance(p.scheduler, DDIMScheduler)
    names = {n for n, _ in p.unet.named_modules()}
    for suffix in ("attn2.to_k", "attn2.to_v", "attn2.to_q", "attn2.to_out.0", "attn1.to_k"):
        assert any(n.endswith(suffix) for n in names), suffix
    assert p.unet.config.cross_attention_dim == p.text_encoder.config.hidden_size


def test_pipeline_generates_deterministically(world_pipe):
    a = generate(world_pipe, ["a red circle", "zorb"], [1, 2], steps=4, guidance=3.0)
    b = generate(world_pipe, ["zorb"], [2], steps=4, guidance=3.0)
    assert a[0].size == (32, 32)
    # per-image seeds: batching does not change the image (beyond a level on a rounding edge, which
    # depends on the CPU's kernels; see test_generate)
    diff = np.abs(np.asarray(a[1]).astype(int) - np.asarray(b[0]).astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_clip_loads_through_open_clip(world_dir):
    import open_clip
    import torch

    folder = world_dir / "clip"
    open_clip.add_model_config(folder)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "world-clip", pretrained=str(folder / "world-clip.safetensors")
    )
    model.eval()  # the ResNet tower has batch norm: inference mode, as for any open_clip model
    tok = open_clip.get_tokenizer("world-clip")
    s = data.sample(99, 0, objects=[data.WorldObject("star", "shape", "blue")])
    with torch.no_grad():
        img = model.encode_image(preprocess(data.to_pil(s.image))[None])
        txt = model.encode_text(tok(["a star", "a circle", "a square"]))
    sims = (img / img.norm()) @ (txt / txt.norm(dim=-1, keepdim=True)).T
    assert sims.argmax().item() == 0


def test_clip_reads_rendered_concepts(world_clip):
    objs = [data.WorldObject(s, "shape", c) for s, c in [("circle", "red"), ("triangle", "blue"), ("cross", "green")]]
    objs += [data.WorldObject("zorb", "identity"), data.WorldObject("skull", "unsafe")]
    images = [data.to_pil(data.sample(4242, i, objects=[o]).image) for i, o in enumerate(objs)]
    assert world_clip.classify(images, __import__("gate.world.clip", fromlist=["x"]).object_texts()) == [
        "circle",
        "triangle",
        "cross",
        "zorb",
        "skull",
    ]


@pytest.mark.parametrize("concept", ["square", "yellow", "pipo", "skull"])
def test_fidelity_smoke(world_pipe, world_clip, concept):
    """A small sample of held-out prompts per concept: most images show the concept asked for.
    The shipped world measures >= 0.85 on 32 images per concept (MODEL_CARD.md); with 8 images
    the bound is looser so that sampling noise alone does not fail the test."""
    prompts = [p for p, _ in data.concept_prompts(concept, 8, seed=5, split="heldout")]
    images = generate(world_pipe, prompts, list(range(100, 108)), steps=20, guidance=3.0)
    hits = concept_hit(world_clip, images, concept)
    assert sum(hits) >= 6, (concept, hits)
