"""What every unlearning method shares: the request, image sets, presets, and the ``erase`` driver.

A method is a class with a typed config (a dataclass whose defaults follow the original
method), a ``small-world`` preset (scaled down for the embedded world on a CPU), and
``run(pipe, request, config, progress)`` which edits ``pipe`` in place. ``erase`` loads the
checkpoint, prepares image sets when the method needs them, runs the method, saves a
diffusers folder and writes the JSON record next to it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from gate import provenance
from gate.errors import BadInput
from gate.unlearn.overrides import parse_override

Tick = Callable[[int, dict[str, float]], None]
ProgressFactory = Callable[[str, int], Tick]


def no_progress(name: str, total: int) -> Tick:
    return lambda step, logs: None


@dataclass
class EraseRequest:
    """What to erase. ``concepts``: the erased concept's prompts (the first is its name; the
    rest are paraphrases erased with it). ``preserve``: concepts whose fidelity must be kept."""

    concepts: list[str]
    preserve: list[str] = field(default_factory=list)
    forget_data: Path | None = None
    retain_data: Path | None = None
    seed: int = 0


@dataclass
class ImageSet:
    """Clean latents and their prompts (a forget set or a retain set)."""

    latents: torch.Tensor  # (N, C, h, w), scaled by the VAE's scaling factor
    prompts: list[str]
    masks: torch.Tensor | None = None  # (N, H, W) in [0, 1], where the concept is (MACE)
    source: str = "generated"

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        return self.latents[idx], [self.prompts[int(i)] for i in idx]

    def __len__(self) -> int:
        return len(self.prompts)


class Method:
    """Base class of the unlearning methods."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    needs_images: ClassVar[bool] = False
    uses_masks: ClassVar[bool] = False

    def presets(self) -> dict[str, Any]:
        """``original`` (the paper's defaults) and ``small-world`` (documented scale-down)."""
        return {"original": self.config_cls()}

    def config(self, preset: str, overrides: dict[str, Any] | None = None) -> Any:
        presets = self.presets()
        if preset not in presets:
            raise BadInput(f"--preset {preset!r} is not one of {', '.join(presets)} for {self.name}")
        cfg = presets[preset]
        if overrides:
            names = {f.name: f for f in dataclasses.fields(cfg)}
            for k, v in overrides.items():
                if k not in names:
                    raise BadInput(f"--set {k}: {self.name} has no setting {k!r} (settings: {', '.join(names)})")
                cfg = dataclasses.replace(cfg, **{k: parse_override(k, v, getattr(cfg, k))})
        return cfg

    def run(
        self, pipe, request: EraseRequest, cfg: Any, data: dict[str, ImageSet], progress: ProgressFactory
    ) -> dict[str, Any]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# image sets


def load_image_folder(pipe, folder: Path, *, prompt_override: str | None = None, limit: int | None = None) -> ImageSet:
    """A folder with ``metadata.jsonl`` (``file_name``, ``text``), as in the diffusers training
    examples. ``mask_file`` entries, when present, give where the concept is."""
    import numpy as np
    from PIL import Image

    from gate.sd import encode_images

    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise BadInput(f"{folder}: no metadata.jsonl (one JSON object a line with file_name and text)")
    rows = []
    for i, line in enumerate(meta.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((row["file_name"], row["text"], row.get("mask_file")))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInput(f"{meta}:{i + 1}: each line needs file_name and text ({e})") from None
    if limit:
        rows = rows[:limit]
    if not rows:
        raise BadInput(f"{meta}: no images listed")
    from gate.sd import latent_size, vae_factor

    size = latent_size(pipe) * vae_factor(pipe)
    images, masks, prompts = [], [], []
    for name, text, mask_name in rows:
        path = folder / name
        if not path.is_file():
            raise BadInput(f"{meta}: {name} is listed but missing")
        im = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        images.append(np.asarray(im))
        prompts.append(prompt_override or text)
        if mask_name:
            m = Image.open(folder / mask_name).convert("L").resize((size, size), Image.Resampling.NEAREST)
            masks.append(np.asarray(m) / 255.0)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    latents = torch.cat([encode_images(pipe, x[i : i + 64]) for i in range(0, len(x), 64)])
    mask_t = torch.from_numpy(np.stack(masks)).float() if len(masks) == len(rows) else None
    return ImageSet(latents, prompts, mask_t, source=str(folder))


def generate_image_set(pipe, prompts: Sequence[str], n: int, *, seed: int, steps: int, guidance: float) -> ImageSet:
    """Images made by the model itself (the methods' default when no set is given): ``n`` latents
    for the prompts in turn, with seeds ``gate.seeds.image_set_seeds(seed, n)``."""
    from gate.generate import generate
    from gate.sd import latent_size, vae_factor
    from gate.seeds import image_set_seeds

    chosen = [prompts[i % len(prompts)] for i in range(n)]
    px = latent_size(pipe) * vae_factor(pipe) if getattr(pipe, "gate_resolution", None) else None
    latents = generate(
        pipe, chosen, image_set_seeds(seed, n), steps=steps, guidance=guidance, batch_size=16, output_type="latent",
        height=px, width=px,
    )  # fmt: skip
    return ImageSet(latents, chosen, None, source="generated")


def default_sampler(pipe) -> tuple[int, float]:
    """(steps, guidance) used to generate image sets: SD's usual 50 / 7.5 for real models,
    the small world's 20 / 3 for it (small models want low guidance)."""
    if is_small_world(pipe):
        from gate.world.models import DEFAULT_GUIDANCE, DEFAULT_STEPS

        return DEFAULT_STEPS, DEFAULT_GUIDANCE
    return 50, 7.5


def is_small_world(pipe) -> bool:
    """The small world's SD (or a model derived from it): decided once, in gate.world.demo."""
    from gate.world.demo import is_world_pipe

    return is_world_pipe(pipe)


# ---------------------------------------------------------------------------------------
# the driver


def count_changed(before: Any, module: torch.nn.Module) -> dict[str, int]:
    changed_tensors, changed_values = 0, 0
    for name, p in module.state_dict().items():
        p = p.detach().cpu()
        if name in before and not torch.equal(before[name].to(p.dtype), p):
            changed_tensors += 1
            changed_values += int((before[name] != p).sum())
    return {"tensors": changed_tensors, "values": changed_values}


def erase(
    checkpoint: Path,
    out: Path,
    method_name: str,
    request: EraseRequest,
    *,
    preset: str = "auto",
    overrides: dict[str, Any] | None = None,
    progress: ProgressFactory = no_progress,
    n_forget: int | None = None,
    n_retain: int | None = None,
    compute=None,
    image_steps: int | None = None,
    resolution: int | None = None,
) -> dict[str, Any]:
    """Erases ``request``'s concept from ``checkpoint`` with ``method_name`` and saves the result
    in ``out`` with ``erase.json``. ``compute`` (``gate.devices.Compute``): device, precision
    (autocast around the method's forward passes, fp32 master weights) and gradient checkpointing;
    ``image_steps``: sampler steps of the generated forget/retain images (default: SD's 50, the
    small world's 20); ``resolution``: pixels the method trains and makes its image sets at
    (default: the model's own, 512 for SD v1.4)."""
    from gate.devices import Compute
    from gate.pipeline import load_pipeline
    from gate.provenance import library_versions
    from gate.sd import set_resolution
    from gate.unlearn import get_method

    method = get_method(method_name)
    if not request.concepts or not all(c.strip() for c in request.concepts):
        raise BadInput("--concept: give the concept to erase (a non-empty text)")
    compute = compute or Compute()
    if compute.precision == "fp16":
        raise BadInput(
            "--precision fp16: the unlearning methods' loops run no gradient scaler; use bf16 (or fp32) for gate erase"
        )
    t0 = time.perf_counter()
    pipe = load_pipeline(checkpoint, device=compute.device)
    compute.prepare(pipe.unet)
    set_resolution(pipe, resolution)
    if preset == "auto":
        preset = "small-world" if is_small_world(pipe) else "original"
    cfg = method.config(preset, overrides)
    torch.manual_seed(request.seed)
    data: dict[str, ImageSet] = {}
    if method.needs_images:
        steps, guidance = default_sampler(pipe)
        steps = image_steps or steps
        nf: int = n_forget if n_forget is not None else getattr(cfg, "n_forget", 32)
        nr: int = n_retain if n_retain is not None else getattr(cfg, "n_retain", 64)
        if request.forget_data:
            data["forget"] = load_image_folder(pipe, request.forget_data, prompt_override=request.concepts[0])
        else:
            data["forget"] = generate_image_set(
                pipe, request.concepts, nf, seed=request.seed, steps=steps, guidance=guidance
            )
        if request.retain_data:
            data["retain"] = load_image_folder(pipe, request.retain_data)
        else:
            retain_prompts = request.preserve or [""]
            data["retain"] = generate_image_set(
                pipe, retain_prompts, nr, seed=request.seed + 1, steps=steps, guidance=guidance
            )
    # the weights before, read back from the checkpoint's own files one tensor at a time when
    # they are there (no second UNet in memory at SD size); else a CPU copy
    from gate.inplace import component_files, component_state

    try:
        component_files(Path(checkpoint), "unet")
        before: Any = component_state(Path(checkpoint), "unet")
    except BadInput:
        before = {k: v.detach().to("cpu", copy=True) for k, v in pipe.unet.state_dict().items()}
    with compute.autocast():
        stats = method.run(pipe, request, cfg, data, progress)
    if compute.gradient_checkpointing and hasattr(pipe.unet, "disable_gradient_checkpointing"):
        pipe.unet.disable_gradient_checkpointing()  # saved configs stay as they were
    changed = count_changed(before, pipe.unet)
    for name, p in pipe.unet.named_parameters():
        if not torch.isfinite(p).all():
            raise BadInput(f"{method.name} produced non-finite weights in {name}; lower the learning rate")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    record = {
        "kind": "unlearned-model",
        "method": method.name,
        "preset": preset,
        "config": dataclasses.asdict(cfg),
        "concepts": request.concepts,
        "preserve": request.preserve,
        "seed": request.seed,
        "compute": compute.as_record(),
        "resolution": resolution,
        "data": {k: {"source": v.source, "n": len(v)} for k, v in data.items()},
        **({"image_steps": steps} if method.needs_images else {}),
        "inputs": {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": provenance.hash_tree(Path(checkpoint), skip=("erase.json",)),
            **({"forget_data_sha256": provenance.hash_tree(request.forget_data)} if request.forget_data else {}),
            **({"retain_data_sha256": provenance.hash_tree(request.retain_data)} if request.retain_data else {}),
        },
        "parameters_changed": changed,
        "stats": stats,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "libraries": library_versions(),
    }
    record["outputs"] = {"model_sha256": provenance.hash_tree(out, skip=("erase.json",))}
    provenance.write_json_atomic(out / "erase.json", record)
    return record
