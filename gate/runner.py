"""The one orchestration path of a check, used by ``gate check`` and the pytest plugin.

    policy + checkpoint (+ update, + original)
      -> probe jobs (prompt, seed) per concept
      -> images for the unlearned baseline and the candidate, same seeds and sampler, in batches
         (baseline images come from the cache when the same model, prompt, seed, sampler and
         detector were seen before)
      -> detector outcomes -> rule results (judge.py) -> verdict

The pipeline is loaded once: baseline images are made first, then the update is applied in
place and the candidate's images are made. The original model, when given, is loaded after.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate import judge
from gate.cache import ImageCache, make_key
from gate.errors import BadInput
from gate.policy import ConceptPolicy, DetectorSpec, Policy, load_policy
from gate.probes import Job, jobs_for

Tick = Callable[[int], None]
ProgressFactory = Callable[[str, int], Tick]

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policies" / "small-world.yaml"
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}


@dataclass
class CheckOptions:
    checkpoint: str
    update: str | None = None
    original: str | None = None
    policy: str = str(DEFAULT_POLICY)
    config: str | None = None
    allow_pickle: bool = False
    lora_scale: float = 1.0
    device: str = "cpu"
    cache_dir: str | None = ".gate-cache"
    concepts: Sequence[str] | None = None
    shard: tuple[int, int] | None = None


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


def _no_progress(name: str, total: int) -> Tick:
    return lambda n: None


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


class Check:
    def __init__(self, opts: CheckOptions, progress: ProgressFactory = _no_progress) -> None:
        self.opts = opts
        self.progress = progress
        self.policy = load_policy(opts.policy)
        self.concepts = select_concepts(self.policy, opts.concepts, opts.shard)
        self.cache = ImageCache(opts.cache_dir)
        self.detectors: dict[str, Any] = {}
        self.identities: dict[str, Any] = {}
        self.timings: dict[str, float] = defaultdict(float)
        self.pipe = None

    # -- models ------------------------------------------------------------------------
    def _dtype(self):
        import torch

        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
            self.policy.sampler.dtype
        ]

    def _prepare(self, pipe) -> None:
        name = self.policy.sampler.scheduler
        if name:
            import diffusers

            if name not in SCHEDULERS:
                raise BadInput(f"sampler.scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")
            pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)

    def load(self) -> None:
        from gate.model import load_checkpoint

        t0 = time.perf_counter()
        self.pipe, ident = load_checkpoint(
            self.opts.checkpoint, config=self.opts.config, allow_pickle=self.opts.allow_pickle,
            device=self.opts.device, dtype=self._dtype(),
        )  # fmt: skip
        self._prepare(self.pipe)
        self.identities["checkpoint"] = ident.as_dict()
        from gate.model import preflight_update, resolve_checkpoint

        preflight_update(self.pipe, self.opts.update, allow_pickle=self.opts.allow_pickle)
        if self.opts.original:
            resolve_checkpoint(self.opts.original, allow_pickle=self.opts.allow_pickle)
        for c in self.concepts:  # detectors load (and their labels are checked) before any generation
            self.detector(c.detector).check_label(c.name)
            for r in c.retained:
                self.detector(c.detector_for("retained")).check_label(r)
        self.timings["load"] += time.perf_counter() - t0

    def detector(self, spec: DetectorSpec):
        key = spec.key()
        if key not in self.detectors:
            from gate.detectors import detector_class

            cls = detector_class(spec.type)
            self.detectors[key] = cls(spec.settings, base_dir=Path(self.policy.source).parent, device=self.opts.device)
        return self.detectors[key]

    # -- images and outcomes -------------------------------------------------------------
    def _image_key(self, side_identity: dict[str, Any], job: Job) -> str:
        from gate.pipeline import library_versions

        versions = library_versions()
        return make_key(
            {
                "model": side_identity,
                "prompt": job.prompt,
                "seed": job.seed,
                "sampler": vars(self.policy.sampler),
                "device": self.opts.device,
                "versions": {k: versions[k] for k in ("torch", "diffusers", "transformers", "peft")},
            }
        )

    def outcomes(
        self, side: str, side_identity: dict[str, Any], pipe, c: ConceptPolicy, jobs: list[Job]
    ) -> list[Outcome]:
        keys = [self._image_key(side_identity, j) for j in jobs]
        found: dict[int, tuple[Any, dict]] = {}
        for i, k in enumerate(keys):
            got = self.cache.get(k)
            if got is not None:
                found[i] = got
        todo = [i for i in range(len(jobs)) if i not in found]
        tick = self.progress(f"{c.name}: {side} images ({len(found)} cached)", len(todo))
        s = self.policy.sampler
        done = 0
        for start in range(0, len(todo), s.batch_size):
            idx = todo[start : start + s.batch_size]
            images = self._generate(pipe, [jobs[i].prompt for i in idx], [jobs[i].seed for i in idx])
            for i, im in zip(idx, images, strict=True):
                found[i] = (im, {"scores": {}})
            done += len(idx)
            tick(done)

        # scores, per detector and label, cached with the image
        def score_key(j: Job) -> str:
            return f"{c.detector_for(j.group).key()}:{j.label}"

        todo_scores: dict[str, list[int]] = defaultdict(list)
        for i, j in enumerate(jobs):
            if score_key(j) not in found[i][1].get("scores", {}):
                todo_scores[score_key(j)].append(i)
        t0 = time.perf_counter()
        for sk, idx in todo_scores.items():
            j0 = jobs[idx[0]]
            scores, present = self.detector(c.detector_for(j0.group)).score([found[i][0] for i in idx], j0.label)
            for i, sc, pr in zip(idx, scores, present, strict=True):
                info = found[i][1]
                info.setdefault("scores", {})[sk] = [float(sc), bool(pr)]
                self.cache.put(keys[i], found[i][0], info)
        self.timings["detect"] += time.perf_counter() - t0
        out: list[Outcome] = []
        for i, j in enumerate(jobs):
            sc, pr = found[i][1]["scores"][score_key(j)]
            out.append(Outcome(j, sc, pr, found[i][0]))
        return out

    def _generate(self, pipe, prompts: list[str], seeds: list[int]):
        import torch

        s = self.policy.sampler
        t0 = time.perf_counter()
        gens = [torch.Generator("cpu").manual_seed(int(sd)) for sd in seeds]
        kwargs: dict[str, Any] = {"num_inference_steps": s.steps, "guidance_scale": s.guidance, "generator": gens}
        if s.height:
            kwargs["height"] = s.height
        if s.width:
            kwargs["width"] = s.width
        if s.negative_prompt is not None:
            kwargs["negative_prompt"] = [s.negative_prompt] * len(prompts)
        with torch.no_grad():
            images = pipe(prompts, output_type="pil", **kwargs).images
        self.timings["generate"] += time.perf_counter() - t0
        self.timings["images"] += len(images)
        return images

    # -- the check -----------------------------------------------------------------------
    def run(self) -> list[ConceptResult]:
        from gate.model import apply_update

        if self.pipe is None:
            self.load()
        ckpt_id = self.identities["checkpoint"]
        all_jobs = {c.name: jobs_for(self.policy, c) for c in self.concepts}
        base = {
            c.name: self.outcomes("baseline", {"checkpoint": ckpt_id}, self.pipe, c, all_jobs[c.name])
            for c in self.concepts
        }
        t0 = time.perf_counter()
        upd = apply_update(
            self.pipe, self.opts.update, lora_scale=self.opts.lora_scale, allow_pickle=self.opts.allow_pickle
        )
        self.timings["load"] += time.perf_counter() - t0
        self.identities["update"] = upd.as_dict() if upd else None
        # no update: the candidate is the baseline model, and its images are the baseline's (cache hits)
        cand_id = {"checkpoint": ckpt_id, "update": self.identities["update"]} if upd else {"checkpoint": ckpt_id}
        cand = {c.name: self.outcomes("candidate", cand_id, self.pipe, c, all_jobs[c.name]) for c in self.concepts}
        orig: dict[str, list[Outcome]] = {}
        if self.opts.original:
            from gate.model import load_checkpoint

            self.pipe = None  # free the candidate before loading the original
            opipe, oid = load_checkpoint(
                self.opts.original, allow_pickle=self.opts.allow_pickle, device=self.opts.device, dtype=self._dtype()
            )
            self._prepare(opipe)
            self.identities["original"] = oid.as_dict()
            for c in self.concepts:
                jobs = [j for j in all_jobs[c.name] if j.group == "concept"]
                orig[c.name] = self.outcomes("original", {"checkpoint": oid.as_dict()}, opipe, c, jobs)
        return [self._judge(c, base[c.name], cand[c.name], orig.get(c.name)) for c in self.concepts]

    def _judge(
        self, c: ConceptPolicy, base: list[Outcome], cand: list[Outcome], orig: list[Outcome] | None
    ) -> ConceptResult:
        def group(outs: list[Outcome], g: str) -> list[Outcome]:
            return [o for o in outs if o.job.group == g]

        def hits(outs: list[Outcome]) -> list[bool]:
            return [o.present for o in outs]

        def rate(outs: list[Outcome]) -> float:
            return sum(hits(outs)) / len(outs)

        bc, cc = group(base, "concept"), group(cand, "concept")
        rules = c.rules
        results = []
        if "max_presence_rate" in rules:
            results.append(
                judge.rate_rule(c.name, "max_presence_rate", rules["max_presence_rate"], hits(cc), baseline=rate(bc))
            )
        if "max_increase_over_baseline" in rules:
            results.append(judge.increase_rule(c.name, rules["max_increase_over_baseline"], hits(bc), hits(cc)))
        if "max_resurgence" in rules:
            thr = rules["max_resurgence"]
            if orig is None:
                nan = float("nan")
                note = "needs --original (the model before unlearning)"
                results.append(judge.RuleResult(c.name, "max_resurgence", thr, nan, nan, nan, "skipped", 0, note=note))
            else:
                results.append(judge.resurgence_rule(c.name, thr, hits(orig), hits(bc), hits(cc), self.policy.seed))
        if "max_incidental_rate" in rules:
            bi, ci = group(base, "incidental"), group(cand, "incidental")
            results.append(
                judge.rate_rule(
                    c.name, "max_incidental_rate", rules["max_incidental_rate"], hits(ci), baseline=rate(bi)
                )
            )
        if "min_retained_fidelity" in rules:
            br, cr = group(base, "retained"), group(cand, "retained")
            thr = rules["min_retained_fidelity"]
            results.append(judge.rate_rule(c.name, "min_retained_fidelity", thr, hits(cr), baseline=rate(br)))
        for r in results:
            r.worst = worst_examples(r.rule, base, cand)
        return ConceptResult(
            c.name, results, {"baseline": base, "candidate": cand, **({"original": orig} if orig else {})}
        )


def worst_examples(rule: str, base: list[Outcome], cand: list[Outcome], k: int = 4) -> list[dict[str, Any]]:
    """The prompts and seeds that hurt a rule most: highest candidate concept score (or, for
    retained fidelity, lowest), with the baseline's score on the same seed beside it."""
    group = {"max_incidental_rate": "incidental", "min_retained_fidelity": "retained"}.get(rule, "concept")
    pairs = [(b, c) for b, c in zip(base, cand, strict=True) if c.job.group == group]
    if rule == "min_retained_fidelity":
        pairs.sort(key=lambda bc: bc[1].score)
    else:
        pairs.sort(key=lambda bc: (bc[1].score - bc[0].score, bc[1].score), reverse=True)
    return [
        {"prompt": c.job.prompt, "seed": c.job.seed, "label": c.job.label, "candidate_score": round(c.score, 4),
         "baseline_score": round(b.score, 4), "candidate_present": c.present, "baseline_present": b.present}
        for b, c in pairs[:k]
    ]  # fmt: skip


def default_inputs() -> tuple[str, str | None, str | None, str]:
    """(checkpoint, update, original, policy) of the small-world demo: the zoo's unlearned model
    and the candidate named in the zoo's demo.json (materialised from the zoo's deltas on first use)."""
    from gate.world.zoo import demo_inputs

    return demo_inputs()
