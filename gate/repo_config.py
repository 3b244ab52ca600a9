"""``gate.yaml``: which files of a repository are candidates of which model line.

    version: 1
    model_lines:
      sd14-nsfw:                          # the name: [A-Za-z0-9._-], used in reports and run names
        checkpoint: models/sd14-unlearned # the unlearned model: a repository path, an absolute path or a hub id
        original: models/sd14             # optional (enables max_resurgence)
        policy: policies/sd14-nudity.yaml # a path in the repository (read from the base checkout)
        candidates:                       # globs, relative to the repository root
          - loras/sd14-nsfw/*.safetensors # a file glob: each changed file it matches is a candidate
          - models/sd14-nsfw-ft/          # a folder glob (trailing slash): the folder is one candidate
        shards: 2                         # optional, default 1
    exempt:                               # optional: weights-like files that are not candidates
      - tests/fixtures/**
    max_file_mb: 8000                     # optional cap per candidate file (default 8000)

Globs (candidates and exempt) match paths relative to the repository root, ``/``-separated,
case-sensitive, like ``.gitignore`` patterns anchored at the root:

* ``*`` matches any run of characters except ``/`` (``**`` inside a segment, as in ``a**b``, is
  the same as ``*``); ``?`` matches one character except ``/``; ``[abc]``, ``[a-z]`` and
  ``[!abc]`` match one character of (or not of) a set, never ``/``; everything else is literal;
* a segment that is exactly ``**`` matches any number of whole segments, none included:
  ``a/**/b`` matches ``a/b`` and ``a/x/y/b``; ``**/x.bin`` matches ``x.bin`` anywhere;
  a trailing ``a/**`` matches everything inside ``a`` (not ``a`` itself);
* a glob ending in ``/`` is a folder glob: it matches a folder (a proper prefix of a changed
  file's path, the shortest that matches), and the folder, not the file, is the candidate;
* globs may not start with ``/``, hold ``.`` or ``..`` segments, or empty segments.

Loaded with ``yaml.safe_load`` only; errors name the key and suggest the closest valid one
(exit 2). This module imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gate.errors import BadInput
from gate.policy import _hint

CONFIG_VERSION = 1
CONFIG_FILE = "gate.yaml"
DEFAULT_MAX_FILE_MB = 8000.0
TOP_KEYS = {"version", "model_lines", "exempt", "max_file_mb"}
LINE_KEYS = {"checkpoint", "original", "policy", "candidates", "shards"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RepoConfigError(BadInput):
    pass


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    for k in data:
        if k not in allowed:
            raise RepoConfigError(f"{where}: unknown key {k!r}{_hint(str(k), allowed)}")


def _segment(seg: str) -> str:
    """One path segment of a glob -> regex (never matching ``/``)."""
    out: list[str] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
            while i + 1 < len(seg) and seg[i + 1] == "*":
                i += 1
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < len(seg) and seg[j] in "!^":
                j += 1
            if j < len(seg) and seg[j] == "]":
                j += 1
            k = seg.find("]", j)
            if k < 0:
                out.append(re.escape(c))
            else:
                body = seg[i + 1 : k]
                neg = body[:1] in ("!", "^")
                body = "".join(ch if ch == "-" else re.escape(ch) for ch in (body[1:] if neg else body))
                out.append(f"[^/{body}]" if neg else f"[{body}]")
                i = k
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Glob:
    """A ``gate.yaml`` glob (see the module docstring)."""

    pattern: str
    folder: bool
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, pattern: str, where: str = "glob") -> Glob:
        if not isinstance(pattern, str) or not pattern.strip():
            raise RepoConfigError(f"{where}: expected a glob (text), got {pattern!r}")
        if pattern.startswith("/") or "\\" in pattern:
            raise RepoConfigError(f"{where}: {pattern!r}: globs are relative to the repository root, '/'-separated")
        folder = pattern.endswith("/")
        parts = pattern.rstrip("/").split("/") if folder else pattern.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise RepoConfigError(f"{where}: {pattern!r}: no empty, '.' or '..' segments")
        rx = ""
        for i, seg in enumerate(parts):
            last = i == len(parts) - 1
            if seg == "**":
                rx += ".+" if last else "(?:[^/]+/)*"
            else:
                rx += _segment(seg) + ("" if last else "/")
        return cls(pattern, folder, re.compile(rx))

    def matches(self, path: str) -> bool:
        """A file glob: the path itself; a folder glob: the path lies under a matching folder."""
        return (self.folder_of(path) if self.folder else self.regex.fullmatch(path)) is not None

    def folder_of(self, path: str) -> str | None:
        """The shortest proper prefix folder of ``path`` that this glob matches."""
        parts = path.split("/")
        for k in range(1, len(parts)):
            prefix = "/".join(parts[:k])
            if self.regex.fullmatch(prefix):
                return prefix
        return None


def _repo_path(where: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RepoConfigError(f"{where}: expected {what}, got {value!r}")
    parts = value.strip("/").split("/")
    if value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts):
        raise RepoConfigError(f"{where}: {value!r}: expected a path relative to the repository root")
    return value.rstrip("/")


def _model(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RepoConfigError(f"{where}: expected a repository path, an absolute path or a hub id, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelLine:
    name: str
    checkpoint: str
    policy: str
    candidates: tuple[Glob, ...]
    original: str | None = None
    shards: int = 1

    def match(self, path: str) -> tuple[str, str] | None:
        """(kind, candidate path) for a changed file: folder globs first (a file inside a folder
        candidate belongs to the folder), then file globs; None when no glob matches."""
        for g in self.candidates:
            if g.folder and (folder := g.folder_of(path)) is not None:
                return "folder", folder
        for g in self.candidates:
            if not g.folder and g.matches(path):
                return "file", path
        return None

    def covers(self, path: str) -> bool:
        """A glob of this line matches the path itself (a file glob, or a folder glob naming it)."""
        return any(g.regex.fullmatch(path) for g in self.candidates) or self.match(path) is not None


@dataclass(frozen=True)
class RepoConfig:
    model_lines: tuple[ModelLine, ...]
    exempt: tuple[Glob, ...] = ()
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    source: str = CONFIG_FILE

    def line(self, name: str) -> ModelLine:
        for m in self.model_lines:
            if m.name == name:
                return m
        raise RepoConfigError(f"{self.source}: no model line {name!r}{_hint(name, {m.name for m in self.model_lines})}")

    def is_exempt(self, path: str) -> bool:
        return any(g.matches(path) for g in self.exempt)


def _line(where: str, name: Any, raw: Any) -> ModelLine:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RepoConfigError(f"{where}: model line name {name!r}: use letters, digits, '.', '_' and '-'")
    where = f"{where}.{name}"
    if not isinstance(raw, dict):
        raise RepoConfigError(f"{where}: expected a mapping (checkpoint, policy, candidates, ...), got {raw!r}")
    _check_keys(where, raw, LINE_KEYS)
    for key in ("checkpoint", "policy", "candidates"):
        if key not in raw:
            raise RepoConfigError(f"{where}: missing {key!r}")
    globs = raw["candidates"]
    if isinstance(globs, str):
        globs = [globs]
    if not isinstance(globs, list) or not globs:
        raise RepoConfigError(f"{where}.candidates: expected a list of globs, got {globs!r}")
    shards = raw.get("shards", 1)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise RepoConfigError(f"{where}.shards: expected a whole number >= 1, got {shards!r}")
    original = raw.get("original")
    return ModelLine(
        name=name,
        checkpoint=_model(f"{where}.checkpoint", raw["checkpoint"]),
        policy=_repo_path(f"{where}.policy", raw["policy"], "a policy file in the repository"),
        candidates=tuple(Glob.parse(g, f"{where}.candidates[{i}]") for i, g in enumerate(globs)),
        original=None if original is None else _model(f"{where}.original", original),
        shards=shards,
    )


def load_repo_config(text: str, where: str = CONFIG_FILE) -> RepoConfig:
    """Parses the text of a ``gate.yaml``; ``where`` names it in errors (e.g. ``main:gate.yaml``)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RepoConfigError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RepoConfigError(f"{where}: expected a mapping of keys (version, model_lines, exempt, max_file_mb)")
    _check_keys(where, data, TOP_KEYS)
    version = data.get("version")
    if version is None:
        raise RepoConfigError(f"{where}: missing 'version' (this gate reads version {CONFIG_VERSION})")
    if version != CONFIG_VERSION:
        raise RepoConfigError(f"{where}: version {version!r} is not supported (this gate reads {CONFIG_VERSION})")
    lines_raw = data.get("model_lines") or {}
    if not isinstance(lines_raw, dict):
        raise RepoConfigError(f"{where}: model_lines: expected a mapping of names to model lines")
    lines = tuple(_line(f"{where}: model_lines", k, v) for k, v in lines_raw.items())
    exempt_raw = data.get("exempt") or []
    if isinstance(exempt_raw, str):
        exempt_raw = [exempt_raw]
    if not isinstance(exempt_raw, list):
        raise RepoConfigError(f"{where}: exempt: expected a list of globs, got {exempt_raw!r}")
    exempt = tuple(Glob.parse(g, f"{where}: exempt[{i}]") for i, g in enumerate(exempt_raw))
    cap = data.get("max_file_mb", DEFAULT_MAX_FILE_MB)
    if isinstance(cap, bool) or not isinstance(cap, int | float) or cap <= 0:
        raise RepoConfigError(f"{where}: max_file_mb: expected a number of megabytes > 0, got {cap!r}")
    return RepoConfig(lines, exempt, float(cap), where)
