"""The one place that decides the embedded default: what ``gate check`` and ``pytest probes/``
judge when no ``--checkpoint`` is given, and which policy a checkpoint gets without ``--policy``.

* No ``--checkpoint``: the small world's demo (the zoo's unlearned model, the candidate named in
  the zoo's ``demo.json``, the world's original SD, and the world's policy), whatever else is set.
* A ``--checkpoint`` of the small world's own SD (recognised by content: its tokenizer is the
  world's) and no ``--policy``: the world's policy.
* Any other ``--checkpoint`` without ``--policy``: bad input (exit 2), with the shipped policies
  named. A real model is never judged silently with the small world's CLIP, steps and guidance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gate.errors import BadInput

POLICY = Path(__file__).resolve().parent / "policies" / "small-world.yaml"  # package data


@dataclass(frozen=True)
class Inputs:
    checkpoint: str
    update: str | None
    original: str | None
    policy: str


def demo_inputs() -> Inputs:
    """The demo's inputs, materialising the zoo's unlearned model on first use."""
    from gate.world import zoo

    demo_file = zoo.ZOO / "demo.json"
    if not demo_file.is_file():
        raise BadInput("the small world's zoo has no demo entry; pass --checkpoint, --update and --policy")
    demo = json.loads(demo_file.read_text())
    return Inputs(
        checkpoint=str(zoo.materialize(demo["checkpoint"])),
        update=str(zoo.update_path(demo["update"])),
        original=str(zoo.materialize("world")),
        policy=str(POLICY.parent / demo.get("policy", POLICY.name)),
    )


def resolve(checkpoint: str | None, update: str | None, original: str | None, policy: str | None) -> Inputs:
    """The inputs of a check from what the user gave (``None`` = not given; ``""`` = explicitly none)."""
    if checkpoint is None:
        d = demo_inputs()
        return Inputs(
            d.checkpoint,
            d.update if update is None else update or None,
            d.original if original is None else original or None,
            policy or d.policy,
        )
    if not policy:
        if not is_world_checkpoint(checkpoint):
            raise BadInput(missing_policy_message(checkpoint))
        policy = str(POLICY)
    return Inputs(checkpoint, update or None, original or None, policy)


def missing_policy_message(checkpoint: str) -> str:
    names = shipped_policies()
    listed = ", ".join(str(p) for p in names) if names else "none found (see docs/gate.md for the format)"
    return (
        f"--checkpoint {checkpoint}: give --policy, the file that names the erased concepts, their prompts, "
        f"detector, sampler and thresholds; shipped policies: {listed}"
    )


def shipped_policies() -> list[Path]:
    """Policy files (with concepts; not include-only bases) in ./policies and beside the package."""
    import yaml

    folders = [Path("policies"), Path(__file__).resolve().parents[2] / "policies"]
    seen: dict[Path, Path] = {}
    for folder in folders:
        for p in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and data.get("concepts"):
                seen.setdefault(p.resolve(), p)
    return list(seen.values())


def is_world_checkpoint(spec: str) -> bool:
    """Whether a checkpoint is the small world's SD or one derived from it (an erased or
    fine-tuned copy keeps its tokenizer): its tokenizer files hash as the world's do."""
    from gate.provenance import hash_tree
    from gate.world.clip import ASSETS

    tok = Path(spec) / "tokenizer"
    if not tok.is_dir():
        return False
    return hash_tree(tok) == hash_tree(ASSETS / "sd" / "tokenizer")


def is_world_pipe(pipe) -> bool:
    """The same test on a loaded pipeline: the world's vocabulary."""
    from transformers import CLIPTokenizer

    from gate.world.clip import ASSETS

    own = CLIPTokenizer.from_pretrained(str(ASSETS / "sd" / "tokenizer"))
    return bool(pipe.tokenizer.get_vocab() == own.get_vocab())
