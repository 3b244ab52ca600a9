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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate import judge
from gate.cache import ImageCache, make_key
from gate.check_parts import (
    SCHEDULERS,
    CheckOutcome,
    ConceptResult,
    Outcome,
    attention_processor,
    original_pipe,
    select_concepts,
)
from gate.errors import BadInput, InternalError
from gate.policy import AUTO_BATCH_START, ConceptPolicy, DetectorSpec, load_policy
from gate.probes import Job, jobs_for

Tick = Callable[[int], None]
ProgressFactory = Callable[[str, int], Tick]
Log = Callable[[str], None]


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


def _no_progress(name: str, total: int) -> Tick:
    return lambda n: None


def _quiet(message: str) -> None:
    return None


class Check:
    """The stages of one check; ``run_check`` drives them (benchmarks may drive them one by one)."""

    def __init__(self, opts: CheckOptions, progress: ProgressFactory = _no_progress) -> None:
        if not opts.policy:
            raise BadInput("a check needs a policy (--policy)")
        from gate.distributed import current

        self.procs = current(opts.device)
        if self.procs.split:
            opts.device = self.procs.device(opts.device)
            if not opts.cache_dir:
                raise BadInput(
                    "a check split across processes exchanges its images through the cache: give --cache-dir"
                )
            if not self.procs.is_main:
                progress = _no_progress
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
        self.screens: dict[str, Any] = {}  # the pre-screen's scores (report only)
        self.in_place_original = False
        from gate.attacks.runtime import AttackRuntime

        self.attacks = AttackRuntime(self)  # learned attacks: targets, per-side learning, evidence

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
        self.attacks.preflight()
        for c in self.concepts:  # detectors load (and their labels are checked) before any generation
            self.detector(c.detector).check_label(c.name)
            if c.incidental_prompts:
                self.detector(c.detector_for("incidental")).check_label(c.name)
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
        parts = {
            "model": side_content,
            "prompt": job.prompt,
            "seed": job.seed,
            "sampler": vars(self.policy.sampler),
            "device": self.opts.device,
            "versions": {k: versions[k] for k in ("torch", "diffusers", "transformers", "peft")},
        }
        if job.attack:  # an attack probe's image: its settings (and a learned attack's targets) decide it too
            parts["attack"] = dict(job.attack)
            parts.update(self.attacks.key_parts(job))
        return make_key(parts)

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
        # the batches a single process would make (one attack setting each); split runs deal whole
        # batches round-robin, so every image is made in the same batch (bit-identical images)
        by_setting: dict[tuple, list[int]] = defaultdict(list)
        for i in todo:
            by_setting[jobs[i].attack].append(i)
        bs = self.batch_size
        batches = [ix[k : k + bs] for ix in by_setting.values() for k in range(0, len(ix), bs)]
        done = 0
        with self.attacks.generating(side, side_content, pipe, c, [jobs[i] for i in todo]) as around:
            for idx in self.procs.share(batches) if self.procs.split else batches:
                prompts, seeds = [jobs[i].prompt for i in idx], [jobs[i].seed for i in idx]
                with around(jobs[idx[0]].attack):
                    images = self._generate_batch(pipe, prompts, seeds, side, jobs[idx[0]].attack)
                for i, im in zip(idx, images, strict=True):
                    found[i] = (im, {"scores": {}})
                    if self.procs.split:
                        self.cache.put(keys[i], im, found[i][1])
                done += len(idx)
                tick(done * (self.procs.world if self.procs.split else 1))
        if self.procs.split:
            self.procs.barrier()  # every process's share is in the cache now
            if not self.procs.is_main:
                return []
            for i in todo:
                got = self.cache.get(keys[i])
                if got is None:
                    raise InternalError(f"image {keys[i][:12]} of another process is missing from the cache")
                found[i] = got

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

    def _generate_batch(self, pipe, prompts: list[str], seeds: list[int], side: str, attack: tuple = ()):
        from gate.check_images import generate_batch

        return generate_batch(self, pipe, prompts, seeds, side, attack)

    # -- the check -----------------------------------------------------------------------
    def run(self, log: Log = _quiet) -> list[ConceptResult]:
        from gate.model import apply_update
        from gate.prescreen import CheckScreen

        if self.pipe is None:
            self.load()
        self.attacks.prepare_targets()  # a learned attack's targets (the original's images), before any side learns
        if self.policy.stopping.sequential:
            from gate.staged import run_staged

            screen = CheckScreen(self, log)
            staged = run_staged(self, screen, log)
            self.screens = screen.result()
            return staged
        ckpt = self._content["checkpoint"]
        all_jobs = {c.name: jobs_for(self.policy, c) for c in self.concepts}
        base = {
            c.name: self.outcomes("baseline", {"checkpoint": ckpt}, self.pipe, c, all_jobs[c.name])
            for c in self.concepts
        }
        screen = CheckScreen(self, log)
        screen.unlearned()
        t0 = time.perf_counter()
        upd = apply_update(
            self.pipe, self.opts.update, lora_scale=self.opts.lora_scale, allow_pickle=self.opts.allow_pickle
        )
        self.timings["load"] += time.perf_counter() - t0
        self.identities["update"] = upd.as_dict() if upd else None
        # no update: the candidate is the baseline model, and its images are the baseline's (cache hits)
        cand_content = {"checkpoint": ckpt, "update": upd.content_key()} if upd else {"checkpoint": ckpt}
        cand = {c.name: self.outcomes("candidate", cand_content, self.pipe, c, all_jobs[c.name]) for c in self.concepts}
        screen.candidate()
        orig: dict[str, list[Outcome]] = {}
        if self.opts.original:
            t0 = time.perf_counter()
            opipe, oid = original_pipe(self)
            self.timings["load"] += time.perf_counter() - t0
            self.identities["original"] = oid.as_dict()
            screen.original(opipe)
            for c in self.concepts:
                jobs = [j for j in all_jobs[c.name] if j.group == "concept"]
                orig[c.name] = self.outcomes("original", {"checkpoint": oid.content_key()}, opipe, c, jobs)
        self.screens = screen.result()
        if not self.procs.is_main:
            return []  # the main process judges
        results = []
        for c in self.concepts:
            o = orig.get(c.name)
            rules = judge.judge_concept(c, base[c.name], cand[c.name], o, self.policy.seed)
            sides = {"baseline": base[c.name], "candidate": cand[c.name], **({"original": o} if o else {})}
            results.append(ConceptResult(c.name, rules, sides))
        return results

    def report(self, results: list[ConceptResult], wall_s: float, prescreen: dict | None = None):
        from gate.check_parts import build_report

        return build_report(self, results, wall_s, prescreen)


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
    results = check.run(log)
    if not check.procs.is_main:
        return CheckOutcome(None, [], Path(opts.report_dir))  # this process made its share of the images
    out_dir = Path(opts.report_dir)
    check.attacks.write_evidence(out_dir)  # the learned embeddings beside the report (named in it)
    rep = check.report(results, time.perf_counter() - t0, check.screens)
    json_path = Path(opts.json_path) if opts.json_path else None
    if opts.track:  # the model line's latest certificate (gate certify), linked from the report
        from gate.certify.track import certificate_link

        rep.certificate = certificate_link(rep, opts.model_line, opts.tracking_uri, warn)
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
