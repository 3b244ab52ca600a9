"""Every seed derivation of the project, in one place (no torch: the CLI and the policy code
import it cheaply).

* ``image_seed``: a gate check's image seed, hashed from what identifies the image, so that it
  never depends on the order of concepts, the batch size, sharding or ``-k`` selection.
* ``sample_seeds``: the seeds of the ``n`` images of one measurement on the small world (the
  world's quality figures, the zoo's and the study's detection rates).
* ``image_set_seeds``: the seeds of the images an unlearning method generates for its forget
  and retain sets (the small-world presets were measured with these values).
"""

from __future__ import annotations

import hashlib

# a prime step between the images of one measurement, so that neighbouring base seeds (the
# world's seeds are small integers) do not share images
SAMPLE_STEP = 7919
IMAGE_SET_STRIDE = 1_000_003


def image_seed(policy_seed: int, concept: str, group: str, prompt: str, sample: int) -> int:
    key = f"{policy_seed}\x1f{concept}\x1f{group}\x1f{prompt}\x1f{sample}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % (2**63 - 1)


def sample_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the ``n`` images of a measurement from base ``seed``: ``seed + 7919 * i + 1``."""
    return [seed + SAMPLE_STEP * i + 1 for i in range(n)]


def image_set_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the ``n`` images of a generated forget or retain set: ``seed * 1_000_003 + j``."""
    return [seed * IMAGE_SET_STRIDE + j for j in range(n)]
