"""``gate policy diff``: what a change to a policy does to the gate, change by change.

Every difference between two loaded policies (``include:`` merged, named detectors resolved) is
one :class:`Change`, classified as

* **loosens**: the gate can pass a model it failed before. A ``max_*`` threshold raised, a
  ``min_*`` one lowered; a rule, concept, prompt (``prompts``, ``incidental_prompts``), retained
  concept or retained prompt removed; ``samples_per_prompt`` lowered; ``inconclusive`` from
  ``fail`` to ``pass``; any change of a detector or retained detector (type or any setting,
  labels and ``decision`` included); any sampler change that changes the images (everything but
  ``batch_size``); a higher ``stopping.alpha`` (each rule's error rate); and a changed policy
  ``seed``. A new seed tightens nothing and lets a pull request choose the seeds its model is
  judged on, so it counts as loosening.
* **tightens**: the opposite moves (a threshold made stricter; a rule, concept, prompt or
  retained concept added; more samples per prompt; ``inconclusive`` from ``pass`` to ``fail``).
* **neutral**: the policy's name or version, ``sampler.batch_size`` (seeds are per image, so
  the images do not change), ``stopping``'s method, stage and maximum (how many images, not
  how strict each decision is), prompts or concepts reordered, and text that no check reads
  (comments, descriptions, layout).

``load_policy_ref`` reads a policy from a file or from ``REF:path`` in a git repository; the
files it includes are read from the same commit. Policies are YAML data; nothing is executed.
"""

from __future__ import annotations

import posixpath
import subprocess
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from gate.errors import BadInput
from gate.policy import RULES, ConceptPolicy, DetectorSpec, Policy, PolicyError, Sampler, load_policy

EXIT_LOOSENS = 4  # `gate policy diff`: something loosens (0: nothing does; 2: bad input)
LOOSENS, TIGHTENS, NEUTRAL = "loosens", "tightens", "neutral"
_LABEL = {LOOSENS: "LOOSENS ", TIGHTENS: "TIGHTENS", NEUTRAL: "neutral "}


@dataclass(frozen=True)
class Change:
    kind: str  # loosens | tightens | neutral
    concept: str | None  # None: a policy-wide setting
    field: str  # e.g. "max_resurgence", "prompts", "detector.labels.skull", "sampler.steps"
    old: Any  # JSON values; None where the thing did not exist
    new: Any
    text: str  # "skull: max_resurgence 0.3 -> 1.0"

    def line(self) -> str:
        return f"{_LABEL[self.kind]} {self.text}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _show(v: Any, width: int = 70) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


class _Collector:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def add(self, kind: str, concept: str | None, field: str, old: Any, new: Any, text: str | None = None) -> None:
        if text is None:
            text = f"{field} {_show(old)} -> {_show(new)}"
        text = f"{concept}: {text}" if concept is not None else text
        self.changes.append(Change(kind, concept, field, _jsonable(old), _jsonable(new), text))

    def prompts(self, concept: str, field: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        """Removed prompts loosen, added ones tighten (counted: a duplicate is more images); an
        order change alone is neutral."""
        o, n = Counter(old), Counter(new)
        for p, k in (o - n).items():
            self.add(LOOSENS, concept, field, p, None, f"{field}: removed {p!r}{f' ({k} of them)' if k > 1 else ''}")
        for p, k in (n - o).items():
            self.add(TIGHTENS, concept, field, None, p, f"{field}: added {p!r}{f' ({k} of them)' if k > 1 else ''}")
        if o == n and old != new:
            self.add(NEUTRAL, concept, field, list(old), list(new), f"{field}: reordered")

    def settings(self, concept: str | None, field: str, old: Any, new: Any) -> None:
        """Every differing leaf of two detector settings loosens (a detector decides what counts)."""
        if isinstance(old, dict) and isinstance(new, dict):
            for k in [*old, *(k for k in new if k not in old)]:
                self.settings(concept, f"{field}.{k}", old.get(k), new.get(k))
        elif isinstance(old, list) and isinstance(new, list) and old != new:
            gone, extra = [x for x in old if x not in new], [x for x in new if x not in old]
            said = [f"removed {_show(gone)}"] * bool(gone) + [f"added {_show(extra)}"] * bool(extra)
            self.add(LOOSENS, concept, field, old, new, f"{field}: {'; '.join(said) or 'reordered'}")
        elif old != new:
            self.add(LOOSENS, concept, field, old, new)


def _detector(c: _Collector, concept: str, field: str, old: DetectorSpec, new: DetectorSpec) -> None:
    if old.type != new.type:
        c.add(LOOSENS, concept, f"{field}.type", old.type, new.type)
    c.settings(concept, field, old.settings, new.settings)


def _rules(c: _Collector, name: str, old: dict[str, float], new: dict[str, float]) -> None:
    for rule in [*old, *(r for r in new if r not in old)]:
        a, b = old.get(rule), new.get(rule)
        if a == b:
            continue
        if b is None:
            c.add(LOOSENS, name, rule, a, None, f"{rule} {a} removed")
        elif a is None:
            c.add(TIGHTENS, name, rule, None, b, f"{rule} {b} added")
        else:
            stricter = b < a if RULES[rule][0] == "max" else b > a
            c.add(TIGHTENS if stricter else LOOSENS, name, rule, a, b)


def _attacks(c: _Collector, name: str, old: dict, new: dict) -> None:
    """An attack removed, or its budget lowered (fewer grid points, samples, steps, restarts,
    target images or templates: each config's ``compare``), loosens; the opposite tightens; any
    other change of its settings (other values, another learning rate) loosens, as the attack may
    now miss what it found."""
    for a in [*old, *(x for x in new if x not in old)]:
        field = f"attacks.{a}"
        if a not in new:
            c.add(LOOSENS, name, field, asdict(old[a]), None, f"attack {a!r} removed")
        elif a not in old:
            c.add(TIGHTENS, name, field, None, asdict(new[a]), f"attack {a!r} added")
        else:
            how = old[a].compare(new[a])
            if how == "same":
                continue
            o, n = asdict(old[a]), asdict(new[a])
            if how == "raised":
                c.add(TIGHTENS, name, field, o, n, f"attack {a!r} budget raised")
            else:
                what = "budget lowered" if how == "lowered" else "settings changed"
                c.add(LOOSENS, name, field, o, n, f"attack {a!r} {what}")


def _concept(c: _Collector, old: ConceptPolicy, new: ConceptPolicy) -> None:
    name = old.name
    c.prompts(name, "prompts", old.prompts, new.prompts)
    c.prompts(name, "incidental_prompts", old.incidental_prompts, new.incidental_prompts)
    for r in [*old.retained, *(r for r in new.retained if r not in old.retained)]:
        field = f"retained.{r}"
        if r not in new.retained:
            c.add(LOOSENS, name, field, list(old.retained[r]), None, f"retained concept {r!r} removed")
        elif r not in old.retained:
            c.add(TIGHTENS, name, field, None, list(new.retained[r]), f"retained concept {r!r} added")
        else:
            c.prompts(name, field, old.retained[r], new.retained[r])
    if list(old.retained) != list(new.retained) and set(old.retained) == set(new.retained):
        c.add(NEUTRAL, name, "retained", list(old.retained), list(new.retained), "retained concepts reordered")
    if old.samples_per_prompt != new.samples_per_prompt:
        kind = TIGHTENS if new.samples_per_prompt > old.samples_per_prompt else LOOSENS
        c.add(kind, name, "samples_per_prompt", old.samples_per_prompt, new.samples_per_prompt)
    _rules(c, name, old.rules, new.rules)
    _attacks(c, name, old.attacks, new.attacks)
    _detector(c, name, "detector", old.detector, new.detector)
    for group in ("retained", "incidental"):
        field_name = f"{group}_detector"
        o, n = getattr(old, field_name), getattr(new, field_name)
        if o is None and n is None:
            continue
        # compared as used (None means "the concept's detector"): spelling the default out is no change
        before, after = old.detector_for(group), new.detector_for(group)
        if before == after and o != n:
            what = "now the concept's detector" if n is None else "spelled out, same settings"
            c.add(NEUTRAL, name, field_name, None, None, f"{field_name} {what}")
        else:
            _detector(c, name, field_name, before, after)


def diff_policies(old: Policy, new: Policy) -> list[Change]:
    """Every change from ``old`` to ``new``: policy-wide settings first, then concept by concept."""
    c = _Collector()
    for field in ("name", "version"):
        if getattr(old, field) != getattr(new, field):
            c.add(NEUTRAL, None, field, getattr(old, field), getattr(new, field))
    if old.seed != new.seed:
        c.add(LOOSENS, None, "seed", old.seed, new.seed, f"seed {old.seed} -> {new.seed} (the seeds are chosen anew)")
    for f in fields(Sampler):
        a, b = getattr(old.sampler, f.name), getattr(new.sampler, f.name)
        if a != b:
            c.add(NEUTRAL if f.name in ("batch_size", "vae_slicing") else LOOSENS, None, f"sampler.{f.name}", a, b)
    if old.prescreen != new.prescreen:  # report-only: it never decides a verdict
        c.add(NEUTRAL, None, "prescreen", vars(old.prescreen), vars(new.prescreen), "pre-screen budget (report only)")
    a, b = old.stopping, new.stopping
    if a.alpha != b.alpha:  # a higher error rate lets more wrong passes through
        c.add(LOOSENS if b.alpha > a.alpha else TIGHTENS, None, "stopping.alpha", a.alpha, b.alpha)
    for key in ("method", "stage_samples", "max_samples", "until"):  # how many images, not how strict
        x, y = getattr(a, key), getattr(b, key)
        if x != y:
            c.add(NEUTRAL, None, f"stopping.{key}", x, y, f"stopping.{key} {x} -> {y} (how many images are made)")
    if old.inconclusive != new.inconclusive:
        kind = LOOSENS if new.inconclusive == "pass" else TIGHTENS
        c.add(kind, None, "inconclusive", old.inconclusive, new.inconclusive)
    before = {x.name: x for x in old.concepts}
    after = {x.name: x for x in new.concepts}
    for name, concept in before.items():
        if name not in after:
            c.add(LOOSENS, name, "concept", name, None, "concept removed")
        else:
            _concept(c, concept, after[name])
    for name in after:
        if name not in before:
            c.add(TIGHTENS, name, "concept", None, name, "concept added")
    shared = [n for n in before if n in after]
    if shared != [n for n in after if n in before]:
        c.add(NEUTRAL, None, "concepts", list(before), list(after), "concepts reordered")
    if not c.changes and old.sha256 != new.sha256:
        c.add(
            NEUTRAL, None, "text", None, None, "text only (comments, descriptions or layout): nothing checked changed"
        )
    return c.changes


def summary(changes: list[Change]) -> str:
    if not changes:
        return "policy diff: no changes"
    k = sum(ch.kind == LOOSENS for ch in changes)
    return f"policy diff: {len(changes)} change{'s' if len(changes) != 1 else ''}, {k} loosen"


# -- reading a policy from a git commit -------------------------------------------------------


def _git(repo: Path | None, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = ["git", *(["-C", str(repo)] if repo is not None else []), "--literal-pathspecs", *args]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except FileNotFoundError:
        raise BadInput("git is not installed: it is needed to read REF:path policies") from None


def _blob(repo: Path | None, ref: str, path: str, spec: str) -> tuple[str, bytes]:
    """The real path (symbolic links followed, within the commit) and the bytes of ``path`` at ``ref``."""
    for _ in range(16):
        got = _git(repo, "ls-tree", "--full-tree", "-z", ref, "--", path)
        entry = got.stdout.split(b"\0")[0].decode(errors="replace") if got.returncode == 0 else ""
        if "\t" not in entry or entry.split("\t", 1)[1] != path:
            raise BadInput(f"{spec}: no file {path!r} in {ref}")
        mode, kind, _sha = entry.split("\t", 1)[0].split()
        if kind != "blob":
            raise BadInput(f"{spec}: {path!r} in {ref} is a {kind}, not a policy file")
        shown = _git(repo, "show", f"{ref}:{path}")
        if shown.returncode != 0:
            raise BadInput(f"{spec}: git show {ref}:{path} failed: {shown.stderr.decode(errors='replace').strip()}")
        if mode != "120000":
            return path, shown.stdout
        path = _inside(spec, posixpath.join(posixpath.dirname(path), shown.stdout.decode()))
    raise BadInput(f"{spec}: too many symbolic links from {path!r} in {ref}")


def _inside(spec: str, path: str) -> str:
    norm = posixpath.normpath(path)
    if posixpath.isabs(path) or norm == ".." or norm.startswith("../"):
        raise BadInput(f"{spec}: {path!r} is outside the repository; a policy read from a commit stays inside it")
    return norm


def _include_of(data: bytes) -> str | None:
    import yaml

    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError:
        return None  # load_policy reports it, with the file's name
    inc = doc.get("include") if isinstance(doc, dict) else None
    return inc if isinstance(inc, str) else None


def load_policy_ref(spec: str, repo: Path | None = None) -> Policy:
    """A policy from a file path or from ``REF:path`` (``path`` from the repository's root, read
    with ``git show`` in the current repository or ``repo``). Its ``include:`` files come from the
    same commit: they are written into a temporary directory that mirrors their paths, then loaded."""
    if Path(spec).is_file() or ":" not in spec:
        return load_policy(spec)
    ref, path = spec.split(":", 1)
    if not ref or ref.startswith("-") or not path:
        raise BadInput(f"{spec!r}: expected a policy file or REF:path (a git ref, a colon, a path in that commit)")
    where = f"in {repo}" if repo is not None else "in the current directory"
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise BadInput(f"{spec}: no git repository {where} ({top.stderr.decode(errors='replace').strip()})")
    if _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise BadInput(f"{spec}: {ref!r} is not a commit, branch or tag of the git repository {where}")
    with tempfile.TemporaryDirectory(prefix="gate-policy-") as tmp:
        root = Path(tmp).resolve()
        first: str | None = None
        todo: str | None = _inside(spec, path)
        seen: set[str] = set()
        while todo is not None and todo not in seen:
            seen.add(todo)
            real, data = _blob(repo, ref, todo, spec)
            first = first or real
            (root / real).parent.mkdir(parents=True, exist_ok=True)
            (root / real).write_bytes(data)
            inc = _include_of(data)
            todo = _inside(spec, posixpath.join(posixpath.dirname(real), inc)) if inc is not None else None
        try:
            policy = load_policy(root / str(first))
        except PolicyError as e:
            raise PolicyError(str(e).replace(f"{root}/", f"{ref}:")) from None
    files = tuple(f"{ref}:{Path(f).relative_to(root).as_posix()}" for f in policy.files)
    return replace(policy, source=spec, files=files)
