"""gate check on a GPU at SD v1.4's real architecture and sampler settings, against the UNet's
own throughput limit measured in the same run.

On a CUDA device: the real-architecture pipeline (random weights, ``gate.realarch``) in fp16, a
policy of one concept at SD v1.4's full sampler settings (512 px, 50 steps, CFG 7.5, batch 8),
the check's baseline images; then bare UNet forwards at the same batch and resolution
(CUDA-synchronised). Prints images per second, the share of wall time in UNet forwards, the
UNet-bound limit on images per second and the ratio of the two, and peak GPU memory; writes
``results/gpu/<label>.json``.

``--tiny`` runs the same measurement on the CPU at a tiny size (the small world's SD, 32 px,
4 steps) so that the script itself is tested without a GPU; its figures say nothing about GPUs.

    python benchmarks/gpu.py [--device cuda] [--images 64] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

POLICY = """version: 1
name: gpu-benchmark
seed: 11
sampler: {{steps: {steps}, guidance: 7.5, height: {px}, width: {px}, batch_size: {batch}, dtype: {dtype}}}
concepts:
  cat:
    prompts: {prompts}
    detector: {{type: fake}}
    samples_per_prompt: {spp}
    rules: {{max_presence_rate: 0.5}}
"""


class UNetTimer:
    """Wall time inside the UNet's forward, synchronised on CUDA so that it is the GPU's time."""

    def __init__(self, device: str) -> None:
        self.total = 0.0
        self.calls = 0
        self.cuda = device.startswith("cuda")
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def pre(self, *a) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def post(self, *a) -> None:
        self._sync()
        self.total += time.perf_counter() - self._t0
        self.calls += 1


def unet_limit(pipe, batch: int, px: int, steps: int, device: str, repeats: int) -> dict[str, float]:
    """Bare UNet forwards at the check's shapes (CFG doubles the batch): the images per second a
    sampler could reach if it did nothing but UNet forwards."""
    unet = pipe.unet
    lat = px // 8
    x = torch.randn(2 * batch, unet.config.in_channels, lat, lat, device=device, dtype=unet.dtype)
    c = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device, dtype=unet.dtype)
    t = torch.full((2 * batch,), 500, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        unet(x, t, c)  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            unet(x, t, c)
        sync()
    per = (time.perf_counter() - t0) / repeats
    return {"s_per_forward": per, "images_per_s_limit": batch / (per * steps)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--tiny", action="store_true", help="CPU, the small world's SD: tests the script, not a GPU")
    ap.add_argument("--cache", default=os.environ.get("GATE_REALARCH_CACHE", str(REPO / ".realarch-cache")))
    ap.add_argument("--out", default=str(REPO / "results" / "gpu"))
    ap.add_argument("--label")
    args = ap.parse_args()
    from gate.runner import Check, CheckOptions

    if args.tiny:
        from gate.world.clip import ASSETS

        ckpt, px, steps, batch, dtype, device = str(ASSETS / "sd"), 32, 4, 4, "float32", "cpu"
    else:
        if not args.device.startswith("cuda"):
            raise SystemExit("benchmarks/gpu.py measures a CUDA GPU: give --device cuda, or --tiny to test it on a CPU")
        from gate.realarch import ensure

        ckpt, px, steps, batch, dtype, device = str(ensure("sd14", args.cache)), 512, 50, 8, "float16", args.device
    n_prompts = 8
    spp = max(1, args.images // n_prompts)
    prompts = [f"a photo of a cat, view {i}" for i in range(n_prompts)]
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    policy = work / "policy.yaml"
    policy.write_text(POLICY.format(steps=steps, px=px, batch=batch, dtype=dtype, prompts=json.dumps(prompts), spp=spp))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    check = Check(CheckOptions(checkpoint=ckpt, policy=str(policy), device=device, cache_dir=None, track=False))
    t_load = time.perf_counter()
    check.load()
    t_load = time.perf_counter() - t_load
    timer = UNetTimer(device)
    check.pipe.unet.register_forward_pre_hook(timer.pre)
    check.pipe.unet.register_forward_hook(timer.post)
    from gate.probes import jobs_for

    c = check.concepts[0]
    jobs = jobs_for(check.policy, c)
    t0 = time.perf_counter()
    check.outcomes("baseline", {"checkpoint": "bench"}, check.pipe, c, jobs)
    wall = time.perf_counter() - t0
    n = len(jobs)
    unet_s, unet_calls = timer.total, timer.calls  # before the bare forwards below add to them
    limit = unet_limit(check.pipe, batch, px, steps, device, repeats=3 if args.tiny else 10)
    row = {
        "label": args.label or ("tiny-cpu" if args.tiny else f"sd14-{torch.cuda.get_device_name(device)}"),
        "device": device, "dtype": dtype, "px": px, "steps": steps, "batch": batch, "images": n,
        "load_s": round(t_load, 2), "wall_s": round(wall, 2), "images_per_s": n / wall,
        "unet_share_of_wall": unet_s / wall, "unet_calls": unet_calls, **limit,
        "ratio_to_unet_limit": (n / wall) / limit["images_per_s_limit"],
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.startswith("cuda") else None,
        "torch": torch.__version__, "attention": check.attention, "tiny": args.tiny,
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{row['label'].replace(' ', '_')}.json").write_text(json.dumps(row, indent=2) + "\n")
    print(f"{row['label']}: {n} images at {px} px, {steps} steps, batch {batch}, {dtype} on {device}")
    print(f"  images/s            {row['images_per_s']:.3f}")
    print(f"  UNet share of wall  {row['unet_share_of_wall']:.1%} ({unet_calls} forwards)")
    print(f"  UNet-bound limit    {row['images_per_s_limit']:.3f} images/s (bare forwards, same batch and size)")
    print(f"  ratio to the limit  {row['ratio_to_unet_limit']:.2f}")
    if row["peak_gpu_memory_gb"] is not None:
        print(f"  peak GPU memory     {row['peak_gpu_memory_gb']:.2f} GB")


if __name__ == "__main__":
    main()
