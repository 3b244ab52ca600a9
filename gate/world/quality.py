"""One entry point for the world's quality figures (used by ``gate world eval`` and the build)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gate.pipeline import load_pipeline
from gate.world import models as M

# acceptance thresholds from the foundation issue
TARGETS = {"shape": 0.95, "color": 0.95, "other_kinds": 0.90, "sd_fidelity": 0.85}
# generated images per concept for SD fidelity: at 32, 27/32 against 28/32 decided pass or fail
N_PER_CONCEPT = 64


def measure(
    world: Path | str,
    *,
    n_clip: int = 1000,
    n_per_concept: int | None = None,
    steps: int = M.DEFAULT_STEPS,
    guidance: float = M.DEFAULT_GUIDANCE,
    seed: int | None = None,
) -> dict[str, Any]:
    from gate.world.clip import WorldCLIP
    from gate.world.evaluate import EVAL_SEED, clip_accuracy, sd_fidelity

    world = Path(world)
    seed = EVAL_SEED if seed is None else seed
    n_per_concept = N_PER_CONCEPT if n_per_concept is None else n_per_concept
    clip = WorldCLIP(world / "clip")
    acc = clip_accuracy(clip, n=n_clip, seed=seed)
    pipe = load_pipeline(world / "sd")
    fid, ips = sd_fidelity(pipe, clip, n_per_concept=n_per_concept, seed=seed, steps=steps, guidance=guidance)
    others = [v for k, v in acc.items() if k not in ("shape", "color")]
    passed = (
        acc["shape"] >= TARGETS["shape"]
        and acc["color"] >= TARGETS["color"]
        and all(v >= TARGETS["other_kinds"] for v in others)
        and all(v >= TARGETS["sd_fidelity"] for v in fid.values())
    )
    return {
        "clip_accuracy": acc,
        "sd_fidelity": fid,
        "images_per_second": ips,
        "settings": {
            "n_clip_images": n_clip,
            "n_per_concept": n_per_concept,
            "steps": steps,
            "guidance": guidance,
            "sampler": "DDIM",
            "seed": seed,
        },
        "targets": TARGETS,
        "meets_targets": passed,
    }
