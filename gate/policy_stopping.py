"""The policy's ``stopping:`` block: how many images a check makes per concept.

    stopping:
      method: sequential     # or fixed (the default): every concept gets samples_per_prompt
      stage_samples: 1       # samples per prompt added in each stage (every stage covers every prompt)
      max_samples: 32        # per prompt, at most (default: 4 x the concept's samples_per_prompt)
      alpha: 0.05            # each rule's error rate, valid at every look (gate.sequential)
      until: all             # or verdict: a concept stops once a rule has failed (it fails whatever
                             # the rest say; its open rules are reported inconclusive, as stopped)

With ``sequential``, images come in stages; after each stage every rule is judged with its
anytime-valid confidence sequence and is passed, failed or left open; a concept stops when all
its rules are decided or ``max_samples`` is reached (its open rules are then inconclusive).
The default maximum, 4 x the fixed n, is the one the simulation supports (docs/sequential.md:
at 2 x a rate at half the threshold is inconclusive about as often as at fixed n; at 4 x far
less often). Torch-free, like the rest of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STOPPING_KEYS = {"method", "stage_samples", "max_samples", "alpha", "until"}
UNTIL = ("all", "verdict")
METHODS = ("fixed", "sequential")
DEFAULT_MAX_FACTOR = 4


@dataclass(frozen=True)
class Stopping:
    method: str = "fixed"
    stage_samples: int = 1
    max_samples: int | None = None  # None: DEFAULT_MAX_FACTOR x samples_per_prompt
    alpha: float = 0.05
    until: str = "all"  # or "verdict"

    @property
    def sequential(self) -> bool:
        return self.method == "sequential"

    def max_for(self, samples_per_prompt: int) -> int:
        """The most samples per prompt a concept may use."""
        return self.max_samples if self.max_samples is not None else DEFAULT_MAX_FACTOR * samples_per_prompt

    def describe(self, samples_per_prompt: int) -> dict[str, Any]:
        if not self.sequential:
            return {"method": "fixed", "samples_per_prompt": samples_per_prompt}
        return {
            "method": "sequential",
            "stage_samples": self.stage_samples,
            "max_samples": self.max_for(samples_per_prompt),
            "alpha": self.alpha,
            "until": self.until,
        }


def parse_stopping(where: str, raw: Any, error: type[Exception], check_keys, expect) -> Stopping:
    """``raw`` (the YAML mapping) as a ``Stopping``; ``check_keys``/``expect`` are the policy
    module's own checkers, so errors read like every other policy error."""
    at = f"{where}: stopping"
    expect(at, raw, dict, "a mapping (method, stage_samples, max_samples, alpha, until)")
    check_keys(at, raw, STOPPING_KEYS)
    d = Stopping()
    method = raw.get("method", d.method)
    if method not in METHODS:
        raise error(f"{at}.method {method!r}: use fixed or sequential")
    stage = expect(f"{at}.stage_samples", raw.get("stage_samples", d.stage_samples), int, "a whole number")
    if stage < 1:
        raise error(f"{at}.stage_samples: at least 1 sample per prompt per stage")
    most = raw.get("max_samples", d.max_samples)
    if most is not None:
        expect(f"{at}.max_samples", most, int, "a whole number of samples per prompt (or null)")
        if most < stage:
            raise error(f"{at}.max_samples: {most} is less than one stage ({stage})")
    alpha = float(expect(f"{at}.alpha", raw.get("alpha", d.alpha), (int, float), "a number"))
    if not 0 < alpha < 0.5:
        raise error(f"{at}.alpha: {alpha} is an error rate; use a value between 0 and 0.5 (0.05 is usual)")
    until = raw.get("until", d.until)
    if until not in UNTIL:
        raise error(f"{at}.until {until!r}: use all (every rule decided) or verdict (stop once a rule fails)")
    return Stopping(method, stage, most, alpha, until)
