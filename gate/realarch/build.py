"""Random-weight Stable Diffusion pipelines of the released architectures, saved as diffusers
writes them (``save_pretrained(safe_serialization=True)``, fp32, no safety checker), and a
content-keyed cache that builds each one once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gate.realarch.configs import ARCHS, configs
from gate.realarch.tokenizer import load_tokenizer, write_tokenizer

RECORD = "realarch.json"
BUILD_FORMAT = 1  # bump when build() writes something else for the same configs and versions
_KEY_LIBRARIES = ("torch", "diffusers", "transformers")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def components(arch: str, *, seed: int = 0) -> dict[str, Any]:
    """The pipeline's components with random weights; each component's weights depend only on
    ``seed`` and its own config (one seeded generator state per component)."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    cfg = configs(arch)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**cfg["vae"])
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    sched_cfg = cfg["scheduler"]
    scheduler = getattr(diffusers, sched_cfg.pop("_class_name")).from_config(sched_cfg)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "scheduler": scheduler,
        "feature_extractor": CLIPImageProcessor(**cfg["feature_extractor"]),
    }


def build(arch: str, folder: Path | str, *, seed: int = 0) -> Path:
    """Writes a ``StableDiffusionPipeline`` folder of ``arch`` ("sd14" or "sd21") with random
    weights (fixed ``seed``), plus ``realarch.json`` (arch, seed, versions, parameter counts)."""
    from diffusers import StableDiffusionPipeline

    from gate.pipeline import quiet_hub_progress
    from gate.provenance import library_versions

    quiet_hub_progress()
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder}: not empty; build() writes into a new folder")
    parts = components(arch, seed=seed)
    tok_dir = write_tokenizer(folder / "tokenizer", configs(arch)["tokenizer"])
    pipe = StableDiffusionPipeline(
        **parts, tokenizer=load_tokenizer(tok_dir), safety_checker=None, requires_safety_checker=False
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    record = {
        "arch": arch,
        "seed": seed,
        "build_format": BUILD_FORMAT,
        "configs_sha256": configs_hash(arch),
        "libraries": library_versions(),
        "parameters": {c: _count(parts[c]) for c in ("unet", "vae", "text_encoder")},
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def configs_hash(arch: str) -> str:
    return hashlib.sha256(json.dumps(ARCHS[arch], sort_keys=True).encode()).hexdigest()


def cache_key(arch: str, seed: int = 0) -> str:
    """Short hash of what decides the built folder: the configs, the seed, the build format and the
    versions of the libraries that initialise and save the weights."""
    from importlib.metadata import version

    what = {"configs": configs_hash(arch), "seed": seed, "format": BUILD_FORMAT,
            "versions": {lib: version(lib) for lib in _KEY_LIBRARIES}}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def ensure(arch: str, cache_dir: Path | str, *, seed: int = 0) -> Path:
    """``cache_dir/<arch>-<key>/``, built once (atomically) and reused afterwards."""
    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r}: one of {', '.join(ARCHS)}")
    target = Path(cache_dir) / f"{arch}-{cache_key(arch, seed)}"
    return made(target, lambda tmp: build(arch, tmp, seed=seed))


def made(target: Path | str, make: Callable[[Path], Any]) -> Path:
    """``target`` (a file or a folder), made by ``make(tmp)`` into a temporary sibling and then
    renamed, so that a reader never sees half of it; reused when it exists already. Two processes
    racing to make it both succeed: the second rename loses and its copy is dropped."""
    target = Path(target)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        make(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the maker wrote nothing")
        try:
            os.rename(tmp, target)  # a folder onto an existing folder fails: someone else made it
        except OSError:
            if not target.exists():
                raise
    finally:
        _remove(tmp)
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
