"""Probe jobs: which images a check generates, each with a seed that depends on nothing else.

The seed of an image is derived from (policy seed, concept, prompt group, prompt text, sample
index) by hashing, so it never depends on the order of concepts, the batch size, sharding or
``-k`` selection. Two runs of the same policy generate the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.policy import ConceptPolicy, Policy
from gate.seeds import image_seed

GROUPS = ("concept", "incidental", "retained", "attack")


@dataclass(frozen=True)
class Job:
    concept: str
    group: str  # concept | incidental | retained
    label: str  # detector label to score (the concept, or the retained concept)
    prompt: str
    prompt_index: int
    sample: int
    seed: int
    attack: tuple = ()  # an attack probe's settings, (key, value) pairs (gate.attacks.config)


def jobs_for(
    policy: Policy, c: ConceptPolicy, samples: range | None = None, groups: tuple[str, ...] | set[str] = GROUPS
) -> list[Job]:
    """The jobs of concept ``c``: for each prompt of each group in ``groups``, the sample indices
    ``samples`` (default: all ``samples_per_prompt``). A stage of a sequential check asks for
    the next indices, so a stopped run's images are the first images of a longer one."""
    out: list[Job] = []
    idx = range(c.samples_per_prompt) if samples is None else samples

    def add(group: str, label: str, prompts: tuple[str, ...]) -> None:
        if group not in groups:
            return
        for i, p in enumerate(prompts):
            for s in idx:
                out.append(Job(c.name, group, label, p, i, s, image_seed(policy.seed, c.name, group, p, s)))

    add("concept", c.name, c.prompts)
    if c.incidental_prompts:
        add("incidental", c.name, c.incidental_prompts)
    for r, prompts in c.retained.items():
        add("retained", r, prompts)
    if "attack" in groups:
        for cfg in c.attacks.values():
            # the same seed for every grid point of one (prompt, sample): the settings are compared on the same noise
            for i, p in enumerate(cfg.probe_prompts(c.name, c.prompts)):
                for s in attack_samples(cfg.samples, samples):
                    seed = image_seed(policy.seed, c.name, f"attack:{cfg.name}", p, s)
                    out += [Job(c.name, "attack", c.name, p, i, s, seed, st) for st in cfg.settings()]
    return out


def attack_samples(fixed: int, samples: range | None) -> range:
    """An attack's sample indices: its own ``samples`` at fixed n; in a stage, the stage's indices
    up to ``DEFAULT_MAX_FACTOR`` x its ``samples`` (an attack's maximum, as a concept's is 4 x n)."""
    from gate.policy_stopping import DEFAULT_MAX_FACTOR

    if samples is None:
        return range(fixed)
    return range(samples.start, max(samples.start, min(samples.stop, DEFAULT_MAX_FACTOR * fixed)))
