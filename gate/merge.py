"""``gate merge``: one verdict from the reports of ``gate check --shard i/n`` runs.

Shards split the concepts, never a concept's images, and every image seed derives from the
policy seed, the concept and the prompt and sample indices; so the merged figures are exactly
those of an unsharded run. The merge refuses reports that do not belong together (other
inputs, policy, seed or sampler; a missing or repeated shard), since a verdict assembled
from mismatched runs would look valid and mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from gate.errors import BadInput
from gate.judge import verdict
from gate.report.model import Report, load_report

# fields that must agree across shards for the merge to mean anything
SAME = ("inputs", "seed", "sampler", "inconclusive_counts_as", "report_version", "pull_request")

load = load_report  # kept: ``gate track`` and ``gate annotate`` read reports through it


def merge(reports: list[Report], sources: list[str]) -> Report:
    if not reports:
        raise BadInput("gate merge: give at least one shard report")
    first = reports[0]
    for rep, src in zip(reports[1:], sources[1:], strict=True):
        for key in SAME:
            if getattr(rep, key) != getattr(first, key):
                raise BadInput(
                    f"{src}: its {key!r} differs from {sources[0]}'s; these reports are not shards of one run"
                )
    shards = [tuple(r.shard) if r.shard else None for r in reports]
    if any(s is None for s in shards):
        bad = sources[shards.index(None)]
        raise BadInput(f"{bad}: not a shard report (run gate check with --shard i/n)")
    totals = {s[1] for s in shards if s}
    if len(totals) != 1:
        raise BadInput(f"shard reports disagree on the number of shards: {sorted(totals)}")
    n = totals.pop()
    seen = sorted(s[0] for s in shards if s)
    if seen != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(seen))
        dup = sorted({i for i in seen if seen.count(i) > 1})
        raise BadInput(f"shards of {n}: missing {missing or 'none'}, repeated {dup or 'none'}")
    concepts = sorted((c for r in reports for c in r.concepts), key=lambda c: c.name)
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        raise BadInput("a concept appears in two shards; were the shards run with different policies?")
    timings: dict[str, float] = {}
    for r in reports:
        for k, v in r.timings_s.items():
            timings[k] = round(timings.get(k, 0.0) + v, 2)
    screens = {k: v for r in reports for k, v in (r.prescreen or {}).items()}
    warnings = list(first.warnings)
    if len({json.dumps(r.libraries, sort_keys=True) for r in reports}) > 1:
        warnings.append("shards ran with different library versions")
    return dataclasses.replace(
        first,
        verdict=verdict([x for c in concepts for x in c.rules], first.inconclusive_fails),
        concepts=concepts,
        shard=None,
        reproduce=first.reproduce.rsplit(" --shard ", 1)[0],
        merged_from=[_provenance(r, s, sh) for r, s, sh in zip(reports, sources, shards, strict=True)],
        cache={k: sum(r.cache.get(k, 0) for r in reports) for k in ("hits", "misses")},
        timings_s=timings,
        wall_time_s=max(r.wall_time_s for r in reports),
        finished_at=max(r.finished_at for r in reports),
        prescreen=screens or None,
        warnings=warnings,
    )


def _provenance(r: Report, source: str, shard: tuple | None) -> dict:
    return {"source": source, "shard": list(shard) if shard else None, "verdict": r.verdict,
            "libraries": r.libraries, "device": r.device, "wall_time_s": r.wall_time_s}  # fmt: skip


def copy_images(sources: list[Path], out_dir: Path) -> int:
    """Copies each shard's images/ next to the merged report (names carry the concept)."""
    dst = out_dir / "images"
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for src in sources:
        folder = src.parent / "images"
        if folder.is_dir():
            for f in folder.glob("*.png"):
                shutil.copy2(f, dst / f.name)
                n += 1
    return n
