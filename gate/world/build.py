"""``gate world build``: rebuilds the small world's models from a seed and writes its model card.

Stages (each with a progress bar): render the training images, train the VAE, train the
concept CLIP, train the UNet and text encoder, save everything as safetensors in the real
formats, measure quality afresh, and write ``MODEL_CARD.md`` and ``build.json`` with the
settings, the data seed, the measured figures and the sha256 of every file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from gate.provenance import hash_file, library_versions
from gate.world import models as M
from gate.world.clip import CLIP_WEIGHTS, write_config
from gate.world.train import BuildConfig

SD_SUBDIR = "sd"
CLIP_SUBDIR = "clip"


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hash_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("MODEL_CARD.md", "build.json")
    }


def save_pipeline(folder: Path, vae, text_encoder, tokenizer, unet) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**M.scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def save_clip(folder: Path, model) -> None:
    from safetensors.torch import save_file

    write_config(folder)
    # fp16 on disk halves the size (the 49,408-token embedding dominates); open_clip casts on load
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / CLIP_WEIGHTS), metadata={"format": "pt"})


STAGES = ("vae", "clip", "sd")


def _reuse(world: Path, stage: str):
    """Loads a stage's trained model from an existing world folder, into a freshly constructed
    module (so nothing of the old folder, such as its path in ``_name_or_path``, leaks into the
    new one's configs)."""
    from gate.pipeline import load_pipeline

    if stage == "clip":
        from gate.world.clip import WorldCLIP

        return WorldCLIP(world / CLIP_SUBDIR).model
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    pipe = load_pipeline(world / SD_SUBDIR)
    if stage == "vae":
        vae = AutoencoderKL(**M.vae_config())
        vae.load_state_dict(pipe.vae.state_dict())
        vae.register_to_config(scaling_factor=pipe.vae.config.scaling_factor)
        return vae.eval()
    unet = UNet2DConditionModel(**M.unet_config())
    unet.load_state_dict(pipe.unet.state_dict())
    te = CLIPTextModel(CLIPTextConfig(**M.text_encoder_config()))
    te.load_state_dict(pipe.text_encoder.state_dict())
    return unet.eval(), te.eval()


def build(
    out: Path,
    cfg: BuildConfig,
    *,
    console=None,
    evaluate: bool = True,
    eval_kwargs: dict | None = None,
    stages: tuple[str, ...] = STAGES,
    reuse_from: Path | None = None,
) -> dict[str, Any]:
    """Builds the world into ``out``. With ``stages`` a subset of STAGES, the other stages'
    models are taken from ``reuse_from`` (stages are independent given the seed: each seeds its
    own generators), and their recorded timings are carried over from its build.json."""
    import numpy as np
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from gate.world import train as T
    from gate.world.vocab import make_tokenizer

    torch.set_num_threads(cfg.threads)
    out = Path(out)
    timings: dict[str, float] = {}
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[logs]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    ) as progress:  # fmt: skip
        live = progress.console.is_terminal

        def bar(name: str, total: int):
            task = progress.add_task(name, total=total, logs="")
            every = max(1, total // 20)

            def tick(step: int, logs: dict[str, float]) -> None:
                if not live and (step % every == 0 or step == total - 1):  # plain lines in logs and CI
                    text = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
                    progress.console.print(f"{name}: {step + 1}/{total} {text}", highlight=False)
                if step % 10 == 0 and logs:
                    progress.update(task, logs=" ".join(f"{k} {v:.4f}" for k, v in logs.items()))
                progress.update(task, completed=step + 1)

            return tick

        t0 = time.perf_counter()
        render = bar("render images", cfg.n_images)
        samples = []
        for i in range(cfg.n_images):
            samples.append(T.data.sample(cfg.seed, i, cooccur=cfg.cooccur or None))
            if i % 500 == 0 or i == cfg.n_images - 1:
                render(i, {})
        images = np.stack([s.image for s in samples])
        timings["render"] = time.perf_counter() - t0

        previous: dict[str, Any] = {}
        if set(stages) != set(STAGES):
            if reuse_from is None:
                raise ValueError("rebuilding only some stages needs reuse_from (an existing world)")
            previous = json.loads((Path(reuse_from) / "build.json").read_text())
        t0 = time.perf_counter()
        vae = T.train_vae(images, cfg, bar) if "vae" in stages else _reuse(Path(reuse_from or out), "vae")
        timings["vae"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        clip_model = (
            T.train_clip(samples, images, cfg, bar) if "clip" in stages else _reuse(Path(reuse_from or out), "clip")
        )
        timings["clip"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokenizer = make_tokenizer(M.TEXT_MAX_LENGTH)
        if "sd" in stages:
            latents = T.encode_latents(vae, images)
            unet, text_encoder = T.train_sd(samples, latents, tokenizer, cfg, bar)
        else:
            unet, text_encoder = _reuse(Path(reuse_from or out), "sd")
        timings["sd"] = time.perf_counter() - t0
        for stage in STAGES:
            if stage not in stages:
                timings[stage] = previous["timings_s"][stage]

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    # a fresh tokenizer: one that was called with padding stores that state in tokenizer.json
    save_pipeline(tmp / SD_SUBDIR, vae, text_encoder, make_tokenizer(M.TEXT_MAX_LENGTH), unet)
    save_clip(tmp / CLIP_SUBDIR, clip_model)
    record: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "data_seed": cfg.seed,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "stages_rebuilt": list(stages),
        "libraries": library_versions(),
        "parameters": {
            "unet": sum(p.numel() for p in unet.parameters()),
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "vae": sum(p.numel() for p in vae.parameters()),
            "clip": sum(p.numel() for p in clip_model.parameters()),
        },
    }
    if evaluate:
        from gate.world.quality import measure

        t0 = time.perf_counter()
        record["quality"] = measure(tmp, **(eval_kwargs or {}))
        timings["eval"] = time.perf_counter() - t0
        record["timings_s"]["eval"] = round(timings["eval"], 1)
    record["files"] = file_hashes(tmp)
    (tmp / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    from gate.world.card import write_card

    write_card(tmp, record)
    # replace the old world only once the new one is complete
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return record
