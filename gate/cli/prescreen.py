"""``gate prescreen``: the weight-space estimate, without images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gate.errors import BadInput


def cmd_prescreen(args: argparse.Namespace) -> int:
    from gate.prescreen import data_overlap, weight_prescreen

    prompts = list(args.concept or [])
    if args.policy:
        from gate.policy import load_policy

        pol = load_policy(args.policy)
        for c in pol.concepts:
            prompts += list(c.prompts)
    if not prompts:
        raise BadInput("give the erased concept's prompts: --concept TEXT (repeatable) or --policy POLICY")
    if args.data:
        res = data_overlap(args.checkpoint, Path(args.data), prompts)
    else:
        if not (args.original and args.update):
            raise BadInput("gate prescreen needs --original and --update (or --data for a proposed dataset)")
        res = weight_prescreen(args.original, args.checkpoint, args.update, prompts, lora_scale=args.lora_scale)
    print(json.dumps(res, indent=2))
    return 0


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
    ps.set_defaults(func=cmd_prescreen)
