"""Stable Diffusion's real architectures with random weights, in the real file formats: the test
tier that checks the gate on SD v1.4- and v2.1-size models without downloading any of them.

    build(arch, folder, seed=0)      a StableDiffusionPipeline folder ("sd14" or "sd21"), the released
                                     configs (gate.realarch.configs), the real CLIP BPE tokenizer
    ensure(arch, cache_dir)          the same, built once into cache_dir/<arch>-<key>/ and reused
    make_peft_lora(folder, out)      candidate updates for a built folder: a diffusers/peft LoRA,
    make_kohya_lora(folder, file)    a kohya LoRA, a bare fine-tuned UNet folder, an original-SD
    make_unet_folder(folder, out)    single-file checkpoint, and a random open_clip ViT-L-14
    make_single_file(folder, file)
    make_open_clip_l14(file)

Random weights make no meaningful images: this tier checks that every real format loads, fits,
is applied completely and reaches a verdict, not what the verdict is.
"""

from gate.realarch.build import build, cache_key, ensure, made
from gate.realarch.configs import ARCHS, configs
from gate.realarch.ldm import make_single_file
from gate.realarch.makers import kohya_names, make_kohya_lora, make_open_clip_l14, make_peft_lora, make_unet_folder

__all__ = [
    "ARCHS", "build", "cache_key", "configs", "ensure", "kohya_names", "made", "make_kohya_lora",
    "make_open_clip_l14", "make_peft_lora", "make_single_file", "make_unet_folder",
]  # fmt: skip
