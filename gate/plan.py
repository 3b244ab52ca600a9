"""``gate plan``: the candidates of a pull request, from git alone, by the base's rules.

The rules come from ``gate.yaml`` at the BASE ref (see :mod:`gate.repo_config` for its keys
and glob semantics), never from the head: a pull request cannot steer its own files out of
the gate by editing ``gate.yaml``. The changes are ``git diff --raw --no-renames BASE...HEAD``
(three dots: since the merge base; a rename is a deletion plus an addition). For each changed
path:

* deleted files are not candidates (a deletion under a folder candidate that still exists at
  HEAD makes the folder a candidate: the model changed);
* a path matched by a model line's globs is a candidate of that line (a folder glob makes the
  folder one candidate, however many of its files changed); two model lines -> bad input;
* weights-like paths (suffixes in ``WEIGHT_SUFFIXES``, or any file under a folder holding
  ``model_index.json``, or ``config.json`` with ``diffusion_pytorch_model*.safetensors``, at
  BASE or HEAD) that no model line and no ``exempt`` glob matches are *not gated*;
* candidates are *refused* when they are pickles (``PICKLE_SUFFIXES``: CI never unpickles),
  over ``max_file_mb`` (MB = 10**6 bytes; a git-lfs pointer counts its object's size), symbolic
  links or submodules, or when their path holds characters outside ``[A-Za-z0-9._/+@-]``
  (paths travel into CI shells). A folder candidate is refused when any file in it is.

Refs and paths reach git only as list arguments (never through a shell). No torch here.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import EXIT_FAIL, EXIT_PASS, BadInput
from gate.repo_config import CONFIG_FILE, ModelLine, RepoConfig, load_repo_config

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".onnx", ".gguf")
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle")
SAFE_PATH = re.compile(r"[A-Za-z0-9._/+@-]+")
NO_CHANGES = "no model files changed"
MB = 1_000_000
LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"


@dataclass(frozen=True)
class Candidate:
    id: str
    model_line: str
    path: str
    kind: str  # "file" or "folder"
    checkpoint: str
    original: str | None
    policy: str
    shards: int

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Finding:
    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Plan:
    base: str
    head: str
    changed: int
    candidates: list[Candidate] = field(default_factory=list)
    not_gated: list[Finding] = field(default_factory=list)
    refused: list[Finding] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # deleted candidate paths (not planned; table only)

    @property
    def ok(self) -> bool:
        return not self.not_gated and not self.refused

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.ok else EXIT_FAIL

    def matrix(self) -> dict[str, list[dict[str, Any]]]:
        """A GitHub Actions matrix: one job per (candidate, shard); ``{"include": []}`` when none."""
        return {
            "include": [
                {"candidate": c.id, "shard": i, "shards": c.shards}
                for c in self.candidates
                for i in range(1, c.shards + 1)
            ]
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base": self.base,
            "head": self.head,
            "changed": self.changed,
            "candidates": [c.to_json() for c in self.candidates],
            "matrix": self.matrix(),
            "not_gated": [f.to_json() for f in self.not_gated],
            "refused": [f.to_json() for f in self.refused],
        }
        if not (self.candidates or self.not_gated or self.refused):
            out["note"] = NO_CHANGES
        return out


# --- git ----------------------------------------------------------------------------------------


def _git(repo: Path, *args: str, what: str) -> bytes:
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise BadInput("git is not installed (gate plan reads the repository with git)") from None
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        raise BadInput(f"{what}: {msg[-1] if msg else f'git exited {r.returncode}'}")
    return r.stdout


def _rev(repo: Path, ref: str, flag: str) -> str:
    if not ref or ref.startswith("-"):
        raise BadInput(f"{flag} {ref!r}: not a git ref")
    try:
        out = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", what="")
    except BadInput:
        raise BadInput(f"{flag} {ref!r}: no such commit in {repo} (fetched? a shallow clone lacks history)") from None
    return out.decode().strip()


@dataclass(frozen=True)
class Entry:
    mode: str
    type: str
    oid: str
    size: int  # -1 for trees and submodules


def _tree(repo: Path, rev: str) -> dict[str, Entry]:
    """Every file at ``rev``: path -> mode, type, object id, size (``git ls-tree -r -l``)."""
    out: dict[str, Entry] = {}
    for rec in _git(repo, "ls-tree", "-r", "-l", "-z", rev, what=f"git ls-tree {rev[:12]}").split(b"\0"):
        if not rec:
            continue
        meta, _, path = rec.partition(b"\t")
        mode, typ, oid, size = meta.decode().split()
        out[path.decode("utf-8", errors="surrogateescape")] = Entry(mode, typ, oid, int(size) if size != "-" else -1)
    return out


def _changes(repo: Path, base: str, head: str) -> list[tuple[str, str]]:
    """(status letter, path) of ``git diff --raw --no-renames base...head``."""
    raw = _git(
        repo, "-c", "diff.renames=false", "diff", "--raw", "-z", "--no-renames", "--no-abbrev", "--no-ext-diff",
        "--no-textconv", f"{base}...{head}", "--",
        what=f"git diff {base[:12]}...{head[:12]} (a shallow clone? fetch the history, e.g. fetch-depth: 0)",
    ).split(b"\0")  # fmt: skip
    out = []
    i = 0
    while i + 1 < len(raw):
        meta = raw[i].decode()
        if not meta.startswith(":"):
            i += 1
            continue
        out.append((meta.split()[-1][:1], raw[i + 1].decode("utf-8", errors="surrogateescape")))
        i += 2
    return out


def _lfs_sizes(repo: Path, oids: list[str]) -> dict[str, int]:
    """Sizes named by git-lfs pointers among small blobs (``git cat-file --batch``)."""
    if not oids:
        return {}
    r = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"], input="\n".join(oids).encode() + b"\n", capture_output=True
    )
    out: dict[str, int] = {}
    data, pos = r.stdout, 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        head = data[pos:nl].split()
        if len(head) < 3:
            break
        n = int(head[2])
        body = data[nl + 1 : nl + 1 + n]
        pos = nl + 1 + n + 1
        m = re.search(rb"^size (\d+)$", body, re.M)
        if body.startswith(LFS_HEADER) and m:
            out[head[0].decode()] = int(m.group(1))
    return out


def _model_folders(tree: dict[str, Entry]) -> set[str]:
    by_dir: dict[str, set[str]] = {}
    for p in tree:
        d, _, name = p.rpartition("/")
        by_dir.setdefault(d, set()).add(name)
    return {
        d
        for d, names in by_dir.items()
        if "model_index.json" in names
        or ("config.json" in names and any(re.fullmatch(r"diffusion_pytorch_model.*\.safetensors", n) for n in names))
    }


def _folders_of(path: str, folders: set[str]) -> list[str]:
    """The model folders ``path`` lies under ("" is the repository root)."""
    parts = path.split("/")
    return [d for k in range(len(parts)) if (d := "/".join(parts[:k])) in folders]


def _ungated(status: str, path: str, folders: set[str], head_dirs: set[str]) -> bool:
    """A change that needs a model line: a weights-like file added or modified, or a deletion
    inside a model folder that still exists at HEAD (the model changed)."""
    if status == "D":
        return any(d in head_dirs for d in _folders_of(path, folders))
    return path.lower().endswith(WEIGHT_SUFFIXES) or bool(_folders_of(path, folders))


# --- the plan -----------------------------------------------------------------------------------


def read_config(repo: Path, base: str) -> RepoConfig:
    where = f"{base[:12]}:{CONFIG_FILE}"
    try:
        text = _git(repo, "cat-file", "blob", f"{base}:{CONFIG_FILE}", what="")
    except BadInput:
        raise BadInput(f"no {CONFIG_FILE} at the base ref {base[:12]} (the plan reads the base's rules)") from None
    return load_repo_config(text.decode("utf-8", errors="replace"), where)


def _check_policies(cfg: RepoConfig, base_tree: dict[str, Entry]) -> None:
    for m in cfg.model_lines:
        e = base_tree.get(m.policy)
        if e is None or e.type != "blob" or e.mode == "120000":
            raise BadInput(f"{cfg.source}: model line {m.name!r}: policy {m.policy!r} is not a file at the base ref")


def _slug(path: str, kind: str) -> str:
    stem = path.rsplit(".", 1)[0] if kind == "file" and "." in path.rsplit("/", 1)[-1] else path
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem.replace("/", "-")).strip("-.") or "root"


def _ids(found: list[tuple[ModelLine, str, str]]) -> list[str]:
    import hashlib

    ids: list[str] = []
    for line, path, kind in found:
        cid = f"{line.name}.{_slug(path, kind)}"
        if len(cid) > 100 or cid in ids:
            cid = f"{cid[:80]}-{hashlib.sha256(path.encode(errors='surrogateescape')).hexdigest()[:10]}"
        ids.append(cid)
    return ids


def _refusal(path: str, e: Entry | None, size: int, cap: float) -> str | None:
    if not SAFE_PATH.fullmatch(path):
        return "path holds characters outside [A-Za-z0-9._/+@-]; rename it (paths travel into CI shells)"
    if e is not None and e.mode == "120000":
        return "a symbolic link: the gate reads only files stored in the repository"
    if e is not None and e.mode == "160000":
        return "a git submodule: its contents are not in this repository"
    if path.lower().endswith(PICKLE_SUFFIXES):
        return "pickle weights (code runs when they load): CI refuses them; convert to .safetensors"
    if size > cap * MB:
        return f"{size / MB:.1f} MB, over max_file_mb {cap:g} in {CONFIG_FILE}"
    return None


def plan(repo: Path, base: str, head: str) -> Plan:
    """The plan of ``base...head`` in the git repository at (or above) ``repo``, by base's ``gate.yaml``."""
    repo = Path(_git(Path(repo), "rev-parse", "--show-toplevel", what=f"{repo}: not a git repository").decode().strip())
    b, h = _rev(repo, base, "--base"), _rev(repo, head, "--head")
    cfg = read_config(repo, b)
    base_tree, head_tree = _tree(repo, b), _tree(repo, h)
    _check_policies(cfg, base_tree)
    folders = _model_folders(base_tree) | _model_folders(head_tree)
    head_dirs = _dirs(head_tree)
    changes = _changes(repo, b, h)
    result = Plan(base=b, head=h, changed=len(changes))
    found: dict[tuple[str, str], tuple[ModelLine, str, str]] = {}  # (line, candidate path) -> (line, path, kind)
    for status, path in changes:
        hits = [(m, hit) for m in cfg.model_lines if (hit := m.match(path)) is not None]
        e = head_tree.get(path)
        if len(hits) > 1:
            names = " and ".join(repr(m.name) for m, _ in hits)
            raise BadInput(f"{cfg.source}: {path!r} matches the candidates of model lines {names}: make them disjoint")
        if not hits:
            if e is not None and e.mode == "160000" and any(m.covers(path) for m in cfg.model_lines):
                result.refused.append(Finding(path, "a git submodule where a model line expects candidates"))
            elif _ungated(status, path, folders, head_dirs) and not cfg.is_exempt(path):
                result.not_gated.append(Finding(path, _not_gated_reason(path, folders)))
            continue
        line, (kind, cpath) = hits[0]
        if kind == "file" and status == "D":
            result.deleted.append(path)
            continue
        if kind == "folder" and cpath not in head_dirs:
            if cpath not in result.deleted:
                result.deleted.append(cpath)
            continue
        found.setdefault((line.name, cpath), (line, cpath, kind))
    _refuse(repo, cfg, head_tree, found, result)
    result.not_gated.sort(key=lambda f: f.path)
    result.refused.sort(key=lambda f: f.path)
    ordered = sorted(found.values(), key=lambda t: (t[0].name, t[1]))
    for cid, (line, cpath, kind) in zip(_ids(ordered), ordered, strict=True):
        result.candidates.append(
            Candidate(cid, line.name, cpath, kind, line.checkpoint, line.original, line.policy, line.shards)
        )
    return result


def _dirs(tree: dict[str, Entry]) -> set[str]:
    """Every folder holding a file of ``tree`` ("" is the root)."""
    out = {""}
    for p in tree:
        parts = p.split("/")
        out.update("/".join(parts[:k]) for k in range(1, len(parts)))
    return out


def _not_gated_reason(path: str, folders: set[str]) -> str:
    if path.lower().endswith(PICKLE_SUFFIXES):
        what = "pickle weights"
    elif path.lower().endswith(WEIGHT_SUFFIXES):
        what = "a weights file"
    else:
        what = f"a file of the model folder {(_folders_of(path, folders) or [''])[0] or '.'}"
    return f"{what}, in no model line's candidates and not exempt in the base's {CONFIG_FILE}"


def _refuse(
    repo: Path,
    cfg: RepoConfig,
    tree: dict[str, Entry],
    found: dict[tuple[str, str], tuple[ModelLine, str, str]],
    result: Plan,
) -> None:
    """Moves refused candidates out of ``found`` into ``result.refused`` (a folder: every file in it)."""
    members: dict[tuple[str, str], list[str]] = {}
    for key, (_, cpath, kind) in found.items():
        members[key] = [cpath] if kind == "file" else sorted(p for p in tree if p.startswith(f"{cpath}/"))
    small = sorted({tree[p].oid for ps in members.values() for p in ps if p in tree and 0 <= tree[p].size < 1024})
    lfs = _lfs_sizes(repo, small)
    for key, paths in members.items():
        bad = []
        for p in paths:
            e = tree.get(p)
            size = -1 if e is None else lfs.get(e.oid, e.size)
            if (why := _refusal(p, e, size, cfg.max_file_mb)) is not None:
                bad.append(Finding(p, why if found[key][2] == "file" else f"{why} (in folder candidate {key[1]})"))
        if bad:
            result.refused.extend(bad)
            del found[key]
