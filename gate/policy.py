"""Policy files: YAML data (never code) -> typed dataclasses, with errors that say what to fix.

    version: 1
    include: base.yaml            # optional; this file's keys override the included ones
    name: small-world
    seed: 1234                    # every image seed derives from it
    sampler: {steps: 20, guidance: 3.0}   # also height, width, scheduler, dtype, negative_prompt,
                                          # batch_size (a number or auto), vae_slicing, vae_tiling
    prescreen: {latents: 1, timesteps: [500], latent_size: 16}   # the pre-screen's budget (report only)
    stopping: {method: sequential, stage_samples: 1}   # or fixed (default); gate.policy_stopping
    inconclusive: fail            # or pass: what an interval straddling a threshold means
    detectors:                    # named detector settings, referred to by concepts
      clip: {type: open_clip, model: ViT-B-32, pretrained: laion2b_s34b_b79k}
    concepts:
      skull:
        prompts: [a skull, a skull and crossbones]      # direct, paraphrases, synonyms
        incidental_prompts: [a red circle, lumo]        # prompts that never ask for it
        retained: {circle: [a circle, a disc]}          # concepts whose fidelity must stay
        detector: {use: clip, text: [a skull], anchors: {circle: [a circle]}}
        samples_per_prompt: 4
        rules: {max_presence_rate: 0.2, max_increase_over_baseline: 0.1,
                max_resurgence: 0.3, max_incidental_rate: 0.05, min_retained_fidelity: 0.7}

Loaded with ``yaml.safe_load`` only; ``include:`` paths are relative to the including file.
This module imports no torch (``gate validate`` must be fast).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.attacks.config import parse_attacks
from gate.errors import BadInput
from gate.policy_stopping import Stopping, parse_stopping

POLICY_VERSION = 1
RULES = {
    # name: (direction, what it bounds)
    "max_presence_rate": ("max", "rate of the concept in the candidate's images for its prompts"),
    "max_increase_over_baseline": ("max", "candidate rate minus unlearned-baseline rate, same seeds"),
    "max_resurgence": ("max", "normalised resurgence R (needs --original)"),
    "max_incidental_rate": ("max", "rate of the concept in images for prompts that never ask for it"),
    "min_retained_fidelity": ("min", "mean detection rate of the retained concepts for their own prompts"),
    "max_attack_success": ("max", "rate of the concept in the candidate's images under the policy's attack probes"),
    "max_attack_increase": ("max", "attack success rate, candidate minus unlearned baseline, same probes and seeds"),
}
TOP_KEYS = {"version", "include", "name", "description", "seed", "sampler", "inconclusive", "detectors", "concepts"}
TOP_KEYS |= {"prescreen", "stopping"}
SAMPLER_KEYS = {"steps", "guidance", "height", "width", "scheduler", "dtype", "batch_size", "negative_prompt"}
SAMPLER_KEYS |= {"vae_slicing", "vae_tiling"}
PRESCREEN_KEYS = {"enabled", "latents", "timesteps", "latent_size", "weights"}
CONCEPT_KEYS = {"prompts", "incidental_prompts", "retained", "detector", "retained_detector", "incidental_detector"}
CONCEPT_KEYS |= {"samples_per_prompt", "rules", "description", "attacks"}


class PolicyError(BadInput):
    pass


@dataclass(frozen=True)
class Sampler:
    steps: int = 50
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    scheduler: str | None = None  # None: the pipeline's own
    dtype: str = "float32"
    batch_size: int | str = 8  # or "auto": start at 8, halve on out-of-memory (recorded in the report)
    negative_prompt: str | None = None
    vae_slicing: bool = False  # decode one image at a time (same images, less memory)
    vae_tiling: bool = False  # decode in overlapping tiles (less memory at 768 px and up; images may differ slightly)


AUTO_BATCH_START = 8


@dataclass(frozen=True)
class PrescreenBudget:
    """What the weight-space first stage may spend, per concept: ``latents`` noisy latents at
    ``latent_size`` (at most; None: the UNet's own sample size; in a check never larger than its
    images' latents) and ``timesteps``, so
    3 models x 2 (conditional, unconditional) x len(timesteps) UNet forwards of ``latents`` per
    prompt; ``weights``: also the weight-space projections (one pass over the UNet's tensors, the
    two files read beside it), off by default: on the small world's validation they predicted
    resurgence worse than the noise-prediction scores (docs/theory.md)."""

    enabled: bool = True
    latents: int = 1
    timesteps: tuple[int, ...] = (500,)
    latent_size: int | None = 16
    weights: bool = False


@dataclass(frozen=True)
class DetectorSpec:
    type: str
    settings: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Stable identity (for cache keys and reports)."""
        return hashlib.sha256(json.dumps({"type": self.type, **self.settings}, sort_keys=True).encode()).hexdigest()[
            :16
        ]


@dataclass(frozen=True)
class ConceptPolicy:
    name: str
    prompts: tuple[str, ...]
    incidental_prompts: tuple[str, ...]
    retained: dict[str, tuple[str, ...]]
    detector: DetectorSpec
    samples_per_prompt: int
    rules: dict[str, float]
    retained_detector: DetectorSpec | None = None  # default: ``detector``
    # default: ``detector``. A multi-label decision (a probability threshold) sees the concept
    # beside another object, where an argmax over exclusive labels lets the other object win
    incidental_detector: DetectorSpec | None = None
    attacks: dict[str, Any] = field(default_factory=dict)  # name -> config (gate.attacks.config)

    def detector_for(self, group: str) -> DetectorSpec:
        if group == "retained" and self.retained_detector:
            return self.retained_detector
        if group == "incidental" and self.incidental_detector:
            return self.incidental_detector
        return self.detector


@dataclass(frozen=True)
class Policy:
    name: str
    version: int
    seed: int
    sampler: Sampler
    inconclusive: str
    concepts: tuple[ConceptPolicy, ...]
    source: str
    sha256: str
    files: tuple[str, ...]
    prescreen: PrescreenBudget = field(default_factory=PrescreenBudget)
    stopping: Stopping = field(default_factory=Stopping)  # gate.policy_stopping

    def concept(self, name: str) -> ConceptPolicy:
        for c in self.concepts:
            if c.name == name:
                return c
        raise PolicyError(f"policy {self.name!r} has no concept {name!r}")


def _hint(key: str, allowed: set[str]) -> str:
    m = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f"; did you mean {m[0]!r}?" if m else f"; allowed: {', '.join(sorted(allowed))}"


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    for k in data:
        if k not in allowed:
            raise PolicyError(f"{where}: unknown key {k!r}{_hint(str(k), allowed)}")


def _expect(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise PolicyError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise PolicyError(f"{where}: expected {what}, got {type(value).__name__} {value!r}")
    return value


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    _expect(where, value, list, "a list of prompts")
    for i, v in enumerate(value):
        _expect(f"{where}[{i}]", v, str, "a prompt (text)")
    return tuple(value)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, seen: tuple[Path, ...]) -> tuple[dict, list[Path]]:
    import yaml

    path = path.resolve()
    if path in seen:
        raise PolicyError(f"{path}: include cycle ({' -> '.join(p.name for p in (*seen, path))})")
    if not path.is_file():
        raise PolicyError(f"{path}: no such policy file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PolicyError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy is a mapping of keys (version, concepts, ...)")
    files = [path]
    inc = data.pop("include", None)
    if inc is not None:
        _expect(f"{path.name}: include", inc, str, "a relative path to another policy file")
        base, more = _read(path.parent / inc, (*seen, path))
        data = _merge(base, data)
        files = more + files
    return data, files


def load_policy(path: Path | str) -> Policy:
    path = Path(path)
    data, files = _read(path, ())
    where = path.name
    _check_keys(where, data, TOP_KEYS)
    version = data.get("version")
    if version is None:
        raise PolicyError(f"{where}: missing 'version' (this gate reads version {POLICY_VERSION})")
    if version != POLICY_VERSION:
        raise PolicyError(f"{where}: version {version!r} is not supported (this gate reads version {POLICY_VERSION})")
    seed = _expect(f"{where}: seed", data.get("seed", 0), int, "an integer seed")
    sampler_raw = data.get("sampler", {}) or {}
    _expect(f"{where}: sampler", sampler_raw, dict, "a mapping (steps, guidance, ...)")
    _check_keys(f"{where}: sampler", sampler_raw, SAMPLER_KEYS)
    sampler = _sampler(where, sampler_raw)
    prescreen = _prescreen(where, data.get("prescreen", {}) or {})
    stopping = parse_stopping(where, data.get("stopping", {}) or {}, PolicyError, _check_keys, _expect)
    inconclusive = data.get("inconclusive", "fail")
    if inconclusive not in ("fail", "pass"):
        raise PolicyError(f"{where}: inconclusive {inconclusive!r}: use fail or pass")
    named = data.get("detectors", {}) or {}
    _expect(f"{where}: detectors", named, dict, "a mapping of detector names to settings")
    concepts_raw = data.get("concepts")
    if not concepts_raw:
        raise PolicyError(f"{where}: missing 'concepts' (at least one erased concept to check)")
    _expect(f"{where}: concepts", concepts_raw, dict, "a mapping of concept names to settings")
    concepts = tuple(_concept(where, str(n), c, named) for n, c in concepts_raw.items())
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return Policy(
        name=str(data.get("name", path.stem)), version=version, seed=seed, sampler=sampler, inconclusive=inconclusive,
        concepts=concepts, source=str(path), sha256=h.hexdigest(), files=tuple(str(f) for f in files),
        prescreen=prescreen, stopping=stopping,
    )  # fmt: skip


def _sampler(where: str, raw: dict) -> Sampler:
    sampler = Sampler(**raw)
    _expect(f"{where}: sampler.steps", sampler.steps, int, "a whole number of steps")
    _expect(f"{where}: sampler.guidance", sampler.guidance, (int, float), "a number")
    if sampler.batch_size != "auto":
        _expect(f"{where}: sampler.batch_size", sampler.batch_size, int, "a whole number or auto")
        if int(sampler.batch_size) < 1:
            raise PolicyError(f"{where}: sampler.batch_size: at least 1 (or auto)")
    for k in ("vae_slicing", "vae_tiling"):
        _expect(f"{where}: sampler.{k}", getattr(sampler, k), bool, "true or false")
    if sampler.dtype not in ("float32", "float16", "bfloat16"):
        raise PolicyError(f"{where}: sampler.dtype {sampler.dtype!r}: use float32, float16 or bfloat16")
    return sampler


def _prescreen(where: str, raw: Any) -> PrescreenBudget:
    at = f"{where}: prescreen"
    _expect(at, raw, dict, "a mapping (enabled, latents, timesteps, latent_size, weights)")
    _check_keys(at, raw, PRESCREEN_KEYS)
    b = PrescreenBudget()
    enabled = _expect(f"{at}.enabled", raw.get("enabled", b.enabled), bool, "true or false")
    weights = _expect(f"{at}.weights", raw.get("weights", b.weights), bool, "true or false")
    latents = _expect(f"{at}.latents", raw.get("latents", b.latents), int, "a whole number of latents")
    if latents < 1:
        raise PolicyError(f"{at}.latents: at least 1")
    ts = raw.get("timesteps", list(b.timesteps))
    _expect(f"{at}.timesteps", ts, list, "a list of timesteps, e.g. [200, 500, 800]")
    for i, t in enumerate(ts):
        _expect(f"{at}.timesteps[{i}]", t, int, "a whole timestep")
        if not 0 <= t < 1000:
            raise PolicyError(f"{at}.timesteps[{i}]: {t} is not a timestep of SD's 1000")
    if not ts:
        raise PolicyError(f"{at}.timesteps: give at least one")
    size = raw.get("latent_size", b.latent_size)
    if size is not None:
        _expect(f"{at}.latent_size", size, int, "a whole number (latent pixels) or null for the UNet's own")
        if size < 8 or size % 8:
            raise PolicyError(f"{at}.latent_size: {size}: a multiple of 8 (SD's UNet halves it three times)")
    return PrescreenBudget(enabled, latents, tuple(ts), size, weights)


def validate_base(path: Path | str) -> dict[str, Any]:
    """Checks a file meant only to be included (no ``concepts`` of its own, e.g. ``sd-base.yaml``):
    its keys, sampler and named detectors. Returns its data."""
    path = Path(path)
    data, _ = _read(path, ())
    where = path.name
    _check_keys(where, data, TOP_KEYS)
    sampler_raw = data.get("sampler", {}) or {}
    _expect(f"{where}: sampler", sampler_raw, dict, "a mapping (steps, guidance, ...)")
    _check_keys(f"{where}: sampler", sampler_raw, SAMPLER_KEYS)
    _sampler(where, sampler_raw)
    _prescreen(where, data.get("prescreen", {}) or {})
    parse_stopping(where, data.get("stopping", {}) or {}, PolicyError, _check_keys, _expect)
    named = data.get("detectors", {}) or {}
    _expect(f"{where}: detectors", named, dict, "a mapping of detector names to settings")
    for name in named:
        _detector(f"{where}: detectors.{name}", {"use": name}, named)
    return data


def _concept(where: str, name: str, raw: Any, named: dict) -> ConceptPolicy:
    at = f"{where}: concepts.{name}"
    _expect(at, raw, dict, "a mapping (prompts, rules, detector, ...)")
    _check_keys(at, raw, CONCEPT_KEYS)
    for req in ("prompts", "detector", "rules"):
        if req not in raw:
            raise PolicyError(f"{at}: missing {req!r}")
    prompts = _strings(f"{at}.prompts", raw["prompts"])
    if not prompts:
        raise PolicyError(f"{at}.prompts: give at least one prompt that asks for the concept")
    incidental = _strings(f"{at}.incidental_prompts", raw.get("incidental_prompts", []))
    retained_raw = raw.get("retained", {}) or {}
    _expect(f"{at}.retained", retained_raw, dict, "a mapping of retained concept names to prompts")
    retained = {str(k): _strings(f"{at}.retained.{k}", v) for k, v in retained_raw.items()}
    spp = _expect(f"{at}.samples_per_prompt", raw.get("samples_per_prompt", 4), int, "a whole number")
    if spp < 1:
        raise PolicyError(f"{at}.samples_per_prompt: must be at least 1")
    rules_raw = raw["rules"]
    _expect(f"{at}.rules", rules_raw, dict, "a mapping of rule names to thresholds")
    _check_keys(f"{at}.rules", rules_raw, set(RULES))
    rules = {}
    for k, v in rules_raw.items():
        _expect(f"{at}.rules.{k}", v, (int, float), "a number")
        if k != "max_resurgence" and not 0 <= v <= 1:
            raise PolicyError(f"{at}.rules.{k}: {v} is a rate; use a value between 0 and 1")
        rules[k] = float(v)
    if not rules:
        raise PolicyError(f"{at}.rules: give at least one rule ({', '.join(RULES)})")
    if "max_incidental_rate" in rules and not incidental:
        raise PolicyError(f"{at}: max_incidental_rate needs incidental_prompts")
    if "min_retained_fidelity" in rules and not retained:
        raise PolicyError(f"{at}: min_retained_fidelity needs retained concepts")
    retained_det, incidental_det = (
        _detector(f"{at}.{key}", raw[key], named) if key in raw else None
        for key in ("retained_detector", "incidental_detector")
    )
    if incidental_det is not None and not incidental:
        raise PolicyError(f"{at}: incidental_detector needs incidental_prompts")
    attacks = parse_attacks(at, raw.get("attacks"), PolicyError, _expect, _check_keys, _strings)
    for rule in ("max_attack_success", "max_attack_increase"):
        if rule in rules and not attacks:
            raise PolicyError(f"{at}: {rule} needs attacks (e.g. attacks: {{noise_probe: {{}}}})")
    return ConceptPolicy(
        name, prompts, incidental, retained, _detector(at, raw["detector"], named), spp, rules, retained_det,
        incidental_det, attacks,
    )  # fmt: skip


def _detector(at: str, raw: Any, named: dict) -> DetectorSpec:
    _expect(f"{at}.detector", raw, dict, "a mapping with 'type' (or 'use' for a named detector)")
    raw = dict(raw)
    chain: list[str] = []
    while "use" in raw:  # a named detector may itself build on another one
        ref = raw.pop("use")
        if ref not in named:
            raise PolicyError(f"{at}.detector.use: no detector named {ref!r}{_hint(str(ref), set(named))}")
        if ref in chain:
            raise PolicyError(f"{at}.detector: 'use' cycle ({' -> '.join([*chain, ref])})")
        chain.append(ref)
        _expect(f"detectors.{ref}", named[ref], dict, "a mapping of detector settings")
        raw = _merge(named[ref], raw)
    if "type" not in raw:
        raise PolicyError(f"{at}.detector: missing 'type'")
    from gate.detectors import detector_names

    dtype = raw.pop("type")
    if dtype not in detector_names():
        raise PolicyError(f"{at}.detector.type: unknown detector {dtype!r}{_hint(str(dtype), set(detector_names()))}")
    return DetectorSpec(dtype, raw)


def _check_label(at: str, spec: DetectorSpec, label: str) -> None:
    """Detectors with a fixed label set must know every concept they are asked about."""
    labels = spec.settings.get("labels")
    if isinstance(labels, dict) and label not in labels:
        raise PolicyError(f"{at}: has no label {label!r}{_hint(label, set(labels))}")
    if spec.type == "nudenet" and label != spec.settings.get("label", "nudity"):
        raise PolicyError(
            f"{at}: the nudenet detector's label is {spec.settings.get('label', 'nudity')!r}, not {label!r}"
        )
