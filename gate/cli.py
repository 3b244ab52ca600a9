"""The ``gate`` command line: a thin layer over the library.

Nothing heavy is imported at start-up: ``gate --help`` must stay fast and must not import
torch. Each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gate import __version__
from gate.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, BadInput, GateError

Handler = Callable[[argparse.Namespace], int]


def _world_dir(args: argparse.Namespace) -> Path:
    from gate.world.clip import ASSETS

    world = Path(args.world) if args.world else ASSETS
    for sub in ("sd/model_index.json", "clip"):
        if not (world / sub).exists():
            raise BadInput(
                f"--world {world}: no small world there (missing {sub}); run `gate world build --out {world}`"
            )
    return world


# ---------------------------------------------------------------------------------------
# gate world ...


def cmd_world_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gate.world.build import STAGES, build
    from gate.world.clip import ASSETS
    from gate.world.train import BuildConfig

    console = Console(stderr=True)
    cfg = BuildConfig(seed=args.seed, threads=args.threads)
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


def cmd_world_eval(args: argparse.Namespace) -> int:
    from gate.world.quality import measure

    world = _world_dir(args)
    q = measure(
        world,
        n_clip=args.n_clip,
        n_per_concept=args.n_per_concept,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
    )
    if not args.json:
        from rich.console import Console
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
        Console(stderr=True).print(t)
    print(json.dumps(q))
    return 0


def cmd_world_show(args: argparse.Namespace) -> int:
    from gate.world.show import concept_grid

    world = _world_dir(args)
    out = Path(args.out)
    concept_grid(world, out, n=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed)
    print(f"wrote {out}: one row per concept, {args.n} generated images each (prompt phrasings held out of training)")
    return 0


def cmd_world_zoo(args: argparse.Namespace) -> int:
    from gate.world import zoo

    if args.action == "list":
        for name, e in zoo.entries().items():
            m = e.get("measured", {})
            if e["kind"] == "unlearned":
                before, after = m["original"]["detection"], m["unlearned"]["detection"]
                desc = f"{e['method']} erased {e['concept']}: detection {before:.2f} -> {after:.2f}"
            else:
                desc = (
                    f"on {e['base']}: R {m['R']:.2f}, expected verdict {e.get('expected_verdict')} {e.get('label', '')}"
                )
            print(f"{name:<40} {e['kind']:<10} {desc}")
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


# ---------------------------------------------------------------------------------------
# gate erase / gate finetune


def _progress_factory(console):
    """A rich progress bar per stage on a terminal; plain lines in logs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[logs]}"), TimeElapsedColumn(), console=console,
    )  # fmt: skip

    def factory(name: str, total: int):
        task = progress.add_task(name, total=total, logs="")
        every = max(1, total // 10)

        def tick(step: int, logs: dict[str, float]) -> None:
            text = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
            progress.update(task, completed=step + 1, logs=text)
            if not console.is_terminal and (step % every == 0 or step == total - 1):
                console.print(f"{name}: {step + 1}/{total} {text}", highlight=False)

        return tick

    return progress, factory


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise BadInput(f"--set {item!r}: use NAME=VALUE, e.g. --set iterations=50")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_erase(args: argparse.Namespace) -> int:
    from gate.unlearn import METHODS

    if args.list:
        width = max(map(len, METHODS))
        for name, (_, desc) in METHODS.items():
            print(f"{name:<{width}}  {desc}")
        return 0
    missing = [f for f in ("method", "concept", "checkpoint", "out") if not getattr(args, f)]
    if missing:
        raise BadInput("gate erase needs " + ", ".join(f"--{m}" for m in missing) + " (or --list)")
    from rich.console import Console

    from gate.unlearn.base import EraseRequest, erase

    console = Console(stderr=True)
    request = EraseRequest(
        concepts=args.concept,
        preserve=args.preserve,
        forget_data=Path(args.forget_data) if args.forget_data else None,
        retain_data=Path(args.retain_data) if args.retain_data else None,
        seed=args.seed,
    )
    progress, factory = _progress_factory(console)
    with progress:
        record = erase(
            Path(args.checkpoint), Path(args.out), args.method, request,
            preset=args.preset, overrides=_parse_sets(args.set), progress=factory,
        )  # fmt: skip
    console.print(
        f"{record['method']} ({record['preset']} preset) erased {args.concept[0]!r} in {record['wall_time_s']} s; "
        f"{record['parameters_changed']['values']:,} weights changed"
    )
    print(f"wrote {args.out} (record: {Path(args.out) / 'erase.json'})")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gate.finetune import FinetuneConfig, finetune, lora_targets, parse_steps

    cfg = FinetuneConfig(
        mode=args.mode, steps=args.steps, lr=args.lr, batch_size=args.batch_size, rank=args.rank,
        alpha=args.alpha if args.alpha is not None else float(args.rank),
        lora_targets=tuple(lora_targets(args.targets)),
        train_text_encoder=args.text_encoder, save_steps=parse_steps(args.save_steps), seed=args.seed,
    )  # fmt: skip
    console = Console(stderr=True)
    progress, factory = _progress_factory(console)
    with progress:
        record = finetune(Path(args.checkpoint), Path(args.data), Path(args.out), cfg, progress=factory)
    print(f"wrote {args.out} ({cfg.mode}, {cfg.steps} steps, final loss {record['final_loss']:.4f})")
    return 0


# ---------------------------------------------------------------------------------------
# gate check / gate validate


def cmd_validate(args: argparse.Namespace) -> int:
    from gate.policy import load_policy

    for path in args.policy:
        pol = load_policy(path)
        rules = sum(len(c.rules) for c in pol.concepts)
        images = sum(
            c.samples_per_prompt
            * (len(c.prompts) + len(c.incidental_prompts) + sum(len(v) for v in c.retained.values()))
            for c in pol.concepts
        )
        print(f"{path}: ok: policy {pol.name!r} v{pol.version}, {len(pol.concepts)} concepts, {rules} rules, "
              f"{images} images per side, sha256 {pol.sha256[:12]}")  # fmt: skip
    return 0


def _shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput(f"--shard {text!r}: use i/n, e.g. 1/4") from None
    return i, n


def _count_progress(factory):
    """Adapts a (step, logs) progress factory to the runner's count-of-done callbacks."""

    def make(name: str, total: int):
        if total == 0:
            return lambda done: None
        tick = factory(name, total)
        return lambda done: tick(done - 1, {})

    return make


def cmd_check(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from gate import report as R
    from gate.judge import overall
    from gate.runner import Check, CheckOptions, default_inputs

    console = Console(stderr=True)
    if not console.is_terminal:  # CI logs: do not squeeze the summary table into 80 columns
        console = Console(stderr=True, width=160)
    checkpoint, update, original, policy = args.checkpoint, args.update, args.original, args.policy
    if checkpoint is None:
        checkpoint, d_update, d_original, d_policy = default_inputs()
        update = update if update is not None else d_update
        original = original if original is not None else d_original
        policy = policy or d_policy
        console.print(f"no --checkpoint: checking the small world's demo (update {update})")
    opts = CheckOptions(
        checkpoint=checkpoint, update=update or None, original=original or None,
        policy=policy or str(CheckOptions.policy), config=args.config, allow_pickle=args.allow_pickle,
        lora_scale=args.lora_scale, device=args.device, cache_dir=None if args.no_cache else args.cache_dir,
        concepts=args.concept or None, shard=_shard(args.shard),
    )  # fmt: skip
    t0 = time.perf_counter()
    progress, factory = _progress_factory(console)
    check = Check(opts, progress=_count_progress(factory))
    check.load()
    for line in R.header_lines(check):
        console.print(line, highlight=False)
    console.print(f"reproduce: {R.reproduce_line(opts)}", highlight=False)
    screens = {}
    if opts.original and opts.update and not args.no_prescreen:
        screens = _prescreen_stage(check, opts, console)
    with progress:
        results = check.run()
    verdict = overall(
        [r for res in results for r in res.rules if r.verdict != "skipped"], check.policy.inconclusive == "fail"
    )
    rep = R.build_report(check, results, verdict, time.perf_counter() - t0)
    if screens:
        rep["prescreen"] = screens
    out_dir = Path(args.report_dir)
    R.write_json(rep, Path(args.json) if args.json else out_dir / "report.json")
    (out_dir / "summary.md").write_text(R.markdown(rep))
    R.write_html(rep, results, out_dir)
    console.print(R.rich_table(rep))
    console.print(f"reports: {out_dir}/report.json, summary.md, report.html")
    if not args.no_track:
        _track(rep, out_dir, args, console)
    print(R.verdict_line(rep))
    return 0 if verdict == "pass" else 1


def _prescreen_stage(check, opts, console) -> dict:
    """The fast first stage: how much of the unlearning edit the candidate undoes, per concept,
    before any image. Reported only: the small world's validation does not support failing on
    it yet (docs/theory.md), so the verdict always comes from the images."""
    from gate.prescreen import weight_prescreen_many

    try:
        out = weight_prescreen_many(opts.original, opts.checkpoint, opts.update,
                                    {c.name: list(c.prompts) for c in check.concepts},
                                    lora_scale=opts.lora_scale, config=opts.config)  # fmt: skip
    except GateError:
        raise  # bad input stops here, as it would in the image stage
    except Exception as e:  # the pre-screen only informs; the verdict comes from the images
        console.print(f"[yellow]pre-screen skipped: {type(e).__name__}: {str(e)[:200]}[/]")
        return {}
    for name, r in out.items():
        r.pop("layers", None)
        kv = "n/a" if r["kv_undo"] is None else f"{r['kv_undo']:.2f}"
        console.print(
            f"pre-screen {name}: the candidate undoes {r['eps_undo']:.2f} of the erasure's effect on the "
            f"noise prediction, {r['guidance_undo']:.2f} of it on the concept's guidance (K/V on the "
            f"concept's tokens {kv}, weights {r['weight_undo'] or 0:.2f}) in {r['seconds']:.1f} s; "
            "report only, the verdict comes from the images",
            highlight=False,
        )
    return out


def _track(rep, out_dir: Path, args: argparse.Namespace, console) -> None:
    from gate.tracking import resolve_uri, track_after_check

    uri = resolve_uri(args.tracking_uri)
    run_id = track_after_check(
        rep, out_dir, uri=uri, model_line=args.model_line, warn=lambda m: console.print(f"[yellow]{m}[/]")
    )
    if run_id:
        console.print(f"mlflow: run {run_id} in {uri}", highlight=False)


def cmd_track(args: argparse.Namespace) -> int:
    from gate.merge import load
    from gate.tracking import log_report

    path = Path(args.report)
    rep = load(path)
    tracked = log_report(
        rep, path.parent, uri=args.tracking_uri, model_line=args.model_line, allow_duplicate=args.again
    )
    note = " (this report was already logged; --again logs it once more)" if tracked.existing else ""
    print(f"mlflow: run {tracked.run_id} in {tracked.uri}{note}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from gate.tracking import history, plot_history, series_names

    rows = history(uri=args.tracking_uri, model_line=args.model_line, max_runs=args.last)
    if args.concept:
        rows = [r for r in rows if any(k.split(".", 1)[0] == args.concept for k in r.values)]
    names = series_names(rows, args.concept)
    if args.rule:
        names = [n for n in names if n.split(".", 1)[1] in args.rule]
    if not rows or not names:
        raise BadInput("no gate runs match (check --tracking-uri, --model-line, --concept)")
    import datetime as dt

    t = Table(title=f"gate history ({len(rows)} runs)")
    t.add_column("time")
    t.add_column("run")
    t.add_column("update")
    t.add_column("verdict")
    for n in names:
        t.add_column(n, justify="right", no_wrap=True)
    style = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
    for r in rows:
        cells = []
        for n in names:
            v = r.values.get(n, {})
            mark = " x" if v.get("failed") == 1.0 else ""
            cells.append(f"{v['observed']:.3f}{mark}" if "observed" in v else "-")
        t.add_row(
            dt.datetime.fromtimestamp(r.time_ms / 1000).strftime("%Y-%m-%d %H:%M:%S"), r.run_id[:8],
            r.update_sha[:10] or "none", f"[{style.get(r.verdict, '')}]{r.verdict}[/]", *cells,
        )  # fmt: skip
    Console(width=max(120, 70 + sum(len(n) + 3 for n in names))).print(t)
    out = plot_history(rows, names, Path(args.plot))
    print(f"plot: {out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from gate import report as R
    from gate.merge import copy_images, load, merge

    paths = [Path(p) for p in args.reports]
    merged = merge([load(p) for p in paths], [str(p) for p in paths])
    out_dir = Path(args.report_dir)
    R.write_json(merged, out_dir / "report.json")
    (out_dir / "summary.md").write_text(R.markdown(merged))
    copy_images(paths, out_dir)
    R.render_html(merged, out_dir)
    print(f"reports: {out_dir}/report.json, summary.md, report.html")
    if args.track:
        from rich.console import Console

        _track(merged, out_dir, args, Console(stderr=True))
    print(R.verdict_line(merged))
    return 0 if merged["verdict"] == "pass" else 1


def cmd_annotate(args: argparse.Namespace) -> int:
    from gate import report as R
    from gate.ci import github_annotations, write_step_summary
    from gate.merge import load

    rep = load(Path(args.report))
    for line in github_annotations(rep, limit=args.limit):
        print(line)
    written = write_step_summary(R.markdown(rep), args.summary)
    if written:
        print(f"summary appended to {written}", file=sys.stderr)
    return 0 if rep["verdict"] == "pass" else 1


# ---------------------------------------------------------------------------------------


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


def cmd_study(args: argparse.Namespace) -> int:
    import torch

    from gate.study import Study, load_config, report_only

    cfg = load_config(args.config)
    if args.out:
        cfg.out = Path(args.out).resolve()
    if args.report:
        report_only(cfg)
    else:
        torch.set_num_threads(args.threads)
        Study(cfg).run()
    print(f"results: {cfg.out}/results.csv, results.md, curves.png, heatmap.png, factors.png")
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from gate.theory.linear import plot_all, sweep

    if args.action == "plot":
        for p in plot_all(Path(args.out)):
            print(f"figure: {p}")
        return 0
    rows = sweep()
    worst = max(abs(r["simulated"] - r["predicted"]) for r in rows)
    print(f"{'overlap':>8} {'curv':>6} {'eta':>5} {'steps':>6} {'closed form':>12} {'simulation':>11}")
    for r in rows:
        print(
            f"{r['overlap']:>8.2f} {r['curvature']:>6.2f} {r['eta']:>5.2f} {r['steps']:>6}",
            f"{r['predicted']:>12.4f} {r['simulated']:>11.4f}",
        )
    print(f"largest absolute difference over {len(rows)} points: {worst:.4f}")
    return 0


def _tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $GATE_TRACKING_URI, $MLFLOW_TRACKING_URI, else sqlite in .gate-mlflow/)",
    )
    p.add_argument("--model-line", help="the model line runs are grouped by (default: the policy's name)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gate",
        description="Resurgence Gate: checks that a model update does not bring erased concepts back.",
    )
    p.add_argument("--version", action="version", version=f"gate {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    world = sub.add_parser("world", help="the embedded small world: build, evaluate, show, export data")
    wsub = world.add_subparsers(dest="world_command", metavar="WORLD_COMMAND")

    def world_help(_args: argparse.Namespace) -> int:
        world.print_help()
        return 0

    world.set_defaults(func=world_help)

    def world_dir_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--world", help="world folder (default: the one shipped in the package)")

    b = wsub.add_parser("build", help="rebuild the world's models from a seed (about 40 min on 2 CPU cores)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="output folder (default: the package's assets, replaced when complete)")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--scale", type=float, default=1.0, help="scale every step count (e.g. 0.01 for a smoke run)")
    b.add_argument("--no-eval", action="store_true", help="skip the quality measurement")
    b.add_argument("--stages", help="retrain only these stages (vae,clip,sd), reusing the others from --out")
    b.set_defaults(func=cmd_world_build)

    e = wsub.add_parser("eval", help="measure CLIP accuracy, SD fidelity and throughput afresh")
    world_dir_arg(e)
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
    world_dir_arg(s)
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

    er = sub.add_parser("erase", help="unlearn a concept with one of the seven methods (--list to list them)")
    er.add_argument("--list", action="store_true", help="list the methods with a one-line description each")
    er.add_argument("--method")
    er.add_argument("--concept", action="append", default=[], metavar="TEXT",
                    help="the concept to erase; repeat to erase paraphrases with it")  # fmt: skip
    er.add_argument("--preserve", action="append", default=[], metavar="TEXT", help="a concept to keep (repeatable)")
    er.add_argument("--checkpoint", help="diffusers pipeline folder of the model to erase from")
    er.add_argument("--out", help="output diffusers folder (with erase.json)")
    er.add_argument("--preset", default="auto", help="original, small-world, or auto (by model size)")
    er.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a config field")
    er.add_argument("--forget-data", help="folder of forget images (metadata.jsonl); default: generated")
    er.add_argument("--retain-data", help="folder of retain images (metadata.jsonl); default: generated")
    er.add_argument("--seed", type=int, default=0)
    er.set_defaults(func=cmd_erase)

    ft = sub.add_parser("finetune", help="fine-tune a pipeline (full or LoRA) on captioned images")
    ft.add_argument("--checkpoint", required=True, help="diffusers pipeline folder")
    ft.add_argument("--data", required=True, help="folder with metadata.jsonl (file_name, text)")
    ft.add_argument("--out", required=True)
    ft.add_argument("--mode", choices=("full", "lora"), default="lora")
    ft.add_argument("--steps", type=int, default=400)
    ft.add_argument("--lr", type=float, default=0.0, help="default 1e-4 (full) or 1e-3 (LoRA)")
    ft.add_argument("--batch-size", type=int, default=16)
    ft.add_argument("--rank", type=int, default=4)
    ft.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    ft.add_argument("--targets", help="LoRA target modules, comma-separated (default to_q,to_k,to_v,to_out.0)")
    ft.add_argument("--text-encoder", action="store_true", help="also train the text encoder")
    ft.add_argument("--save-steps", help="intermediate checkpoints, e.g. 100,200")
    ft.add_argument("--seed", type=int, default=0)
    ft.set_defaults(func=cmd_finetune)

    ck = sub.add_parser(
        "check", help="check a candidate update for concept resurgence (no arguments: the small-world demo)"
    )
    ck.add_argument("--checkpoint", help="the unlearned model: diffusers folder, .safetensors file or cached hub id")
    ck.add_argument("--update", help="the candidate: LoRA .safetensors, diffusers folder, or UNet .safetensors")
    ck.add_argument("--original", help="the model before unlearning (enables max_resurgence)")
    ck.add_argument("--policy", help="policy YAML (default: policies/small-world.yaml)")
    ck.add_argument("--config", help="local diffusers folder giving the architecture of a single-file checkpoint")
    ck.add_argument("--lora-scale", type=float, default=1.0)
    ck.add_argument(
        "--allow-pickle", action="store_true", help="read pickle weights with torch.load(weights_only=True)"
    )
    ck.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (explicit; nothing moves silently)")
    ck.add_argument("--cache-dir", default=".gate-cache", help="baseline image/score cache")
    ck.add_argument("--no-cache", action="store_true")
    ck.add_argument("--concept", action="append", help="check only this concept (repeatable)")
    ck.add_argument("--shard", help="i/n: check the i-th of n deterministic shards of the concepts")
    ck.add_argument("--json", help="write the JSON report here (default: REPORT_DIR/report.json)")
    ck.add_argument("--report-dir", default="out/gate-report", help="JSON, Markdown and HTML reports")
    _tracking_args(ck)
    ck.add_argument("--no-track", action="store_true", help="do not log the run to MLflow")
    ck.add_argument("--no-prescreen", action="store_true", help="skip the weight-space pre-screen stage")
    ck.set_defaults(func=cmd_check)

    tr = sub.add_parser("track", help="log a report.json to MLflow (one that could not be logged at the time)")
    tr.add_argument("report")
    _tracking_args(tr)
    tr.add_argument("--again", action="store_true", help="log it even if this exact report was logged before")
    tr.set_defaults(func=cmd_track)

    hi = sub.add_parser("history", help="trends of a model line's gate runs: a table and a PNG plot")
    _tracking_args(hi)
    hi.add_argument("--concept", help="only this concept")
    hi.add_argument("--rule", action="append", help="only this rule (repeatable)")
    hi.add_argument("--last", type=int, default=500, help="at most this many runs")
    hi.add_argument("--plot", default="out/gate-history.png")
    hi.set_defaults(func=cmd_history)

    me = sub.add_parser("merge", help="combine the reports of gate check --shard runs into one verdict")
    me.add_argument("reports", nargs="+", help="each shard's report.json (its images/ folder beside it)")
    me.add_argument("--report-dir", default="out/gate-report")
    _tracking_args(me)
    me.add_argument("--track", action="store_true", help="log the merged verdict to MLflow")
    me.set_defaults(func=cmd_merge)

    an = sub.add_parser("annotate", help="GitHub Actions: ::error annotations and the job summary for a report")
    an.add_argument("report")
    an.add_argument("--limit", type=int, default=5, help="annotate at most this many concepts, then a count")
    an.add_argument("--summary", help="append the Markdown here (default: $GITHUB_STEP_SUMMARY when set)")
    an.set_defaults(func=cmd_annotate)

    ps = sub.add_parser("prescreen", help="estimate, without images, how much of the erasure a candidate undoes")
    ps.add_argument("--original", help="the model before unlearning")
    ps.add_argument("--checkpoint", required=True, help="the unlearned model")
    ps.add_argument("--update", help="the candidate (as for gate check)")
    ps.add_argument("--data", help="instead of a candidate: a proposed fine-tuning folder (metadata.jsonl)")
    ps.add_argument("--concept", action="append", help="a prompt of the erased concept (repeatable)")
    ps.add_argument("--policy", help="take the concepts' prompts from this policy")
    ps.add_argument("--lora-scale", type=float, default=1.0)
    ps.set_defaults(func=cmd_prescreen)

    st = sub.add_parser("study", help="the resurgence study: erase, fine-tune on benign data, measure (resumable)")
    st.add_argument("config", nargs="?", default="studies/small-world.yaml")
    st.add_argument("--out", help="results folder (default: the config's out)")
    st.add_argument("--report", action="store_true", help="only rewrite CSV, Markdown and plots from the rows")
    st.add_argument("--threads", type=int, default=2)
    st.set_defaults(func=cmd_study)

    th = sub.add_parser("theory", help="the linear model of resurgence: figures, closed form against simulation")
    th.add_argument("action", choices=["plot", "sweep"])
    th.add_argument("--out", default="docs/theory", help="where plot writes the figures")
    th.set_defaults(func=cmd_theory)

    va = sub.add_parser("validate", help="check policy files (no torch, no models)")
    va.add_argument("policy", nargs="+")
    va.set_defaults(func=cmd_validate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_BAD_INPUT if args.command is None and argv else 0
    for name in ("steps", "guidance"):
        if getattr(args, name, "absent") is None:
            from gate.world import models

            setattr(args, name, models.DEFAULT_STEPS if name == "steps" else models.DEFAULT_GUIDANCE)
    try:
        return func(args)
    except GateError as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("gate: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure is the tool's fault: exit 3, one line, no traceback
        print(f"gate: internal error: {type(e).__name__}: {e} (set GATE_DEBUG=1 for a traceback)", file=sys.stderr)
        import os

        if os.environ.get("GATE_DEBUG"):
            raise
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
