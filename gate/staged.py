"""A check in stages (``stopping: sequential``): as few images as each decision needs.

    stage k: for every concept still open, the next ``stage_samples`` samples of every prompt of
             the groups its open rules need (concept, incidental, retained prompts)
             -> baseline and candidate images (and the original's, for the concept prompts,
                while R is open), same seeds as a fixed run's images of those indices
             -> every open rule judged on all its images so far (``gate.judge_seq``)
    a concept stops when all its rules are decided, or at ``max_samples`` per prompt (its open
    rules are then inconclusive; R not applicable if the erasure's effect never showed).

One pipeline is held, as in the fixed path, so going from one model to another is a move:
baseline -> candidate applies the update (a LoRA is loaded once, then only enabled and
disabled); candidate -> original reads the original's weights in place (``check_parts.original_pipe``);
-> baseline from the original, or from a full update, reads the checkpoint's weights back in
place. Each stage visits the models starting from the one it holds, so a stage costs at most
two weight reads. Their time is the report's ``timings_s.stage_moves``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gate import judge_seq
from gate.check_parts import ConceptResult, Outcome, original_pipe
from gate.errors import BadInput
from gate.judge import FAIL, PASS, RuleResult
from gate.policy import ConceptPolicy
from gate.probes import jobs_for

CYCLE = ("baseline", "candidate", "original")


class Sides:
    """Which model the check's one pipeline holds, and the moves between them."""

    def __init__(self, check) -> None:
        self.check = check
        self.side = "baseline"  # the check has just loaded the unlearned model
        self.lora = False  # the update is a LoRA that is loaded (enabled only on the candidate side)
        self.update_content: dict[str, Any] | None = None
        self.original_content: dict[str, Any] | None = None
        self.original = None  # the original's pipeline when it is not the check's own

    @property
    def pipe(self):
        return self.original if self.side == "original" and self.original is not None else self.check.pipe

    def content(self, side: str) -> dict[str, Any]:
        ck = self.check._content["checkpoint"]
        if side == "baseline":
            return {"checkpoint": ck}
        if side == "candidate":
            return self.update_content or {"checkpoint": ck}
        return self.original_content or {}

    def order(self, want_original: bool) -> list[str]:
        """The sides a stage visits, starting with the one held (one move fewer)."""
        sides = [s for s in CYCLE if s != "original" or want_original]
        start = sides.index(self.side) if self.side in sides else 0
        return sides[start:] + sides[:start]

    def to(self, side: str) -> None:
        if side == self.side:
            return
        t0 = time.perf_counter()
        if side == "original":
            self._to_original()
        else:
            if self.side == "original":
                self._restore()
            elif self.side == "candidate":  # -> baseline
                self._leave_candidate()
            if side == "candidate":
                self._apply()
        self.check.timings["stage_moves"] += time.perf_counter() - t0
        self.side = side

    def _apply(self) -> None:
        from gate.model import apply_update

        c, o = self.check, self.check.opts
        if self.lora:
            c.pipe.enable_lora()
            return
        upd = apply_update(c.pipe, o.update, lora_scale=o.lora_scale, allow_pickle=o.allow_pickle)
        if upd is not None:
            c.identities["update"] = upd.as_dict()
            self.update_content = {"checkpoint": c._content["checkpoint"], "update": upd.content_key()}
            self.lora = upd.kind == "lora"
        else:
            c.identities.setdefault("update", None)

    def _leave_candidate(self) -> None:
        if self.lora:
            self.check.pipe.disable_lora()
        elif self.check.opts.update:
            self._restore()

    def _to_original(self) -> None:
        c = self.check
        pipe, oid = original_pipe(c)  # in place (one pipeline) or, for a single file, its own
        self.lora = False
        self.original = None if c.in_place_original else pipe
        c.identities["original"] = oid.as_dict()
        self.original_content = {"checkpoint": oid.content_key()}

    def _restore(self) -> None:
        """The unlearned model back: its weights read in place, or the pipeline loaded again."""
        from gate.inplace import pipeline_folder, swap_components

        c, o = self.check, self.check.opts
        if self.lora and c.pipe is not None:
            c.pipe.unload_lora_weights()
            self.lora = False
        folder = pipeline_folder(o.checkpoint, config=o.config, allow_pickle=o.allow_pickle)
        if c.pipe is not None and folder is not None:
            swap_components(c.pipe, folder, ("unet", "text_encoder", "vae"), f"--checkpoint {o.checkpoint}")
        else:
            self.original = None
            c.pipe, _ = c._load_model(o.checkpoint, "--checkpoint")


@dataclass
class ConceptRun:
    """One concept's images so far and its rules' decisions."""

    c: ConceptPolicy
    most: int  # samples per prompt at most
    has_original: bool
    samples: int = 0  # samples per prompt made (for the groups still open)
    stages: int = 0
    decided: dict[str, RuleResult] = field(default_factory=dict)
    outs: dict[str, list[Outcome]] = field(default_factory=lambda: {"baseline": [], "candidate": [], "original": []})

    @property
    def open_rules(self) -> list[str]:
        return [r for r in self.c.rules if r not in self.decided]

    @property
    def done(self) -> bool:
        return not self.open_rules

    def wants_original(self) -> bool:
        return self.has_original and "max_resurgence" in self.open_rules

    def next_jobs(self, policy, stage_samples: int):
        groups = judge_seq.groups_needed(self.open_rules)
        stop = min(self.samples + stage_samples, self.most)
        jobs = jobs_for(policy, self.c, range(self.samples, stop), groups)
        self.samples = stop
        return jobs

    def judge(self, alpha: float, until: str = "all") -> None:
        self.stages += 1
        final = self.samples >= self.most
        orig = self.outs["original"] if self.has_original else None

        def look(rules: list[str], final: bool) -> list[RuleResult]:
            return judge_seq.judge_open(
                self.c, rules, self.outs["baseline"], self.outs["candidate"], orig,
                alpha=alpha, stage=self.stages, final=final,
            )  # fmt: skip

        for r in look(self.open_rules, final):
            if r.verdict != judge_seq.OPEN:
                self.decided[r.rule] = r
        failed = [r.rule for r in self.decided.values() if r.verdict == FAIL]
        if until == "verdict" and failed and self.open_rules:  # the concept fails whatever the rest say
            why = f"stopped undecided: the concept had failed on {', '.join(failed)} (stopping.until: verdict)"
            for r in look(self.open_rules, True):
                r.note = f"{why}; {r.note}"
                self.decided[r.rule] = r

    def result(self, stopping) -> ConceptResult:
        rules = [self.decided[r] for r in self.c.rules]
        info = {
            **stopping.describe(self.c.samples_per_prompt),
            "stages": self.stages,
            "samples_per_prompt_used": self.samples,
            "images": {k: len(v) for k, v in self.outs.items() if v or k != "original"},
            "decided_at_stage": {r.rule: r.stage for r in rules if r.verdict in (PASS, FAIL)},
        }
        sides = {k: v for k, v in self.outs.items() if v}
        return ConceptResult(self.c.name, rules, sides, stopping=info)


def run_staged(check, screen, log) -> list[ConceptResult]:
    """The check's images and rules in stages; ``screen`` is the check's pre-screen (report
    only), run at its usual points: the unlearned model first, the candidate and the original
    once the stages are done."""
    pol = check.policy
    st = pol.stopping
    if check.procs.split:
        raise BadInput("stopping: sequential runs in one process; use stopping: fixed to split a check across devices")
    sides = Sides(check)
    screen.unlearned()
    runs = [ConceptRun(c, st.max_for(c.samples_per_prompt), bool(check.opts.original)) for c in check.concepts]
    stage = 0
    while any(not r.done for r in runs):
        stage += 1
        live = [r for r in runs if not r.done]
        jobs = {r.c.name: r.next_jobs(pol, st.stage_samples) for r in live}
        for side in sides.order(any(r.wants_original() for r in live)):
            sides.to(side)
            for r in live:
                js = jobs[r.c.name]
                if side == "original":
                    js = [j for j in js if j.group == "concept"] if r.wants_original() else []
                if js:
                    r.outs[side] += check.outcomes(side, sides.content(side), sides.pipe, r.c, js)
        for r in live:
            r.judge(st.alpha, st.until)
        log(f"stage {stage}: {sum(r.done for r in runs)} of {len(runs)} concepts decided")
    if screen.sc is not None and check.opts.update and check.opts.original:
        sides.to("candidate")
        screen.candidate()
        sides.to("original")
        screen.original(sides.pipe)
    return [r.result(st) for r in runs]
