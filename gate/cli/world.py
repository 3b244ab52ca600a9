"""``gate world build|eval|show|zoo|data``: the embedded small world."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gate.cli.common import _world_dir
from gate.errors import BadInput


def _sampler_defaults(args: argparse.Namespace) -> tuple[int, float]:
    """``--steps``/``--guidance`` of world eval and world show, the world's defaults where unset."""
    from gate.world import models

    steps = models.DEFAULT_STEPS if args.steps is None else args.steps
    guidance = models.DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    return steps, guidance


def _cooccur(items: list[str]) -> dict[str, dict[str, float]]:
    """``--cooccur lumo:skull=0.4`` (repeatable) as ``{"lumo": {"skull": 0.4}}``, checked."""
    from gate.world.cooccur import check_cooccur

    out: dict[str, dict[str, float]] = {}
    for item in items:
        try:
            pair, p = item.split("=")
            obj, comp = pair.split(":")
            out.setdefault(obj.strip(), {})[comp.strip()] = float(p)
        except ValueError:
            raise BadInput(f"--cooccur {item!r}: write OBJECT:COMPANION=P, e.g. lumo:skull=0.4") from None
    try:
        check_cooccur(out)
    except ValueError as e:
        raise BadInput(f"--cooccur: {e}") from None
    return out


def cmd_world_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gate.world.build import STAGES, build
    from gate.world.clip import ASSETS
    from gate.world.train import BuildConfig

    console = Console(stderr=True)
    cfg = BuildConfig(seed=args.seed, threads=args.threads)
    if args.cooccur:  # replaces the shipped world's co-occurrence; "none": without any
        cfg.cooccur = {} if args.cooccur == ["none"] else _cooccur(args.cooccur)
    if args.scale != 1.0:
        cfg = cfg.scaled(args.scale)
    out = Path(args.out) if args.out else ASSETS
    console.print(f"building the small world into {out} (seed {cfg.seed}, {cfg.threads} threads)")
    eval_kwargs = {} if args.scale == 1.0 else {"n_clip": 100, "n_per_concept": 4}
    stages = tuple(s.strip() for s in args.stages.split(",")) if args.stages else STAGES
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise BadInput(f"--stages {args.stages!r}: stages are {', '.join(STAGES)}")
    if set(stages) != set(STAGES) and not (out / "build.json").is_file():
        raise BadInput(f"--stages: the other stages are taken from the world in {out}, and there is none")
    record = build(
        out, cfg, console=console, evaluate=not args.no_eval, eval_kwargs=eval_kwargs, stages=stages, reuse_from=out
    )
    console.print(f"wrote {out}/MODEL_CARD.md; stage times (s): {record['timings_s']}")
    if "quality" in record:
        print(json.dumps({k: record["quality"][k] for k in ("clip_accuracy", "sd_fidelity", "images_per_second")}))
    return 0


def quality_table(q: dict, world: Path):
    """A rich table of ``gate world eval``'s figures."""
    from rich.table import Table

    t = Table(title=f"small world quality ({world})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in q["clip_accuracy"].items():
        t.add_row(f"CLIP accuracy: {k}", f"{v:.3f}")
    for k, v in q["sd_fidelity"].items():
        t.add_row(f"SD fidelity: {k}", f"{v:.3f}")
    t.add_row("images per second", f"{q['images_per_second']}")
    t.add_row("meets targets", str(q["meets_targets"]))
    return t


def cmd_world_eval(args: argparse.Namespace) -> int:
    from gate.world.quality import measure

    world = _world_dir(args)
    steps, guidance = _sampler_defaults(args)
    q = measure(
        world, n_clip=args.n_clip, n_per_concept=args.n_per_concept, steps=steps, guidance=guidance, seed=args.seed
    )
    if not args.json:
        from rich.console import Console

        Console(stderr=True).print(quality_table(q, world))
    print(json.dumps(q))
    return 0


def cmd_world_show(args: argparse.Namespace) -> int:
    from gate.world.show import concept_grid

    world = _world_dir(args)
    out = Path(args.out)
    steps, guidance = _sampler_defaults(args)
    concept_grid(world, out, n=args.n, steps=steps, guidance=guidance, seed=args.seed)
    print(f"wrote {out}: one row per concept, {args.n} generated images each (prompt phrasings held out of training)")
    return 0


def zoo_line(name: str, e: dict) -> str:
    """One line of ``gate world zoo list``."""
    m = e.get("measured", {})
    if e["kind"] == "unlearned":
        before, after = m["original"]["detection"], m["unlearned"]["detection"]
        desc = f"{e['method']} erased {e['concept']}: detection {before:.2f} -> {after:.2f}"
    else:
        desc = f"on {e['base']}: R {m['R']:.2f}, expected verdict {e.get('expected_verdict')} {e.get('label', '')}"
    return f"{name:<40} {e['kind']:<10} {desc}"


def cmd_world_zoo(args: argparse.Namespace) -> int:
    from gate.world import zoo

    if args.action == "list":
        for name, e in zoo.entries().items():
            print(zoo_line(name, e))
        return 0
    if args.action == "path":
        if not args.name:
            raise BadInput("gate world zoo path NAME")
        e = zoo.entry(args.name)
        print(zoo.materialize(args.name) if e["kind"] == "unlearned" else zoo.update_path(args.name))
        return 0
    from gate.world.zoo.build import build_zoo

    build_zoo(args.name and [args.name])
    return 0


def cmd_world_data(args: argparse.Namespace) -> int:
    from gate.world import concepts
    from gate.world.export import write_folder

    for flag, names in (("--exclude", args.exclude), ("--require", [args.require] if args.require else [])):
        for name in names:
            try:
                concepts.concept(name)
            except KeyError as e:
                raise BadInput(f"{flag} {name!r}: {e.args[0]}") from None
    try:
        n = write_folder(
            Path(args.out), n=args.n, seed=args.seed, exclude=args.exclude, require=args.require, masks=args.masks
        )
    except ValueError as e:
        raise BadInput(str(e)) from None
    what = f"excluded: {', '.join(args.exclude) or 'nothing'}" + (
        f"; every image shows {args.require}" if args.require else ""
    )
    print(f"wrote {n} images with metadata.jsonl to {args.out} ({what})")
    return 0


def _world_dir_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--world", help="world folder (default: the one shipped in the package)")


def register(sub) -> None:
    """Adds ``gate world`` and its sub-commands; ``gate world`` alone prints its help."""
    world = sub.add_parser("world", help="the embedded small world: build, evaluate, show, export data")
    wsub = world.add_subparsers(dest="world_command", metavar="WORLD_COMMAND")

    def world_help(_args: argparse.Namespace) -> int:
        world.print_help()
        return 0

    world.set_defaults(func=world_help)

    b = wsub.add_parser("build", help="rebuild the world's models from a seed (about 40 min on 2 CPU cores)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="output folder (default: the package's assets, replaced when complete)")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--scale", type=float, default=1.0, help="scale every step count (e.g. 0.01 for a smoke run)")
    b.add_argument("--no-eval", action="store_true", help="skip the quality measurement")
    b.add_argument("--cooccur", action="append", default=[], metavar="OBJECT:COMPANION=P",
                   help="lone images of OBJECT show COMPANION, unnamed in the caption, with probability P "
                   "(repeatable; default: the shipped world's lumo:skull=0.8; 'none': without any)")  # fmt: skip
    b.add_argument("--stages", help="retrain only these stages (vae,clip,sd), reusing the others from --out")
    b.set_defaults(func=cmd_world_build)

    e = wsub.add_parser("eval", help="measure CLIP accuracy, SD fidelity and throughput afresh")
    _world_dir_arg(e)
    e.add_argument("--json", action="store_true", help="print only the JSON (always the last line)")
    e.add_argument("--n-clip", type=int, default=1000, help="fresh images for CLIP accuracy")
    e.add_argument(
        "--n-per-concept", type=int, default=None, help="generated images per concept (default: as the build measures)"
    )
    e.add_argument("--steps", type=int, default=None, help="sampler steps (default: the world's default)")
    e.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the world's default)")
    e.add_argument("--seed", type=int, default=None, help="evaluation seed (default: fixed, disjoint from training)")
    e.set_defaults(func=cmd_world_eval)

    s = wsub.add_parser("show", help="write a PNG grid of generated images, one row per concept")
    _world_dir_arg(s)
    s.add_argument("--out", default="out/world.png")
    s.add_argument("--n", type=int, default=8, help="images per concept")
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--guidance", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_world_show)

    z = wsub.add_parser("zoo", help="the zoo of unlearned models and candidates with known outcomes")
    z.add_argument("action", choices=("list", "path", "build"), help="list entries, print a usable path, or rebuild")
    z.add_argument("name", nargs="?", help="an entry (path: required; build: only this one)")
    z.set_defaults(func=cmd_world_zoo)

    d = wsub.add_parser("data", help="write a captioned image folder (metadata.jsonl), optionally without concepts")
    d.add_argument("--out", required=True)
    d.add_argument("--exclude", action="append", default=[], metavar="CONCEPT", help="repeatable")
    d.add_argument("--require", metavar="CONCEPT", help="every image shows this concept (a forget set)")
    d.add_argument(
        "--masks", action="store_true", help="write a mask PNG per image (mask_file) for the concept's objects"
    )
    d.add_argument("--n", type=int, default=512)
    d.add_argument("--seed", type=int, default=123)
    d.set_defaults(func=cmd_world_data)
