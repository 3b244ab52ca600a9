"""Where every figure comes from: content hashes, library versions, the git commit, and
atomic JSON writes. Torch-free, so ``gate merge``, ``gate track`` and ``gate validate`` stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# the packages whose versions decide an image or a score (and so belong in cache keys and reports)
LIBRARIES = ("resurgence-gate", "torch", "diffusers", "transformers", "peft", "open_clip_torch", "safetensors", "numpy")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# hashes of large files seen by this process, by (path, device, inode, size, mtime): a command
# hashes the same multi-GB weights for identities, cache keys and records. As in git's "racy
# clean" rule, a file modified in the last few seconds is never served from here (timestamps are
# coarser than writes). Never persisted, so nothing outside the process can seed it.
_HASHED: dict[tuple, str] = {}
_MEMO_MIN_BYTES = 64 << 20
_RACY_S = 3.0


def hash_file(path: Path | str) -> str:
    import time

    st = os.stat(path)
    memo = st.st_size >= _MEMO_MIN_BYTES and st.st_mtime < time.time() - _RACY_S
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if memo and key in _HASHED:
        return _HASHED[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if memo:
        _HASHED[key] = h.hexdigest()
    return h.hexdigest()


def hash_tree(path: Path | str, skip: Iterable[str] = ()) -> str:
    """Content hash of a file, or of a folder (relative names and file hashes, sorted).

    A folder's hash depends on what it holds, never on where it is: the same model in two
    checkouts hashes the same."""
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    skipped = set(skip)
    entries = [
        f"{p.relative_to(path).as_posix()}:{hash_file(p)}"
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in skipped
    ]
    return sha256_bytes("\n".join(entries).encode())


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Writes JSON to a temporary file beside ``path``, then renames it: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Writes bytes to a temporary file beside ``path``, then renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in LIBRARIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None
