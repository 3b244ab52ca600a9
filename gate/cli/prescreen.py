"""``gate prescreen``: the weight-space estimate, without images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gate.errors import BadInput


def cmd_prescreen(args: argparse.Namespace) -> int:
    import dataclasses

    from gate.devices import check_device
    from gate.prescreen import VALIDATED_BUDGET
    from gate.prescreen_command import data_overlap, weight_prescreen

    device = check_device(args.device)
    prompts = list(args.concept or [])
    budget = VALIDATED_BUDGET
    if args.policy:
        from gate.policy import load_policy

        pol = load_policy(args.policy)
        budget = pol.prescreen
        for c in pol.concepts:
            prompts += list(c.prompts)
    if args.latents is not None:
        budget = dataclasses.replace(budget, latents=args.latents)
    if args.timesteps:
        budget = dataclasses.replace(budget, timesteps=tuple(_ints(args.timesteps, "--timesteps")))
    if args.latent_size is not None:
        budget = dataclasses.replace(budget, latent_size=args.latent_size or None)
    if not prompts:
        raise BadInput("give the erased concept's prompts: --concept TEXT (repeatable) or --policy POLICY")
    if args.data:
        res = data_overlap(args.checkpoint, Path(args.data), prompts, device=device)
    else:
        if not (args.original and args.update):
            raise BadInput("gate prescreen needs --original and --update (or --data for a proposed dataset)")
        res = weight_prescreen(
            args.original, args.checkpoint, args.update, prompts, lora_scale=args.lora_scale, config=args.config,
            allow_pickle=args.allow_pickle, device=device, dtype=_dtype(args.dtype), budget=budget,
        )  # fmt: skip
    print(json.dumps(res, indent=2))
    return 0


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"{flag} {text!r}: comma-separated whole numbers, e.g. 200,500,800") from None


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def register(sub) -> None:
    """Adds ``gate prescreen``."""
    ps = sub.add_parser("prescreen", help="estimate, without images, how much of the erasure a candidate undoes")
    ps.add_argument("--original", help="the model before unlearning")
    ps.add_argument("--checkpoint", required=True, help="the unlearned model")
    ps.add_argument("--update", help="the candidate (as for gate check)")
    ps.add_argument("--data", help="instead of a candidate: a proposed fine-tuning folder (metadata.jsonl)")
    ps.add_argument("--concept", action="append", help="a prompt of the erased concept (repeatable)")
    ps.add_argument("--policy", help="take the concepts' prompts from this policy")
    ps.add_argument("--lora-scale", type=float, default=1.0)
    ps.add_argument("--config", help="a diffusers folder for a single-file checkpoint's architecture")
    ps.add_argument("--allow-pickle", action="store_true", help="read pickled weights with weights_only=True")
    ps.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    ps.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    ps.add_argument("--latents", type=int, help="probe latents per prompt (default: the policy's, else 8)")
    ps.add_argument("--timesteps", help="probe timesteps, e.g. 200,500,800 (default: the policy's)")
    ps.add_argument("--latent-size", type=int, help="probe latent side (0: the UNet's own; default: the policy's)")
    ps.set_defaults(func=cmd_prescreen)
