"""Attack probes in a concept's policy: typed configs, read from YAML data (torch-free, like
the rest of the policy).

    attacks:
      noise_probe: {etas: [1.3, 1.6, 1.9], variance_scales: [0.98, 1.0, 1.02], samples: 1}
    rules: {max_attack_success: 0.3, max_attack_increase: 0.1}

Each attack turns into probe jobs of the group ``attack`` (``jobs``): the same prompts, seeds and
settings for the unlearned baseline and the candidate, so that ``max_attack_increase`` is paired
like ``max_increase_over_baseline``. A job's settings are part of its image's cache key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NOISE_KEYS = {"etas", "variance_scales", "samples", "prompts"}


@dataclass(frozen=True)
class NoiseProbeConfig:
    """DDIM sampling with its noise overloaded (eta above 1, the added noise scaled), the
    training-free probe of Lu et al. 2025, "When Are Concepts Erased From Diffusion Models?"
    (their grid: eta 1.3-1.9, variance scale 0.97-1.04). ``prompts``: default the concept's."""

    etas: tuple[float, ...] = (1.3, 1.6, 1.9)
    variance_scales: tuple[float, ...] = (0.98, 1.0, 1.02)
    samples: int = 1
    prompts: tuple[str, ...] | None = None

    name = "noise_probe"

    def settings(self) -> list[tuple[tuple[str, Any], ...]]:
        """One job setting per grid point, as hashable (key, value) pairs."""
        return [
            (("attack", self.name), ("eta", float(e)), ("variance_scale", float(v)))
            for e in self.etas
            for v in self.variance_scales
        ]

    def images_per_prompt(self) -> int:
        return len(self.etas) * len(self.variance_scales) * self.samples


ATTACK_CONFIGS: dict[str, Any] = {"noise_probe": NoiseProbeConfig}


def parse_attacks(at: str, raw: Any, error: type[Exception], expect, check_keys, strings) -> dict[str, Any]:
    """A concept's ``attacks:`` mapping as typed configs; ``expect``/``check_keys``/``strings``
    are the policy module's own checkers, so errors read like every other policy error."""
    if raw is None:
        return {}
    expect(f"{at}.attacks", raw, dict, "a mapping of attack names to settings")
    check_keys(f"{at}.attacks", raw, set(ATTACK_CONFIGS))
    out: dict[str, Any] = {}
    for name, cfg in raw.items():
        where = f"{at}.attacks.{name}"
        cfg = cfg or {}
        expect(where, cfg, dict, "a mapping of settings")
        if name == "noise_probe":
            check_keys(where, cfg, NOISE_KEYS)
            d = NoiseProbeConfig()
            grids = {}
            for key, lo, hi in (("etas", 0.0, 5.0), ("variance_scales", 0.5, 2.0)):
                values = cfg.get(key, list(getattr(d, key)))
                expect(f"{where}.{key}", values, list, "a list of numbers")
                if not values:
                    raise error(f"{where}.{key}: give at least one value")
                for i, v in enumerate(values):
                    expect(f"{where}.{key}[{i}]", v, (int, float), "a number")
                    if not lo <= v <= hi:
                        raise error(f"{where}.{key}[{i}]: {v} is outside [{lo}, {hi}]")
                grids[key] = tuple(float(v) for v in values)
            samples = expect(f"{where}.samples", cfg.get("samples", d.samples), int, "a whole number")
            if samples < 1:
                raise error(f"{where}.samples: at least 1")
            prompts = strings(f"{where}.prompts", cfg["prompts"]) if "prompts" in cfg else None
            if prompts is not None and not prompts:
                raise error(f"{where}.prompts: give at least one prompt (or leave it out for the concept's)")
            out[name] = NoiseProbeConfig(grids["etas"], grids["variance_scales"], samples, prompts)
    return out
