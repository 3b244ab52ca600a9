"""A check's image generation: one batch, with ``batch_size: auto`` halving on out-of-memory,
and an attack probe's sampling where a job has one (``gate.runner.Check`` calls these)."""

from __future__ import annotations

import time

from gate.check_parts import free_device_cache
from gate.errors import OutOfMemory, is_out_of_memory


def generate_batch(check, pipe, prompts: list[str], seeds: list[int], side: str, attack: tuple = ()):
    """One batch; with ``batch_size: auto`` an out-of-memory error halves the batch and the
    same images are made again in smaller batches (the halving is kept for the rest)."""
    try:
        return generate_images(check, pipe, prompts, seeds, attack)
    except OutOfMemory:
        auto = check.policy.sampler.batch_size == "auto"
        if not auto or len(prompts) == 1:
            raise
    free_device_cache(check.opts.device)
    half = max(1, len(prompts) // 2)
    check.batch_halvings.append({"side": side, "from": len(prompts), "to": half})
    check.batch_size = half
    out = []
    for i in range(0, len(prompts), half):
        out += generate_batch(check, pipe, prompts[i : i + half], seeds[i : i + half], side, attack)
    return out


def generate_images(check, pipe, prompts: list[str], seeds: list[int], attack: tuple = ()):
    import contextlib

    from gate.generate import generate

    s = check.policy.sampler
    t0 = time.perf_counter()
    if attack:
        from gate.attacks.noise import attack_sampling

        sampling = attack_sampling(pipe, attack)
    else:
        sampling = contextlib.nullcontext({})
    try:
        with sampling as extra:
            images = generate(
                pipe, prompts, seeds, steps=s.steps, guidance=s.guidance, batch_size=len(prompts),
                height=s.height, width=s.width, negative_prompt=s.negative_prompt, pipe_kwargs=extra,
            )  # fmt: skip
    except (RuntimeError, MemoryError) as e:
        if is_out_of_memory(e):
            raise OutOfMemory("generating images", check.opts.device, f"batch of {len(prompts)}") from None
        raise
    check.timings["generate"] += time.perf_counter() - t0
    check.timings["images"] += len(images)
    return images
