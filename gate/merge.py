"""``gate merge``: one verdict from the reports of ``gate check --shard i/n`` runs.

Shards split the concepts, never a concept's images, and every image seed derives from the
policy seed, the concept and the prompt and sample indices; so the merged figures are exactly
those of an unsharded run. The merge refuses reports that do not belong together (other
inputs, policy, seed or sampler; a missing or repeated shard), since a verdict assembled
from mismatched runs would look valid and mean nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gate.errors import BadInput

# fields that must agree across shards for the merge to mean anything
SAME = ("inputs", "seed", "sampler", "inconclusive_counts_as", "report_version")


def load(path: Path) -> dict[str, Any]:
    try:
        rep = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not a JSON report ({e})") from None
    if not isinstance(rep, dict) or "concepts" not in rep or "verdict" not in rep:
        raise BadInput(f"{path}: not a gate report (no verdict/concepts)")
    return rep


def overall_from_dicts(rules: list[dict[str, Any]], inconclusive_fails: bool) -> str:
    """The same decision as ``gate.judge.overall``, on rules read back from JSON."""
    from types import SimpleNamespace

    from gate.judge import overall

    items: list = [SimpleNamespace(verdict=r["verdict"]) for r in rules if r["verdict"] != "skipped"]
    return overall(items, inconclusive_fails)


def merge(reports: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    if not reports:
        raise BadInput("gate merge: give at least one shard report")
    first = reports[0]
    for rep, src in zip(reports[1:], sources[1:], strict=True):
        for key in SAME:
            if rep.get(key) != first.get(key):
                raise BadInput(
                    f"{src}: its {key!r} differs from {sources[0]}'s; these reports are not shards of one run"
                )
    shards = [tuple(r["shard"]) if r.get("shard") else None for r in reports]
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
    concepts = sorted((c for r in reports for c in r["concepts"]), key=lambda c: c["name"])
    names = [c["name"] for c in concepts]
    if len(set(names)) != len(names):
        raise BadInput("a concept appears in two shards; were the shards run with different policies?")
    rules = [r for c in concepts for r in c["rules"]]
    verdict = overall_from_dicts(rules, first["inconclusive_counts_as"] == "fail")
    merged = {k: v for k, v in first.items() if k not in ("concepts", "shard", "cache", "timings_s", "verdict")}
    merged["reproduce"] = first["reproduce"].rsplit(" --shard ", 1)[0]
    merged.update(
        verdict=verdict,
        concepts=concepts,
        shard=None,
        merged_from=[
            {
                "source": s,
                "shard": list(sh) if sh else None,
                "verdict": r["verdict"],
                "libraries": r.get("libraries"),
                "device": r.get("device"),
                "wall_time_s": r.get("wall_time_s"),
            }
            for r, s, sh in zip(reports, sources, shards, strict=True)
        ],
        cache={k: sum(r.get("cache", {}).get(k, 0) for r in reports) for k in ("hits", "misses")},
        timings_s={},
        wall_time_s=max(r.get("wall_time_s", 0.0) for r in reports),
        finished_at=max(r.get("finished_at", 0.0) for r in reports),
    )
    screens = {k: v for r in reports for k, v in (r.get("prescreen") or {}).items()}
    if screens:
        merged["prescreen"] = screens
    for r in reports:
        for k, v in (r.get("timings_s") or {}).items():
            merged["timings_s"][k] = round(merged["timings_s"].get(k, 0.0) + v, 2)
    libs = {json.dumps(r.get("libraries"), sort_keys=True) for r in reports}
    if len(libs) > 1:
        merged["warnings"] = [*merged.get("warnings", []), "shards ran with different library versions"]
    return merged


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
