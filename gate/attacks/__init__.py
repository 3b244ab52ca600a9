"""Attack probes: ways of asking a model for an erased concept that plain prompts miss, run with
the same budget, prompts and seeds on the unlearned baseline and on the candidate, so the gate
can ask whether an update makes the concept easier to recover (docs/attacks.md).

* ``gate.attacks.config``: the policy's ``attacks:`` block as typed configs (torch-free), one
  class per attack in ``ATTACK_CONFIGS``;
* ``gate.attacks.noise``: the noise probe's sampler (DDIM with its noise overloaded);
* ``gate.attacks.textual_inversion``: a token learned on images of the concept (CCE);
* ``gate.attacks.runtime``: a learned attack inside a check (targets, learning per side,
  caching, evidence); ``gate.attacks.rates``: per-attack success for the report.
"""
