"""Per attack, each side's images and the concept's detection rate among them: the report's
breakdown of the pooled ``max_attack_*`` rules (torch-free)."""

from __future__ import annotations

from typing import Any


def attack_rates(outcomes: dict[str, list]) -> dict[str, dict[str, Any]]:
    """Per attack: images and the concept's detection rate on each side (the report's breakdown
    of the pooled ``max_attack_*`` rules)."""
    out: dict[str, dict[str, Any]] = {}
    for side, outs in outcomes.items():
        for o in outs:
            if o.job.group != "attack":
                continue
            name = dict(o.job.attack).get("attack", "?")
            d = out.setdefault(name, {}).setdefault(side, [0, 0])
            d[0] += int(o.present)
            d[1] += 1
    return {
        name: {side: {"images": n, "success": round(k / n, 4)} for side, (k, n) in sides.items()}
        for name, sides in out.items()
    }
