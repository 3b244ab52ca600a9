"""``gate check`` and ``gate validate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gate.cli.common import _count_progress, _progress_factory, _shard, _tracking_args
from gate.errors import BadInput


def cmd_validate(args: argparse.Namespace) -> int:
    from gate.policy import load_policy, validate_base

    for path in args.policy:
        if Path(path).name == "gate.yaml":
            _validate_repo_config(Path(path))
            continue
        if _is_base(path):
            data = validate_base(path)
            n = len(data.get("detectors") or {})
            print(f"{path}: ok: a base for include: (no concepts of its own; {n} detectors)")
            continue
        pol = load_policy(path)
        rules = sum(len(c.rules) for c in pol.concepts)
        st = pol.stopping

        def n_prompts(c) -> int:
            return len(c.prompts) + len(c.incidental_prompts) + sum(len(v) for v in c.retained.values())

        if st.sequential:
            most = sum(st.max_for(c.samples_per_prompt) * n_prompts(c) for c in pol.concepts)
            stage = sum(st.stage_samples * n_prompts(c) for c in pol.concepts)
            images = f"sequential: stages of {stage}, at most {most} images per side"
        else:
            images = f"{sum(c.samples_per_prompt * n_prompts(c) for c in pol.concepts)} images per side"
        print(f"{path}: ok: policy {pol.name!r} v{pol.version}, {len(pol.concepts)} concepts, {rules} rules, "
              f"{images}, sha256 {pol.sha256[:12]}")  # fmt: skip
    return 0


def _validate_repo_config(path: Path) -> None:
    """gate.yaml (model lines): its keys, and that each line's policy exists and loads."""
    from gate.policy import load_policy
    from gate.repo_config import load_repo_config

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot be read ({e.strerror})") from None
    cfg = load_repo_config(text, str(path))
    root = path.resolve().parent
    for line in cfg.model_lines:
        policy = root / line.policy
        if not policy.is_file():
            raise BadInput(f"{path}: model line {line.name!r}: policy {line.policy} is not a file in this repository")
        load_policy(policy)
    names = ", ".join(m.name for m in cfg.model_lines)
    print(f"{path}: ok: {len(cfg.model_lines)} model lines ({names}), {len(cfg.exempt)} exempt globs")


def _is_base(path: str) -> bool:
    """A policy file without concepts, meant to be included by others (not an error for validate)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # load_policy reports it properly
    return isinstance(data, dict) and "concepts" not in data and "include" not in data


def check_options(args: argparse.Namespace):
    """CheckOptions from ``gate check``'s flags; the embedded default is decided in gate.world.demo."""
    from gate.runner import CheckOptions
    from gate.world.demo import resolve

    inputs = resolve(args.checkpoint, args.update, args.original, args.policy)
    return CheckOptions(
        checkpoint=inputs.checkpoint, update=inputs.update, original=inputs.original, policy=inputs.policy,
        config=args.config, allow_pickle=args.allow_pickle, lora_scale=args.lora_scale, device=args.device,
        cache_dir=None if args.no_cache else args.cache_dir, concepts=args.concept or None, shard=_shard(args.shard),
        prescreen=not args.no_prescreen, report_dir=args.report_dir, json_path=args.json, track=not args.no_track,
        tracking_uri=args.tracking_uri, model_line=args.model_line, pull_request=_pull_request(args),
    )  # fmt: skip


def _pull_request(args: argparse.Namespace) -> dict | None:
    """CI provenance for the report and MLflow: which pull request, commits and candidate."""
    fields = {"number": args.pr_number, "base_sha": args.base_sha, "head_sha": args.head_sha,
              "candidate": args.candidate, "model_line": args.model_line}  # fmt: skip
    if not any(v for k, v in fields.items() if k != "model_line"):
        return None
    return {k: v for k, v in fields.items() if v not in (None, "")}


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from gate import report as R
    from gate.runner import run_check

    console = Console(stderr=True)
    if not console.is_terminal:  # CI logs: do not squeeze the summary table into 80 columns
        console = Console(stderr=True, width=160)
    if args.checkpoint is None:
        console.print("no --checkpoint: checking the small world's demo", highlight=False)
    opts = check_options(args)

    def log(m: str) -> None:
        console.print(Text(m))

    def warn(m: str) -> None:
        console.print(Text(m, style="yellow"))

    progress, factory = _progress_factory(console)
    with progress:
        outcome = run_check(opts, progress=_count_progress(factory), log=log, warn=warn)
    rep = outcome.report
    if rep is None:  # a helper process of a check split with accelerate: its images are in the cache
        return outcome.exit_code
    try:  # the console table is the last thing a renderer could break; the verdict is already safe
        console.print(R.rich_table(rep))
    except Exception as e:
        warn(f"warning: could not render the summary table ({type(e).__name__}: {e})")
    console.print(Text(f"reports: {outcome.report_dir}/report.json, summary.md, report.html"))
    if outcome.tracked:
        from gate.tracking import ui_hint

        console.print(Text(f"mlflow: run {outcome.run_id} in {outcome.tracked.uri}"))
        console.print(Text(f"view it: {ui_hint(outcome.tracked)}"))
    print(R.verdict_line(rep))
    return outcome.exit_code


def register(sub) -> None:
    """Adds ``gate check``."""
    ck = sub.add_parser(
        "check", help="check a candidate update for concept resurgence (no arguments: the small-world demo)"
    )
    ck.add_argument("--checkpoint", help="the unlearned model: diffusers folder, .safetensors file or cached hub id")
    ck.add_argument("--update", help="the candidate: LoRA .safetensors, diffusers folder, or UNet .safetensors")
    ck.add_argument("--original", help="the model before unlearning (enables max_resurgence)")
    ck.add_argument("--policy", help="policy YAML (required with --checkpoint, unless it is the small world's own SD)")
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
    pr = ck.add_argument_group("pull request provenance (CI): recorded in the report and MLflow")
    pr.add_argument("--pr-number", help="the pull request's number")
    pr.add_argument("--base-sha", help="the base commit (where the gate, its policy and the checkpoint came from)")
    pr.add_argument("--head-sha", help="the head commit (where the candidate came from)")
    pr.add_argument("--candidate", help="the candidate's path in the pull request (names the MLflow run)")
    ck.set_defaults(func=cmd_check)


def register_validate(sub) -> None:
    """Adds ``gate validate`` (separate from :func:`register` so it stays last in ``gate --help``)."""
    va = sub.add_parser("validate", help="check policy files (no torch, no models)")
    va.add_argument("policy", nargs="+")
    va.set_defaults(func=cmd_validate)
