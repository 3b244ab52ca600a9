"""The pieces of a check that are plain data or small helpers: outcomes, results, concept
selection, scheduler names and device helpers (``gate.runner`` drives them)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate import judge
from gate.errors import BadInput
from gate.policy import ConceptPolicy, Policy
from gate.probes import Job

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}


@dataclass
class Outcome:
    job: Job
    score: float
    present: bool
    image: Any = None  # PIL image, kept for the report


@dataclass
class ConceptResult:
    name: str
    rules: list[judge.RuleResult]
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)  # side -> outcomes (job order)
    stopping: dict[str, Any] | None = None  # stopping: sequential: stages, images, decisions (gate.staged)


@dataclass
class CheckOutcome:
    report: Any  # gate.report.Report
    results: list[ConceptResult]
    report_dir: Path
    tracked: Any = None  # gate.tracking.Tracked, when the run was logged to MLflow

    @property
    def run_id(self) -> str | None:
        return self.tracked.run_id if self.tracked else None

    @property
    def exit_code(self) -> int:
        if self.report is None:  # a helper process of a split check: the main process decides
            return 0
        return 0 if self.report.verdict == judge.PASS else 1


def select_concepts(policy: Policy, names: Sequence[str] | None, shard: tuple[int, int] | None) -> list[ConceptPolicy]:
    chosen = list(policy.concepts)
    if names:
        known = {c.name for c in chosen}
        bad = [n for n in names if n not in known]
        if bad:
            raise BadInput(
                f"--concept {bad[0]!r}: not in policy {policy.name!r} (concepts: {', '.join(sorted(known))})"
            )
        chosen = [c for c in chosen if c.name in names]
    if shard:
        i, n = shard
        if not (n >= 1 and 1 <= i <= n):
            raise BadInput(f"--shard {i}/{n}: use i/n with 1 <= i <= n")
        # deterministic: concepts sorted by name, dealt round-robin
        ordered = sorted(chosen, key=lambda c: c.name)
        chosen = [c for k, c in enumerate(ordered) if k % n == i - 1]
    return chosen


def free_device_cache(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def attention_processor(pipe) -> str | None:
    """The UNet's attention implementation (diffusers uses PyTorch SDPA, ``AttnProcessor2_0``,
    on torch 2); recorded with the sampler settings."""
    if pipe is None:
        return None
    names = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    return ",".join(sorted(names))


def original_pipe(check):
    """The original model for its images: read into the loaded pipeline when it is a diffusers
    folder with the same tokenizer and scheduler (one pipeline in memory); else loaded on its
    own after the candidate's pipeline is freed."""
    from gate.inplace import swap_components
    from gate.model import resolve_checkpoint
    from gate.weights import Identity, content_hash

    o = check.opts
    kind, path = resolve_checkpoint(o.original, config=o.config, allow_pickle=o.allow_pickle, flag="--original")
    ck_kind, ck_path = resolve_checkpoint(o.checkpoint, config=o.config, allow_pickle=o.allow_pickle)
    same_text = (
        kind == "folder" and ck_kind == "folder" and path is not None and ck_path is not None
        and all(content_hash(path / d) == content_hash(ck_path / d) for d in ("tokenizer", "scheduler"))
    )  # fmt: skip
    if same_text and check.pipe is not None and path is not None:
        pipe = check.pipe
        if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
            pipe.unload_lora_weights()
        swap_components(pipe, path, ("unet", "text_encoder", "vae"), f"--original {o.original}")
        check.in_place_original = True
        return pipe, Identity("diffusers-folder", str(path), content_hash(path))
    check.pipe = None  # free the candidate before loading the original
    check.in_place_original = False
    return check._load_model(o.original, "--original")


def _stopping(pol: Policy, r: ConceptResult) -> dict[str, Any]:
    """A concept's images per side and how they were chosen (fixed n, or the stages)."""
    if r.stopping is not None:
        return r.stopping
    c = pol.concept(r.name)
    return {**pol.stopping.describe(c.samples_per_prompt), "images": {k: len(v) for k, v in r.outcomes.items()}}


def _attacks(check, r: ConceptResult) -> dict[str, Any] | None:
    """A concept's attacks: per attack, each side's images and success rate, and for a learned
    attack its targets and each side's learning record (``gate.attacks.runtime``)."""
    from gate.attacks.rates import attack_rates

    c = check.policy.concept(r.name)
    if not c.attacks:
        return None
    rates = attack_rates(r.outcomes)
    ev = check.attacks.evidence.get(r.name, {})
    out = {}
    for name in c.attacks:
        extra = {k: ({kk: vv for kk, vv in v.items() if kk != "_file"} if isinstance(v, dict) else v)
                 for k, v in ev.get(name, {}).items()}  # fmt: skip
        out[name] = {"success": rates.get(name, {}), **extra}
    return out


def build_report(check, results: list[ConceptResult], wall_s: float, prescreen: dict | None = None):
    """The typed report of a finished check."""
    from gate import report as R
    from gate.provenance import git_commit, library_versions

    pol = check.policy
    fails = pol.inconclusive == "fail"
    concepts = [R.ConceptReport.judged(r.name, r.rules, fails, _stopping(pol, r), _attacks(check, r)) for r in results]
    return R.Report(
        verdict=judge.verdict([x for r in results for x in r.rules], fails),
        inconclusive_counts_as=pol.inconclusive,
        inputs={
            **check.identities,
            "policy": {"path": pol.source, "name": pol.name, "version": pol.version, "sha256": pol.sha256},
        },
        reproduce=R.reproduce_line(check.opts),
        seed=pol.seed,
        sampler={
            **vars(pol.sampler),
            "batch_size_used": check.batch_size,
            **({"batch_halvings": check.batch_halvings} if check.batch_halvings else {}),
            "attention": check.attention,
        },
        device=check.opts.device,
        concepts=concepts,
        shard=list(check.opts.shard) if check.opts.shard else None,
        libraries=library_versions(),
        detectors={k: d.identity() for k, d in check.detectors.items()},
        cache=check.cache.stats(),
        timings_s={k: round(v, 2) for k, v in check.timings.items()},
        wall_time_s=round(wall_s, 2),
        finished_at=round(time.time(), 3),
        git_commit=git_commit(),
        prescreen=prescreen or None,
        pull_request=dict(check.opts.pull_request) if check.opts.pull_request else None,
    )
