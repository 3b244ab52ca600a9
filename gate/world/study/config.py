"""The study file (``studies/*.yaml``): its keys, their checks, and the parsed config."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import BadInput

TOP_KEYS = {"version", "out", "work", "seed", "concepts", "methods", "finetune", "data", "eval", "control", "factors"}
EVAL_KEYS = {"n", "n_retained", "seed", "retained"}
FACTOR_KEYS = {"base", "lr", "steps", "mode", "lora_targets", "similarity", "strength"}


@dataclass
class EvalSpec:
    n: int = 32
    n_retained: int = 6
    seed: int = 1_000_003
    retained: list[str] | None = None  # default: every shape, identity and the unsafe symbol but the concept


@dataclass
class StudyConfig:
    out: Path
    work: Path
    seed: int
    concepts: list[str]
    methods: list[str]
    finetune: dict[str, Any]
    data: dict[str, Any]
    eval: EvalSpec
    control: bool = True
    factors: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    device: str = "cpu"  # gate study --device: where models train and generate (not part of the file)


def _check_keys(where: str, got: dict[str, Any], allowed: set[str]) -> None:
    import difflib

    for k in got:
        if k not in allowed:
            hint = difflib.get_close_matches(k, sorted(allowed), n=1)
            raise BadInput(f"{where}: unknown key {k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def load_config(path: Path | str) -> StudyConfig:
    import yaml

    from gate.finetune import FinetuneConfig
    from gate.unlearn import get_method
    from gate.world import concepts as C

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such study config")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: a study config is a mapping")
    _check_keys(path.name, raw, TOP_KEYS)
    if raw.get("version") != 1:
        raise BadInput(f"{path.name}: version must be 1")
    for c in raw.get("concepts", []):
        C.concept(c)  # raises for an unknown concept
    for m in raw.get("methods", []):
        get_method(m)
    ft = dict(raw.get("finetune") or {})
    try:
        FinetuneConfig(**ft)
    except TypeError as e:
        raise BadInput(f"{path.name}: finetune: {e}") from None
    ev = raw.get("eval") or {}
    _check_keys(f"{path.name}: eval", ev, EVAL_KEYS)
    factors = raw.get("factors") or {}
    _check_keys(f"{path.name}: factors", factors, FACTOR_KEYS)
    here = path.parent
    return StudyConfig(
        out=(here / raw.get("out", "results/study")).resolve()
        if not os.path.isabs(raw.get("out", ""))
        else Path(raw["out"]),
        work=Path(raw.get("work", ".gate-study")).resolve(),
        seed=int(raw.get("seed", 0)),
        concepts=list(raw.get("concepts") or ["skull"]),
        methods=list(raw.get("methods") or ["esd-x"]),
        finetune=ft,
        data=dict(raw.get("data") or {"n": 1000, "seed": 77}),
        eval=EvalSpec(**ev),
        control=bool(raw.get("control", True)),
        factors=factors,
        source=str(path),
    )


def retained_for(concept: str, spec: EvalSpec) -> list[str]:
    """The retained concepts of a cell: the study file's ``eval.retained`` (less the concept), or
    the world's default (``gate.world.evaluate.retained_concepts``)."""
    from gate.world.evaluate import retained_concepts

    if spec.retained:
        return [r for r in spec.retained if r != concept]
    return retained_concepts(concept)


def describe(cfg: StudyConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg) | {"out": str(cfg.out), "work": str(cfg.work)}
