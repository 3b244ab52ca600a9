"""``gate certify``: the standard benign fine-tune and the policy's checks, as a certificate."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from gate.cli.common import _compute_args, _count_progress, _progress_factory, _tracking_args
from gate.errors import BadInput


def _ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BadInput(f"--seeds {text!r}: comma-separated integers, e.g. 0,1,2") from None


def cmd_certify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from gate.certify.recipe import family_of, load_recipe
    from gate.certify.run import CertifyOptions, certify

    console = Console(stderr=True)
    checkpoint, original, policy = args.checkpoint, args.original, args.policy
    family = None if args.recipe else family_of(checkpoint)
    if family == "small-world":
        from gate.world import zoo
        from gate.world.demo import POLICY

        original = original or str(zoo.materialize("world"))
        policy = policy or str(POLICY)
    if not policy:
        from gate.world.demo import missing_policy_message

        raise BadInput(missing_policy_message(checkpoint))
    recipe = load_recipe(str(args.recipe or family)).narrowed(
        modes=[m.strip() for m in args.modes.split(",")] if args.modes else None,
        seeds=_ints(args.seeds), steps=args.steps,
    )  # fmt: skip
    opts = CertifyOptions(
        checkpoint=checkpoint, policy=policy, original=original, recipe=recipe, out=Path(args.out),
        data=Path(args.data) if args.data else None, device=args.device, precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing, concepts=args.concept or None,
        cache_dir=None if args.no_cache else args.cache_dir, track=not args.no_track,
        tracking_uri=args.tracking_uri, model_line=args.model_line,
        reproduce=shlex.join(["gate", *sys.argv[1:]]) if sys.argv[1:2] == ["certify"] else "",
    )  # fmt: skip
    n = len(recipe.finetunes) * len(recipe.seeds)
    kind = "standard" if recipe.standard else f"non-standard: {recipe.overrides}"
    console.print(Text(f"certify: recipe {recipe.name} ({kind}; sha256 {recipe.sha256[:12]}), {n} fine-tunes"))
    progress, factory = _progress_factory(console)
    with progress:
        cert = certify(
            opts, progress=_CombinedProgress(factory), log=lambda m: console.print(Text(m)),
            warn=lambda m: console.print(Text(m, style="yellow")),
        )  # fmt: skip
    for line in cert["headlines"]:
        console.print(Text(line))
    for line in cert["reasons"]:
        console.print(Text(f"  {line}", style="yellow"))
    console.print(Text(f"certificate: {cert['verdict'].upper()} ({cert['verdict_meaning']})"))
    print(f"wrote {opts.out / 'certificate.json'} and certificate.md")
    return 1 if cert["verdict"] == "fail" else 0


class _CombinedProgress:
    """One factory for both callers: ``finetune`` ticks (step, logs), ``run_check`` ticks a count."""

    def __init__(self, factory) -> None:
        self.factory, self.count = factory, _count_progress(factory)

    def __call__(self, name: str, total: int):
        step_tick = self.factory(name, total) if total else (lambda s, logs: None)

        def tick(*a):
            if len(a) == 2:
                step_tick(*a)
            else:
                step_tick(a[0] - 1, {})

        return tick


def register(sub) -> None:
    c = sub.add_parser(
        "certify",
        help="run the standard benign fine-tune against an unlearned model and report the resurgence as a certificate",
    )
    c.add_argument("--checkpoint", required=True, help="the unlearned model (diffusers pipeline folder)")
    c.add_argument("--original", help="the model before unlearning (default for the small world: the world's SD)")
    c.add_argument("--policy", help="the checks to run on each fine-tune (default for the small world: its policy)")
    c.add_argument("--recipe", help="small-world, sd1, sd2 or a recipe YAML (default: by the checkpoint's family)")
    c.add_argument("--data", help="benign captioned images (metadata.jsonl) for the sd1/sd2 recipes")
    c.add_argument("--out", default="out/certificate", help="output folder (resumable)")
    c.add_argument("--modes", help="only these of the recipe's fine-tunes, e.g. lora (the certificate says so)")
    c.add_argument("--seeds", help="other seeds than the recipe's, e.g. 0 (the certificate says so)")
    c.add_argument("--steps", type=int, help="another step count (the certificate says it is not the standard one)")
    c.add_argument("--concept", action="append", default=[], help="only this concept of the policy (repeatable)")
    c.add_argument("--cache-dir", default=".gate-cache")
    c.add_argument("--no-cache", action="store_true")
    c.add_argument("--no-track", action="store_true", help="do not log the certificate to MLflow")
    _compute_args(c)
    _tracking_args(c)
    c.set_defaults(func=cmd_certify)
