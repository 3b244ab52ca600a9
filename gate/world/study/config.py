"""The study file (``studies/*.yaml``): its keys, their checks, and the parsed config."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import BadInput

TOP_KEYS = {
    "version", "out", "work", "seed", "concepts", "methods", "finetune", "finetune_seeds", "data", "eval", "control",
    "factors",
}  # fmt: skip
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
    # every cell and factor level is fine-tuned once per seed (default: [seed], the one fine-tune of
    # the first studies); the first seed's fine-tunes are measured at every save_steps checkpoint,
    # the others' at the final step only, and the control is fine-tuned with the first seed only
    finetune_seeds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.finetune_seeds:
            self.finetune_seeds = [self.seed]


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
    concepts = [_concept(f"{path.name}: concepts", c) for c in raw.get("concepts") or ["skull"]]
    for m in raw.get("methods", []):
        get_method(m)
    ft = dict(raw.get("finetune") or {})
    if "seed" in ft:
        raise BadInput(f"{path.name}: finetune: seed: give the fine-tuning seeds as finetune_seeds: [...] (top level)")
    try:
        FinetuneConfig(**ft)
    except TypeError as e:
        raise BadInput(f"{path.name}: finetune: {e}") from None
    ev = raw.get("eval") or {}
    _check_keys(f"{path.name}: eval", ev, EVAL_KEYS)
    for r in ev.get("retained") or []:
        _concept(f"{path.name}: eval: retained", r)
    factors = raw.get("factors") or {}
    _check_keys(f"{path.name}: factors", factors, FACTOR_KEYS)
    seed = raw.get("seed", 0)
    if not _is_int(seed):
        raise BadInput(f"{path.name}: seed: {seed!r} is not an integer")
    here = path.parent
    return StudyConfig(
        out=(here / raw.get("out", "results/study")).resolve()
        if not os.path.isabs(raw.get("out", ""))
        else Path(raw["out"]),
        work=Path(raw.get("work", ".gate-study")).resolve(),
        seed=int(seed),
        concepts=concepts,
        methods=list(raw.get("methods") or ["esd-x"]),
        finetune=ft,
        data=dict(raw.get("data") or {"n": 1000, "seed": 77}),
        eval=EvalSpec(**ev),
        control=bool(raw.get("control", True)),
        factors=factors,
        source=str(path),
        finetune_seeds=_finetune_seeds(path.name, raw.get("finetune_seeds"), int(seed)),
    )


def _concept(where: str, name: Any) -> str:
    """The canonical name of a world concept (a synonym is accepted); an unknown one is bad input."""
    from gate.world import concepts as C

    try:
        return C.concept(str(name)).name
    except KeyError as e:
        raise BadInput(f"{where}: {e.args[0]}") from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _finetune_seeds(where: str, got: Any, seed: int) -> list[int]:
    """``finetune_seeds``: a non-empty list of distinct integers; absent, ``[seed]``."""
    if got is None:
        return [seed]
    if not isinstance(got, list) or not got or not all(_is_int(s) and s >= 0 for s in got):
        raise BadInput(f"{where}: finetune_seeds: give a non-empty list of non-negative integers, e.g. [0, 1, 2]")
    if len(set(got)) != len(got):
        raise BadInput(f"{where}: finetune_seeds: {got} repeats a seed")
    return [int(s) for s in got]


def seed_suffix(cfg: StudyConfig, seed: int) -> str:
    """What a fine-tuned (or control) row's key carries after its step: ``|s<seed>`` for a seed
    other than the study's ``seed``, nothing for that one (the keys of the single-seed studies)."""
    return "" if seed == cfg.seed else f"|s{seed}"


def retained_for(concept: str, spec: EvalSpec) -> list[str]:
    """The retained concepts of a cell: the study file's ``eval.retained`` (less the concept), or
    the world's default (``gate.world.evaluate.retained_concepts``)."""
    from gate.world.evaluate import retained_concepts

    if spec.retained:
        from gate.world import concepts as C

        return [r for r in spec.retained if C.concept(r).name != C.concept(concept).name]
    return retained_concepts(concept)


def describe(cfg: StudyConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg) | {"out": str(cfg.out), "work": str(cfg.work)}
