"""What the study's tables say about a cell beyond its rows: R across fine-tuning seeds (the median
seed, the spread), and whether an erasure removed its concept at all (``weak_erasure``) and so
which concepts give the headline rows.

A cell is one (method with its erasure tag, concept, fine-tune, factor level); measured at one step
it has one record per fine-tuning seed (``table``'s records, whose ``seed`` is None for rows of
the single-seed studies: the study's ``seed``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

WEAK = "removed < half"


def weak_erasure(a_orig: float, a_unl: float) -> bool:
    """The erasure removed less than half of the concept: A_orig - A_unl < A_orig / 2. R divides
    by that small effect, so such a cell says little about resurgence."""
    return (a_orig - a_unl) < 0.5 * a_orig


def seed_or(r: dict[str, Any], default: int) -> int:
    """A record's fine-tuning seed, ``default`` (the study's seed) where its row does not say."""
    return default if r.get("seed") is None else int(r["seed"])


def study_seeds(recs: Iterable[dict[str, Any]], finetune_seeds: list[int], default: int) -> tuple[list[int], int]:
    """The fine-tuning seeds measured, and the first one (the study's first ``finetune_seeds``
    where it was measured: the seed whose intermediate checkpoints were measured)."""
    seeds = sorted({seed_or(r, default) for r in recs if r["stage"] == "finetuned"})
    first = finetune_seeds[0] if finetune_seeds and finetune_seeds[0] in seeds else (seeds or [default])[0]
    return seeds, first


def cells(recs: Iterable[dict[str, Any]], stage: str = "finetuned") -> dict[tuple, list[dict[str, Any]]]:
    """The records of ``stage`` by cell and step: (concept, tag, fine-tune, factor, level, step)
    -> one record per seed."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in recs:
        if r["stage"] == stage:
            key = (r["concept"], r.get("tag", r["method"]), r["finetune"], r["factor"], r["level"], r["step"])
            out.setdefault(key, []).append(r)
    return out


def final_steps(recs: Iterable[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Each cell at its last measured step (the full fine-tune): one record per seed there."""
    last: dict[tuple, tuple[int, list[dict[str, Any]]]] = {}
    for key, group in cells(recs).items():
        if key[:5] not in last or key[5] > last[key[:5]][0]:
            last[key[:5]] = (key[5], group)
    return {k: g for k, (_, g) in last.items()}


def seed_summary(group: list[dict[str, Any]], default_seed: int = 0) -> dict[str, Any]:
    """R across the fine-tuning seeds of one cell at one step.

    ``recs``: the records by seed; ``median``: the record of the median seed (the seed whose R is
    the median; of an even number, the lower of the two middle ones; ties by seed), whose R and
    bootstrap interval are R within one fine-tune; ``min``, ``max``: the spread of R across seeds;
    ``sd``: their sample standard deviation, from three seeds on (else None)."""
    recs = sorted(group, key=lambda r: seed_or(r, default_seed))
    scored = sorted((r for r in recs if r.get("R") is not None), key=lambda r: (r["R"], seed_or(r, default_seed)))
    rs = [float(r["R"]) for r in scored]
    return {
        "recs": recs,
        "median": scored[(len(scored) - 1) // 2] if scored else recs[0],
        "min": min(rs) if rs else None,
        "max": max(rs) if rs else None,
        "sd": statistics.stdev(rs) if len(rs) >= 3 else None,
    }


def headline_concepts(recs: Iterable[dict[str, Any]]) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The concepts whose erasures mostly removed them (more than half of the grid's methods not
    weak), and for every concept (weak erasures, methods) among the grid's unlearned models."""
    count: dict[str, list[int]] = {}
    for r in recs:
        if r["stage"] == "unlearned" and not r["factor"] and r.get("weak_erasure") is not None:
            c = count.setdefault(r["concept"], [0, 0])
            c[0] += bool(r["weak_erasure"])
            c[1] += 1
    weak = {k: (v[0], v[1]) for k, v in sorted(count.items())}
    return [k for k, (w, n) in weak.items() if 2 * w < n], weak
