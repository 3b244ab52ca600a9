"""The one path of a check, for ``gate check`` and the pytest plugin alike: ``run_check``.

    policy + checkpoint (+ update, + original)
      -> load the unlearned model and the detectors; check every input before any image
      -> pre-screen (weights only, report only) when original and update are given
      -> probe jobs (prompt, seed) per concept
      -> images for the unlearned baseline and the candidate, same seeds and sampler, in batches
         (images come from the cache when the same model content, prompt, seed, sampler and
         libraries were seen before; scores when the same detector, by content, scored them)
      -> detector outcomes -> rule results (judge.py) -> verdict -> reports -> MLflow

One pipeline is held at a time: it is loaded once, as the unlearned model; the pre-screen
works on it and gives it back unchanged; baseline images are made, then the update is applied
in place and the candidate's images are made; then the original model's UNet, text encoder and
VAE are read into the same modules (``gate.inplace``) for its images. Only an original that is
not a diffusers folder (a single file, a hub id) is loaded as a pipeline of its own, after the
candidate's is freed.

``sampler.batch_size: auto`` starts at 8 images a batch and halves the batch when the device runs
out of memory, retrying the same images (each image has its own seed, so the images are the
same ones); the halvings are recorded in the report's ``sampler``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate import judge
from gate.cache import ImageCache, make_key
from gate.errors import BadInput, OutOfMemory, is_out_of_memory
from gate.policy import AUTO_BATCH_START, ConceptPolicy, DetectorSpec, Policy, load_policy
from gate.probes import Job, jobs_for

Tick = Callable[[int], None]
ProgressFactory = Callable[[str, int], Tick]
Log = Callable[[str], None]

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
    """Everything a check needs; ``gate.world.demo.resolve`` fills the inputs from what a user gave."""

    checkpoint: str
    policy: str
    update: str | None = None
    original: str | None = None
    config: str | None = None
    allow_pickle: bool = False
    lora_scale: float = 1.0
    device: str = "cpu"
    cache_dir: str | None = ".gate-cache"
    concepts: Sequence[str] | None = None
    shard: tuple[int, int] | None = None
    prescreen: bool = True
    report_dir: str = "out/gate-report"
    json_path: str | None = None  # default: report_dir/report.json
    track: bool = True
    tracking_uri: str | None = None
    model_line: str | None = None
    pull_request: dict[str, Any] | None = None  # CI provenance: number, base_sha, head_sha, candidate


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
        return 0 if self.report.verdict == judge.PASS else 1


def _no_progress(name: str, total: int) -> Tick:
    return lambda n: None


def _quiet(message: str) -> None:
    return None


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
    """The stages of one check; ``run_check`` drives them (benchmarks may drive them one by one)."""

    def __init__(self, opts: CheckOptions, progress: ProgressFactory = _no_progress) -> None:
        if not opts.policy:
            raise BadInput("a check needs a policy (--policy)")
        self.opts = opts
        self.progress = progress
        self.policy = load_policy(opts.policy)
        self.concepts = select_concepts(self.policy, opts.concepts, opts.shard)
        self.cache = ImageCache(opts.cache_dir)
        self.detectors: dict[str, Any] = {}
        self._detector_keys: dict[str, str] = {}
        self.identities: dict[str, Any] = {}
        self._content: dict[str, Any] = {}  # identities by content only (cache keys)
        self.timings: dict[str, float] = defaultdict(float)
        self.pipe = None
        bs = self.policy.sampler.batch_size
        self.batch_size = AUTO_BATCH_START if bs == "auto" else int(bs)
        self.batch_halvings: list[dict[str, Any]] = []
        self.attention: str | None = None
        self.in_place_original = False

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
        s = self.policy.sampler
        if s.vae_slicing:
            pipe.vae.enable_slicing()
        if s.vae_tiling:
            pipe.vae.enable_tiling()

    def _load_model(self, spec: str, flag: str):
        from gate.model import load_checkpoint

        o = self.opts
        pipe, ident = load_checkpoint(
            spec, config=o.config, allow_pickle=o.allow_pickle, device=o.device, dtype=self._dtype(), flag=flag
        )
        self._prepare(pipe)
        return pipe, ident

    def load(self) -> None:
        """Loads the unlearned model and the detectors, and checks every other input, before any image."""
        from gate.model import preflight_update, resolve_checkpoint

        t0 = time.perf_counter()
        self.pipe, ident = self._load_model(self.opts.checkpoint, "--checkpoint")
        self.identities["checkpoint"] = ident.as_dict()
        self._content["checkpoint"] = ident.content_key()
        self.attention = attention_processor(self.pipe)
        preflight_update(self.pipe, self.opts.update, allow_pickle=self.opts.allow_pickle)
        if self.opts.original:
            resolve_checkpoint(
                self.opts.original, config=self.opts.config, allow_pickle=self.opts.allow_pickle, flag="--original"
            )
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

    def detector_key(self, spec: DetectorSpec) -> str:
        """A detector by content: its identity (type, weights' hash, labels, decision), hashed."""
        key = spec.key()
        if key not in self._detector_keys:
            ident = json.dumps(self.detector(spec).identity(), sort_keys=True, default=str)
            self._detector_keys[key] = hashlib.sha256(ident.encode()).hexdigest()[:16]
        return self._detector_keys[key]

    # -- images and outcomes -------------------------------------------------------------
    def _image_key(self, side_content: dict[str, Any], job: Job) -> str:
        from gate.provenance import library_versions

        versions = library_versions()
        return make_key(
            {
                "model": side_content,
                "prompt": job.prompt,
                "seed": job.seed,
                "sampler": vars(self.policy.sampler),
                "device": self.opts.device,
                "versions": {k: versions[k] for k in ("torch", "diffusers", "transformers", "peft")},
            }
        )

    def outcomes(
        self, side: str, side_content: dict[str, Any], pipe, c: ConceptPolicy, jobs: list[Job]
    ) -> list[Outcome]:
        keys = [self._image_key(side_content, j) for j in jobs]
        found: dict[int, tuple[Any, dict]] = {}
        for i, k in enumerate(keys):
            got = self.cache.get(k)
            if got is not None:
                found[i] = got
        todo = [i for i in range(len(jobs)) if i not in found]
        tick = self.progress(f"{c.name}: {side} images ({len(found)} cached)", len(todo))
        done = 0
        while done < len(todo):
            idx = todo[done : done + self.batch_size]
            images = self._generate_batch(pipe, [jobs[i].prompt for i in idx], [jobs[i].seed for i in idx], side)
            for i, im in zip(idx, images, strict=True):
                found[i] = (im, {"scores": {}})
            done += len(idx)
            tick(done)

        # scores, per detector (by content) and label, cached with the image
        def score_key(j: Job) -> str:
            return f"{self.detector_key(c.detector_for(j.group))}:{j.label}"

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

    def _generate_batch(self, pipe, prompts: list[str], seeds: list[int], side: str):
        """One batch; with ``batch_size: auto`` an out-of-memory error halves the batch and the
        same images are made again in smaller batches (the halving is kept for the rest)."""
        try:
            return self._generate(pipe, prompts, seeds)
        except OutOfMemory:
            auto = self.policy.sampler.batch_size == "auto"
            if not auto or len(prompts) == 1:
                raise
        free_device_cache(self.opts.device)
        half = max(1, len(prompts) // 2)
        self.batch_halvings.append({"side": side, "from": len(prompts), "to": half})
        self.batch_size = half
        out = []
        for i in range(0, len(prompts), half):
            out += self._generate_batch(pipe, prompts[i : i + half], seeds[i : i + half], side)
        return out

    def _generate(self, pipe, prompts: list[str], seeds: list[int]):
        from gate.generate import generate

        s = self.policy.sampler
        t0 = time.perf_counter()
        try:
            images = generate(
                pipe, prompts, seeds, steps=s.steps, guidance=s.guidance, batch_size=len(prompts),
                height=s.height, width=s.width, negative_prompt=s.negative_prompt,
            )  # fmt: skip
        except (RuntimeError, MemoryError) as e:
            if is_out_of_memory(e):
                raise OutOfMemory("generating images", self.opts.device, f"batch of {len(prompts)}") from None
            raise
        self.timings["generate"] += time.perf_counter() - t0
        self.timings["images"] += len(images)
        return images

    # -- the check -----------------------------------------------------------------------
    def run(self) -> list[ConceptResult]:
        from gate.model import apply_update

        if self.pipe is None:
            self.load()
        ckpt = self._content["checkpoint"]
        all_jobs = {c.name: jobs_for(self.policy, c) for c in self.concepts}
        base = {
            c.name: self.outcomes("baseline", {"checkpoint": ckpt}, self.pipe, c, all_jobs[c.name])
            for c in self.concepts
        }
        t0 = time.perf_counter()
        upd = apply_update(
            self.pipe, self.opts.update, lora_scale=self.opts.lora_scale, allow_pickle=self.opts.allow_pickle
        )
        self.timings["load"] += time.perf_counter() - t0
        self.identities["update"] = upd.as_dict() if upd else None
        # no update: the candidate is the baseline model, and its images are the baseline's (cache hits)
        cand_content = {"checkpoint": ckpt, "update": upd.content_key()} if upd else {"checkpoint": ckpt}
        cand = {c.name: self.outcomes("candidate", cand_content, self.pipe, c, all_jobs[c.name]) for c in self.concepts}
        orig: dict[str, list[Outcome]] = {}
        if self.opts.original:
            t0 = time.perf_counter()
            opipe, oid = self._original_pipe()
            self.timings["load"] += time.perf_counter() - t0
            self.identities["original"] = oid.as_dict()
            for c in self.concepts:
                jobs = [j for j in all_jobs[c.name] if j.group == "concept"]
                orig[c.name] = self.outcomes("original", {"checkpoint": oid.content_key()}, opipe, c, jobs)
        results = []
        for c in self.concepts:
            o = orig.get(c.name)
            rules = judge.judge_concept(c, base[c.name], cand[c.name], o, self.policy.seed)
            sides = {"baseline": base[c.name], "candidate": cand[c.name], **({"original": o} if o else {})}
            results.append(ConceptResult(c.name, rules, sides))
        return results

    def _original_pipe(self):
        """The original model for its images: read into the loaded pipeline when it is a diffusers
        folder with the same tokenizer and scheduler (one pipeline in memory); else loaded on its
        own after the candidate's pipeline is freed."""
        from gate.inplace import swap_components
        from gate.model import resolve_checkpoint
        from gate.weights import Identity, content_hash

        o = self.opts
        kind, path = resolve_checkpoint(o.original, config=o.config, allow_pickle=o.allow_pickle, flag="--original")
        ck_kind, ck_path = resolve_checkpoint(o.checkpoint, config=o.config, allow_pickle=o.allow_pickle)
        same_text = (
            kind == "folder" and ck_kind == "folder" and path is not None and ck_path is not None
            and all(content_hash(path / d) == content_hash(ck_path / d) for d in ("tokenizer", "scheduler"))
        )  # fmt: skip
        if same_text and self.pipe is not None:
            pipe = self.pipe
            if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
                pipe.unload_lora_weights()
            swap_components(pipe, path, ("unet", "text_encoder", "vae"), f"--original {o.original}")
            self.in_place_original = True
            return pipe, Identity("diffusers-folder", str(path), content_hash(path))
        self.pipe = None  # free the candidate before loading the original
        self.in_place_original = False
        return self._load_model(o.original, "--original")

    def report(self, results: list[ConceptResult], wall_s: float, prescreen: dict | None = None):
        from gate import report as R
        from gate.provenance import git_commit, library_versions

        pol = self.policy
        fails = pol.inconclusive == "fail"
        concepts = [R.ConceptReport.judged(r.name, r.rules, fails) for r in results]
        return R.Report(
            verdict=judge.verdict([x for r in results for x in r.rules], fails),
            inconclusive_counts_as=pol.inconclusive,
            inputs={
                **self.identities,
                "policy": {"path": pol.source, "name": pol.name, "version": pol.version, "sha256": pol.sha256},
            },
            reproduce=R.reproduce_line(self.opts),
            seed=pol.seed,
            sampler={
                **vars(pol.sampler),
                "batch_size_used": self.batch_size,
                **({"batch_halvings": self.batch_halvings} if self.batch_halvings else {}),
                "attention": self.attention,
            },
            device=self.opts.device,
            concepts=concepts,
            shard=list(self.opts.shard) if self.opts.shard else None,
            libraries=library_versions(),
            detectors={k: d.identity() for k, d in self.detectors.items()},
            cache=self.cache.stats(),
            timings_s={k: round(v, 2) for k, v in self.timings.items()},
            wall_time_s=round(wall_s, 2),
            finished_at=round(time.time(), 3),
            git_commit=git_commit(),
            prescreen=prescreen or None,
            pull_request=dict(self.opts.pull_request) if self.opts.pull_request else None,
        )


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


def run_check(
    opts: CheckOptions, *, progress: ProgressFactory = _no_progress, log: Log = _quiet, warn: Log = _quiet
) -> CheckOutcome:
    """Loads, pre-screens, generates, judges, decides, writes the reports and tracks. Bad input
    raises ``BadInput`` before any image; once a verdict exists, nothing after it (a report
    renderer, the tracking store) can lose it: those failures are warnings."""
    from gate import report as R

    t0 = time.perf_counter()
    check = Check(opts, progress=progress)
    check.load()
    for line in R.header_lines(check):
        log(line)
    log(f"reproduce: {R.reproduce_line(opts)}")
    from gate.prescreen import prescreen_stage

    screens = prescreen_stage(check, log)
    results = check.run()
    rep = check.report(results, time.perf_counter() - t0, screens)
    out_dir = Path(opts.report_dir)
    json_path = Path(opts.json_path) if opts.json_path else None
    R.write_reports(rep, out_dir, results=results, json_path=json_path, warn=warn)
    outcome = CheckOutcome(rep, results, out_dir)
    if opts.track:
        from gate.tracking import resolve_uri, track_after_check

        try:
            uri = resolve_uri(opts.tracking_uri)
        except Exception as e:  # an unusable default store folder must not cost the verdict either
            warn(f"warning: MLflow tracking failed ({type(e).__name__}: {e}); the verdict stands")
            return outcome
        outcome.tracked = track_after_check(rep, out_dir, uri=uri, model_line=opts.model_line, warn=warn)
    return outcome
