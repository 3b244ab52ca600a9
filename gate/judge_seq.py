"""The rules judged with anytime-valid intervals, for ``stopping: sequential`` (pure functions).

After every stage, each rule still open is judged on all the images made so far with its
confidence sequence (``gate.sequential``), which holds at every look at once, so stopping the
moment a rule is decided keeps its error rate at the policy's ``stopping.alpha``:

* rates (``max_presence_rate``, ``max_incidental_rate``, ``min_retained_fidelity``): the
  beta-binomial mixture sequence;
* ``max_increase_over_baseline``: the betting sequence on the same-seed pairs' differences;
* ``max_resurgence``: the union of the three rates' sequences at alpha / 3; it is judged only once
  the erasure's own effect is established (the original's lower bound above the unlearned
  model's upper one), and is ``not applicable`` if that never happens.

A rule is passed or failed as soon as its interval clears the threshold; at the concept's last
stage a rule still open is inconclusive (or not applicable). ``OPEN`` never reaches a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gate.judge import (
    FAIL,
    GROUP_OF_RULE,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    PASS,
    RuleResult,
    decide,
    worst_examples,
)
from gate.policy import RULES, ConceptPolicy

OPEN = "open"
GROUP_OF = {rule: GROUP_OF_RULE.get(rule, "concept") for rule in RULES}
_MIXTURE = "beta-binomial mixture confidence sequence (Jeffreys prior)"
_BETTING = "betting confidence sequence on same-seed pairs (Waudby-Smith & Ramdas 2023)"
PAIRED = ("max_increase_over_baseline", "max_attack_increase")
METHOD = {rule: _BETTING if rule in PAIRED else _MIXTURE for rule in RULES}
METHOD["max_resurgence"] = "union of the three rates' mixture sequences at alpha/3"


def _group(outs: Sequence[Any], g: str) -> list[Any]:
    return [o for o in outs if o.job.group == g]


def _hits(outs: Sequence[Any]) -> list[bool]:
    return [bool(o.present) for o in outs]


def _rate(outs: Sequence[Any]) -> float | None:
    return sum(_hits(outs)) / len(outs) if outs else None


def judge_open(
    c: ConceptPolicy,
    rules: Sequence[str],
    base: Sequence[Any],
    cand: Sequence[Any],
    orig: Sequence[Any] | None,
    *,
    alpha: float,
    stage: int,
    final: bool,
) -> list[RuleResult]:
    """The rules ``rules`` of concept ``c`` on the outcomes so far: each passed, failed, or
    ``OPEN`` (``final``: inconclusive, or not applicable for R). ``orig`` None: R is skipped."""
    from gate import sequential as S

    out = []
    for rule in rules:
        thr = c.rules[rule]
        g = GROUP_OF[rule]
        bg, cg = _group(base, g), _group(cand, g)
        hits = _hits(cg)
        note = f"anytime-valid: {METHOD[rule]}, alpha {alpha:g}"
        extra: dict[str, Any] = {"baseline": _rate(bg)}
        if rule in PAIRED:
            b = S.paired_increase_cs(_hits(bg), hits, alpha)
        elif rule == "max_resurgence":
            if orig is None:
                out.append(RuleResult.skipped(c.name, rule, thr, "needs --original (the model before unlearning)"))
                continue
            og = _group(orig, "concept")
            b, why = S.resurgence_cs(
                (sum(_hits(og)), len(og)), (sum(_hits(bg)), len(bg)), (sum(hits), len(hits)), alpha
            )
            extra["original"] = _rate(og)
            if why:
                note = f"{why}; {note}"
        else:
            b = S.rate_cs(sum(hits), len(hits), alpha)
        if rule == "max_resurgence" and b.low != b.low:  # NaN: the erasure's effect is not (yet) established
            verdict = NOT_APPLICABLE if final else OPEN
        else:
            verdict = decide(RULES[rule][0], b.low, b.high, thr)
            if verdict == INCONCLUSIVE and not final:
                verdict = OPEN
        r = RuleResult(c.name, rule, thr, b.value, b.low, b.high, verdict, len(hits), note=note, **extra)
        if verdict in (PASS, FAIL) or final:
            r.stage = stage
            r.worst = worst_examples(rule, base, cand)
        out.append(r)
    return out


def groups_needed(open_rules: Sequence[str]) -> set[str]:
    """The prompt groups whose images the open rules still need."""
    return {GROUP_OF[r] for r in open_rules}
