"""One way to generate images with a diffusers pipeline, shared by the gate's checks, the small
world's evaluation and the unlearning methods' image sets.

Each image has its own ``torch.Generator("cpu")`` seeded with its seed, so an image depends on
its prompt and seed only, not on the batch it was made in or the order of the others (up to the
rounding of batched matrix products: latents may differ in their last bits between batch sizes;
keep a caller's batch size where its figures were measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OUTPUT_TYPES = ("pil", "latent")


def generate(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    guidance: float,
    batch_size: int = 64,
    output_type: str = "pil",
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    pipe_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Images for ``prompts``, one per (prompt, seed): a list of PIL images for ``output_type``
    "pil", a tensor of the stacked latents (N, C, h, w) for "latent". ``height``, ``width`` and
    ``negative_prompt`` are passed to the pipeline only when given (its defaults otherwise);
    ``pipe_kwargs`` go to the pipeline as they are (an attack probe's ``eta``)."""
    import torch

    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type {output_type!r}: one of {', '.join(OUTPUT_TYPES)}")
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: at least 1")
    kwargs: dict[str, Any] = {"num_inference_steps": steps, "guidance_scale": guidance, **(pipe_kwargs or {})}
    if height:
        kwargs["height"] = height
    if width:
        kwargs["width"] = width
    chunks: list[Any] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            batch = list(prompts[i : i + batch_size])
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch_size]]
            extra = {"negative_prompt": [negative_prompt] * len(batch)} if negative_prompt is not None else {}
            res = pipe(batch, generator=gens, output_type=output_type, **kwargs, **extra)
            chunks.append(res.images)
    if output_type == "latent":
        return torch.cat(chunks) if chunks else torch.empty(0)
    return [im for chunk in chunks for im in chunk]
