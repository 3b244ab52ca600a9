"""Probe jobs: which images a check generates, each with a seed that depends on nothing else.

The seed of an image is derived from (policy seed, concept, prompt group, prompt text, sample
index) by hashing, so it never depends on the order of concepts, the batch size, sharding or
``-k`` selection. Two runs of the same policy generate the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.policy import ConceptPolicy, Policy
from gate.seeds import image_seed

GROUPS = ("concept", "incidental", "retained")


@dataclass(frozen=True)
class Job:
    concept: str
    group: str  # concept | incidental | retained
    label: str  # detector label to score (the concept, or the retained concept)
    prompt: str
    prompt_index: int
    sample: int
    seed: int


def jobs_for(policy: Policy, c: ConceptPolicy) -> list[Job]:
    out: list[Job] = []

    def add(group: str, label: str, prompts: tuple[str, ...]) -> None:
        for i, p in enumerate(prompts):
            for s in range(c.samples_per_prompt):
                out.append(Job(c.name, group, label, p, i, s, image_seed(policy.seed, c.name, group, p, s)))

    add("concept", c.name, c.prompts)
    if c.incidental_prompts:
        add("incidental", c.name, c.incidental_prompts)
    for r, prompts in c.retained.items():
        add("retained", r, prompts)
    return out
