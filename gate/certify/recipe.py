"""The standard benign fine-tune of ``gate certify``: one recipe per model family.

A recipe is a small YAML file (the shipped ones are in ``gate/certify/recipes/``): the data
(the small world's own benign data, or a folder the user names), the fine-tunes (each a
``gate finetune`` configuration: LoRA, full) and the seeds. ``--steps`` or another override makes
a certificate that is not the standard one, and the certificate says so.

Torch-free: the CLI validates a recipe before anything loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gate.errors import BadInput

RECIPES = Path(__file__).resolve().parent / "recipes"
FAMILIES = ("small-world", "sd1", "sd2")
_TOP = {"version", "name", "family", "description", "data", "seeds", "finetunes", "resolution"}
# what a fine-tune entry may set: gate.finetune.FinetuneConfig's fields less the seed (the recipe's)
_FT_KEYS = {"mode", "steps", "lr", "batch_size", "rank", "alpha", "lora_targets", "train_text_encoder",
            "max_grad_norm"}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    description: str
    data: dict[str, Any] | None  # {"n": ..., "seed": ...} of the world's data; None: a folder (--data)
    seeds: tuple[int, ...]
    finetunes: dict[str, dict[str, Any]]
    resolution: int | None = None
    source: str = ""  # the file it was read from
    overrides: dict[str, Any] = field(default_factory=dict)  # what the user changed (not standard then)

    @property
    def standard(self) -> bool:
        return not self.overrides

    @property
    def sha256(self) -> str:
        body = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("source", "overrides")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def as_record(self) -> dict[str, Any]:
        rec = dataclasses.asdict(self)
        rec["seeds"] = list(self.seeds)
        rec["sha256"] = self.sha256
        rec["standard"] = self.standard
        return rec

    def narrowed(self, *, modes: list[str] | None = None, seeds: list[int] | None = None,
                 steps: int | None = None) -> Recipe:  # fmt: skip
        """The recipe with fewer fine-tunes or seeds, or another step count (recorded as overrides)."""
        over: dict[str, Any] = dict(self.overrides)
        fts = dict(self.finetunes)
        if modes:
            unknown = [m for m in modes if m not in fts]
            if unknown:
                raise BadInput(f"--modes {','.join(unknown)}: recipe {self.name!r} has {', '.join(fts)}")
            fts = {m: fts[m] for m in modes}
            if list(fts) != list(self.finetunes):
                over["modes"] = list(fts)
        if seeds is not None:
            if not seeds:
                raise BadInput("--seeds: give at least one seed")
            if tuple(seeds) != self.seeds:
                over["seeds"] = list(seeds)
        if steps is not None:
            if steps < 1:
                raise BadInput("--steps must be positive")
            fts = {m: {**c, "steps": steps} for m, c in fts.items()}
            over["steps"] = steps
        return dataclasses.replace(self, finetunes=fts, seeds=tuple(seeds) if seeds else self.seeds, overrides=over)


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name (``small-world``, ``sd1``, ``sd2``) or a recipe file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RECIPES / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = ", ".join(p.stem for p in sorted(RECIPES.glob("*.yaml")))
            raise BadInput(f"--recipe {name_or_path}: no such recipe (shipped: {shipped}; or give a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInput(f"--recipe {path}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise BadInput(f"--recipe {path}: not valid YAML ({e})") from None
    return parse_recipe(raw, str(path))


def parse_recipe(raw: Any, where: str) -> Recipe:
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: a recipe is a mapping (name, family, data, seeds, finetunes)")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; a recipe has {', '.join(sorted(_TOP))}")
    if raw.get("version", 1) != 1:
        raise BadInput(f"{where}: recipe version {raw.get('version')!r}; this gate reads version 1")
    family = raw.get("family")
    if family not in FAMILIES:
        raise BadInput(f"{where}: family {family!r}; use one of {', '.join(FAMILIES)}")
    data = raw.get("data")
    if data == "folder":
        world = None
    elif isinstance(data, dict) and set(data) == {"world"} and isinstance(data["world"], dict):
        world = {"n": int(data["world"].get("n", 1000)), "seed": int(data["world"].get("seed", 77))}
        if family != "small-world":
            raise BadInput(f"{where}: data: world is the small world's own data; family {family} needs data: folder")
    else:
        raise BadInput(f"{where}: data must be 'folder' (the user's --data) or {{world: {{n, seed}}}}")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise BadInput(f"{where}: seeds must be a list of integers")
    fts = raw.get("finetunes")
    if not isinstance(fts, dict) or not fts:
        raise BadInput(f"{where}: finetunes must name at least one fine-tune (lora:, full:)")
    for name, cfg in fts.items():
        if not isinstance(cfg, dict) or cfg.get("mode") not in ("lora", "full"):
            raise BadInput(f"{where}: finetunes.{name}: a mapping with mode: lora or mode: full")
        bad = sorted(set(cfg) - _FT_KEYS)
        if bad:
            raise BadInput(
                f"{where}: finetunes.{name}: unknown key(s) {', '.join(bad)}; allowed {', '.join(sorted(_FT_KEYS))}"
            )
        if not isinstance(cfg.get("steps"), int) or cfg["steps"] < 1:
            raise BadInput(f"{where}: finetunes.{name}.steps must be a positive integer")
    res = raw.get("resolution")
    if res is not None and (not isinstance(res, int) or res < 8):
        raise BadInput(f"{where}: resolution must be an integer number of pixels")
    return Recipe(
        name=str(raw.get("name") or Path(where).stem), family=family, description=str(raw.get("description", "")),
        data=world, seeds=tuple(seeds), finetunes={str(k): dict(v) for k, v in fts.items()}, resolution=res,
        source=where,
    )  # fmt: skip


def family_of(checkpoint: str) -> str:
    """The model family of a checkpoint: the small world's SD (by its tokenizer), or SD 1.x / 2.x
    by the UNet's cross-attention width (768 / 1024). Anything else needs ``--recipe``."""
    from gate.world.demo import is_world_checkpoint

    if is_world_checkpoint(checkpoint):
        return "small-world"
    cfg = Path(checkpoint) / "unet" / "config.json"
    try:
        width = json.loads(cfg.read_text()).get("cross_attention_dim")
    except (OSError, ValueError):
        raise BadInput(
            f"--checkpoint {checkpoint}: no diffusers UNet config to tell its model family from; give --recipe"
        ) from None
    family = {768: "sd1", 1024: "sd2"}.get(width)
    if family is None:
        raise BadInput(
            f"--checkpoint {checkpoint}: cross-attention width {width} is neither SD 1.x (768) nor 2.x (1024); "
            "there is no standard recipe for it: give --recipe FILE"
        )
    return family
