"""The gate's report as data: dataclasses with ``to_json``/``from_json``.

The JSON on disk keeps the shape it has had since report version 1; these types are how the
code reads and writes it (``merge``, ``ci``, ``tracking`` and the renderers take a ``Report``,
never a dict). Keys this version does not know are kept in ``extra`` and written back, so a
report read and written again loses nothing. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate import __version__
from gate.errors import BadInput
from gate.judge import RuleResult, verdict

REPORT_VERSION = 1
_REQUIRED = ("verdict", "concepts", "inputs")


@dataclass
class ConceptReport:
    name: str
    verdict: str
    rules: list[RuleResult]
    # how its images were chosen: method (fixed or sequential), images per side; for sequential
    # also the stages run, the samples per prompt used and the stage each rule was decided at
    stopping: dict[str, Any] | None = None
    # attack probes: per attack, each side's images and success rate; a learned attack's targets,
    # learning records and embedding files (in the report folder)
    attacks: dict[str, Any] | None = None

    @classmethod
    def judged(
        cls, name: str, rules: list[RuleResult], inconclusive_fails: bool, stopping: dict[str, Any] | None = None,
        attacks: dict[str, Any] | None = None,
    ) -> ConceptReport:  # fmt: skip
        return cls(name, verdict(rules, inconclusive_fails), list(rules), stopping, attacks)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "verdict": self.verdict, "rules": [r.as_dict() for r in self.rules]}
        if self.stopping is not None:
            out["stopping"] = self.stopping
        if self.attacks is not None:
            out["attacks"] = self.attacks
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConceptReport:
        rules = [RuleResult.from_dict(r) for r in d.get("rules", [])]
        return cls(str(d["name"]), str(d["verdict"]), rules, d.get("stopping"), d.get("attacks"))


@dataclass
class Report:
    verdict: str
    inconclusive_counts_as: str
    inputs: dict[str, Any]  # checkpoint, update, original: identities (kind, path, sha256, ...); policy
    reproduce: str
    seed: int
    sampler: dict[str, Any]
    device: str
    concepts: list[ConceptReport]
    shard: list[int] | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    finished_at: float = 0.0
    git_commit: str | None = None
    report_version: int = REPORT_VERSION
    gate_version: str = __version__
    prescreen: dict[str, Any] | None = None  # per concept, report only
    merged_from: list[dict[str, Any]] | None = None  # set by gate merge
    pull_request: dict[str, Any] | None = None  # number, base_sha, head_sha, candidate, model_line (CI)
    warnings: list[str] = field(default_factory=list)
    certificate: dict[str, Any] | None = None  # the model line's latest certificate (gate certify), linked
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer writer, kept as they were

    # the order of keys on disk (as report version 1 wrote them)
    _ORDER = (
        "report_version", "gate_version", "verdict", "inconclusive_counts_as", "inputs", "reproduce", "seed",
        "sampler", "device", "shard", "libraries", "detectors", "concepts", "cache", "timings_s", "wall_time_s",
        "finished_at", "git_commit",
    )  # fmt: skip
    _OPTIONAL = ("prescreen", "merged_from", "warnings", "pull_request", "certificate")

    @property
    def inconclusive_fails(self) -> bool:
        return self.inconclusive_counts_as == "fail"

    def rules(self) -> list[RuleResult]:
        return [r for c in self.concepts for r in c.rules]

    def rule(self, concept: str, rule: str) -> RuleResult:
        for r in self.rules():
            if r.concept == concept and r.rule == rule:
                return r
        raise KeyError((concept, rule))

    def policy(self) -> dict[str, Any]:
        return dict(self.inputs.get("policy") or {})

    def identity(self, name: str) -> dict[str, Any]:
        """An input's identity (``checkpoint``, ``update``, ``original``); empty when absent."""
        ident = self.inputs.get(name)
        return dict(ident) if isinstance(ident, dict) else {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self._ORDER:
            v = getattr(self, k)
            out[k] = [c.to_json() for c in v] if k == "concepts" else v
        for k in self._OPTIONAL:
            v = getattr(self, k)
            if v:
                out[k] = v
        out.update(self.extra)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Report:
        if not isinstance(d, dict) or any(k not in d for k in _REQUIRED):
            raise ValueError("not a gate report (no verdict/concepts/inputs)")
        version = d.get("report_version", REPORT_VERSION)
        if version != REPORT_VERSION:
            raise ValueError(f"report version {version!r}; this gate reads version {REPORT_VERSION}")
        known = set(cls._ORDER) | set(cls._OPTIONAL)
        kw: dict[str, Any] = {k: d[k] for k in known if k in d and k != "concepts"}
        kw["concepts"] = [ConceptReport.from_json(c) for c in d["concepts"]]
        kw.setdefault("inconclusive_counts_as", "fail")
        kw.setdefault("reproduce", "")
        kw.setdefault("seed", 0)
        kw.setdefault("sampler", {})
        kw.setdefault("device", "")
        kw["warnings"] = list(kw.get("warnings") or [])
        kw["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**kw)


def load_report(path: Path | str) -> Report:
    """A report from disk; anything else is the user's bad input (exit 2)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not a JSON report ({e})") from None
    try:
        return Report.from_json(raw)
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"{path}: not a gate report ({e})") from None


def write_report_json(report: Report, path: Path | str) -> None:
    from gate.provenance import write_json_atomic

    write_json_atomic(Path(path), report.to_json())
