"""How fast the gate reaches a verdict, side by side with a plain loop.

Prints, in one run, on the small world's demo (unlearned model + candidates from the zoo):

* cold: time to verdict with an empty cache (baseline and candidate generated);
* warm: time to verdict for a second candidate, the baseline coming from the cache;
* the share of the cold run's wall time spent inside model forward passes (UNet, VAE
  decoder, text encoder, detector image tower), measured with forward hooks;
* images per second of the cold run;
* the same job done by a plain loop: one image at a time, no cache, detector per image;
* the ratios.

    python benchmarks/gate_speed.py [--policy policies/small-world.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from gate.judge import verdict as decide_verdict
from gate.probes import jobs_for
from gate.runner import Check, CheckOptions
from gate.world import demo as demo_policy


class ForwardTimer:
    """Sums wall time spent inside the forward of the given modules (outermost calls only)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._depth = 0
        self._t0 = 0.0

    def attach(self, module: torch.nn.Module) -> None:
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *args) -> None:
        if self._depth == 0:
            self._t0 = time.perf_counter()
        self._depth += 1

    def _post(self, *args) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.total += time.perf_counter() - self._t0


def timed_check(opts: CheckOptions, timer: ForwardTimer | None = None) -> tuple[float, Check, str]:
    t0 = time.perf_counter()
    check = Check(opts)
    check.load()
    if timer is not None:
        for m in (check.pipe.unet, check.pipe.vae.decoder, check.pipe.text_encoder):
            timer.attach(m)
        for c in check.concepts:
            timer.attach(check.detector(c.detector).zs.model.visual)
    results = check.run()
    verdict = decide_verdict([r for res in results for r in res.rules], check.policy.inconclusive == "fail")
    return time.perf_counter() - t0, check, verdict


def naive_loop(opts: CheckOptions) -> tuple[float, int]:
    """One image at a time, no cache: what a first script would do."""
    from gate.model import apply_update, load_checkpoint

    t0 = time.perf_counter()
    check = Check(opts)
    n = 0
    for side in ("baseline", "candidate"):
        pipe, _ = load_checkpoint(opts.checkpoint)
        pipe.set_progress_bar_config(disable=True)
        if side == "candidate":
            apply_update(pipe, opts.update)
        for c in check.concepts:
            det = check.detector(c.detector)
            for j in jobs_for(check.policy, c):
                g = torch.Generator("cpu").manual_seed(j.seed)
                s = check.policy.sampler
                im = pipe(j.prompt, num_inference_steps=s.steps, guidance_scale=s.guidance, generator=g).images[0]
                det.score([im], j.label)
                n += 1
    return time.perf_counter() - t0, n


def main() -> None:
    from gate.world import zoo

    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    demo = json.loads((zoo.ZOO / "demo.json").read_text())
    ckpt = str(zoo.materialize(demo["checkpoint"]))
    first, second = str(zoo.update_path(demo["update"])), str(zoo.update_path(demo["benign"]))
    with tempfile.TemporaryDirectory() as cache:
        base = {"checkpoint": ckpt, "cache_dir": cache, "policy": args.policy or str(demo_policy.POLICY)}
        timer = ForwardTimer()
        cold_s, check, v1 = timed_check(CheckOptions(update=first, **base), timer)
        n_images = int(check.timings["images"])
        warm_s, check2, v2 = timed_check(CheckOptions(update=second, **base))
    naive_s, naive_n = naive_loop(
        CheckOptions(checkpoint=ckpt, update=first, cache_dir=None, policy=args.policy or str(demo_policy.POLICY))
    )
    rows = [
        ("cold time to verdict (s)", f"{cold_s:.1f}", f"verdict {v1}, {n_images} images generated"),
        ("warm time to verdict (s)", f"{warm_s:.1f}", f"verdict {v2}, second candidate, cache {check2.cache.stats()}"),
        (
            "forward-pass share of cold wall time",
            f"{timer.total / cold_s:.0%}",
            "UNet, VAE decoder, text encoder, detector",
        ),
        ("images per second (cold)", f"{n_images / cold_s:.2f}", "generation + scoring + overhead"),
        ("plain loop, one image at a time, no cache (s)", f"{naive_s:.1f}", f"{naive_n} images"),
        ("speed-up, cold vs plain loop", f"{naive_s / cold_s:.2f}x", ""),
        ("speed-up, warm vs plain loop", f"{naive_s / warm_s:.2f}x", ""),
        ("speed-up, warm vs cold", f"{cold_s / warm_s:.2f}x", ""),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>8}  {note}")
    Path("results").mkdir(exist_ok=True)
    Path("results/gate_speed.json").write_text(json.dumps({r[0]: r[1] for r in rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
