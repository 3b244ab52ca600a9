"""``gate check`` and ``gate validate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gate.cli.common import _count_progress, _progress_factory, _shard, _track, _tracking_args
from gate.errors import GateError


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


def register(sub) -> None:
    """Adds ``gate check``."""
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


def register_validate(sub) -> None:
    """Adds ``gate validate`` (separate from :func:`register` so it stays last in ``gate --help``)."""
    va = sub.add_parser("validate", help="check policy files (no torch, no models)")
    va.add_argument("policy", nargs="+")
    va.set_defaults(func=cmd_validate)
