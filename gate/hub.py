"""Inputs that come from the Hugging Face hub: read from a local hub cache at check time (never
downloaded then), fetched into that cache beforehand by ``gate models fetch`` on a connected machine.

Two kinds of hub input:

- a diffusers Stable Diffusion repo given as ``--checkpoint ORG/NAME[@REVISION]``;
- an open_clip detector's ``pretrained`` tag: open_clip's own pretrained table
  (``open_clip.pretrained.get_pretrained_cfg``) names the hub repo, and open_clip reads the weights
  with ``hf_hub_download`` from ``cache_dir`` (the detector's setting; by default ``$HF_HUB_CACHE``,
  i.e. ``$HF_HOME/hub``). Only the repo's safetensors file is fetched and used.

A hub cache is ``models--ORG--NAME/{refs,snapshots,blobs}``: ``refs/main`` holds the commit a
branch pointed at when it was fetched and ``snapshots/COMMIT/`` the files of that commit, so the
snapshot folder's name is the revision a check records. Untrusted weights are never unpickled:
a repo whose component offers only ``.bin``/``.ckpt``/``.pt`` weights is refused at fetch time.

The lock file (``gate-models.lock.json``) records, per fetched repo: the revision asked for, the
commit it resolved to, every file with its sha256, and when.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import BadInput, InternalError
from gate.weights import PICKLE_SUFFIXES

LOCK_DEFAULT = "gate-models.lock.json"
LOCK_VERSION = 1
# what of a diffusers pipeline repo is fetched: its index, configs, safetensors weights, tokenizer,
# scheduler and image processor; never pickles
PIPELINE_PATTERNS = [
    "model_index.json", "*/config.json", "*/*.safetensors", "tokenizer/*", "tokenizer_2/*", "scheduler/*",
    "feature_extractor/*",
]  # fmt: skip
# precision variants (diffusers loads the plain files) and the safety checker (the gate loads SD
# with safety_checker=None; it is 1.2 GB in SD v1.4) are left out
PIPELINE_IGNORE = ["*.fp16.*", "*.bf16.*", "*.ema.*", "*.non_ema.*", "safety_checker/*"]
OPEN_CLIP_PICKLE = "open_clip_pytorch_model.bin"  # open_clip's HF_WEIGHTS_NAME
OPEN_CLIP_SAFE = "open_clip_model.safetensors"  # open_clip's HF_SAFE_WEIGHTS_NAME, which it tries first
FETCH_HINT = "run `gate models fetch --policy POLICY` on a connected machine (docs/offline.md)"


# -- paths, ids and the local cache (offline) ------------------------------------------------
def expand_path(value: Any, base_dir: Path, what: str) -> Path:
    """A folder setting: ``~`` and ``$VAR`` expanded, then relative to ``base_dir`` (the policy's folder)."""
    text = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in text:
        raise BadInput(f"{what} {value!r}: an environment variable in it is not set")
    p = Path(text)
    return p if p.is_absolute() else (base_dir / p).resolve()


def parse_hub_id(spec: str, flag: str = "--checkpoint") -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo, at, revision = spec.partition("@")
    if at and not revision.strip():
        raise BadInput(f"{flag} {spec}: give a revision after @ (a branch, tag or commit sha), or leave @ out")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        ok = False
    else:
        ok = repo.count("/") == 1
    if not ok:
        raise BadInput(f"{flag} {spec}: not a hub id ORG/NAME[@REVISION] (letters, digits, '-', '_', '.')")
    return repo, (revision.strip() or None)


def cached_file(repo: str, filename: str, cache_dir: Path | None = None, revision: str | None = None):
    """(path, commit) of ``filename`` in the local hub cache at ``revision`` (a branch, tag or
    commit; default main), or None. Reads the cache only."""
    from huggingface_hub import try_to_load_from_cache

    p = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir) if cache_dir else None, revision=revision)
    if not isinstance(p, str):
        return None
    path = Path(p)
    return path, path.parts[-len(filename.split("/")) - 1]


def cache_root(cache_dir: Path | None) -> str:
    from huggingface_hub import constants

    return str(cache_dir) if cache_dir else constants.HF_HUB_CACHE


def pickle_only_components(files: list[str]) -> list[str]:
    """The component folders of a diffusers pipeline whose weights are only pickles (the safety
    checker and precision variants, never loaded, left out)."""
    from huggingface_hub.utils import filter_repo_objects

    weights: dict[str, set[str]] = {}
    for f in filter_repo_objects(files, ignore_patterns=PIPELINE_IGNORE):
        folder, _, name = f.rpartition("/")
        if folder and (Path(name).suffix == ".safetensors" or Path(name).suffix in PICKLE_SUFFIXES):
            weights.setdefault(folder, set()).add(Path(name).suffix)
    return sorted(k for k, v in weights.items() if ".safetensors" not in v)


def cached_snapshot(spec: str, flag: str = "--checkpoint", allow_pickle: bool = False) -> tuple[str, str | None, Path]:
    """(repo, requested revision, snapshot folder) of a diffusers repo in the local hub cache; a
    snapshot with pickle-only components is refused unless ``allow_pickle``."""
    repo, revision = parse_hub_id(spec, flag)
    found = cached_file(repo, "model_index.json", revision=revision)
    if found is None:
        raise BadInput(
            f"{flag} {spec}: not in the local hub cache {cache_root(None)} (revision {revision or 'main'}); "
            f"fetch it on a connected machine with `gate models fetch --checkpoint {spec}` and copy the cache "
            "(docs/offline.md), or give a diffusers folder"
        )
    snap = found[0].parent
    bad = pickle_only_components([p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()])
    if bad and not allow_pickle:
        raise BadInput(
            f"{flag} {spec}: {', '.join(bad)} in the cached snapshot {snap.name} hold only pickled weights; "
            "pickles can run code and are refused (fetch a revision with .safetensors, or pass --allow-pickle)"
        )
    return repo, revision, snap


@contextmanager
def offline() -> Iterator[None]:
    """No hub request while this runs (open_clip calls ``hf_hub_download`` even for cached tags)."""
    from huggingface_hub import constants

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    before, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


# -- open_clip pretrained tags -----------------------------------------------------------------
@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str


def open_clip_source(model: str, tag: str) -> HubFile:
    """The hub repo and safetensors file open_clip reads for ``model`` / ``tag``."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(model, tag)
    if not cfg:
        tags = list_pretrained_tags_by_model(model)
        near = difflib.get_close_matches(tag, tags, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else (f" (its tags: {', '.join(tags)})" if tags else "")
        raise BadInput(f"open_clip detector: {model!r} has no pretrained tag {tag!r}{hint}")
    hub = str(cfg.get("hf_hub") or "")
    if not hub:
        raise BadInput(
            f"open_clip detector {model}/{tag}: not on the Hugging Face hub (only a URL to pickled weights, "
            "which the gate does not load); give pretrained: a .safetensors file"
        )
    repo, filename = os.path.split(hub)
    if not filename or filename == OPEN_CLIP_PICKLE:
        filename = OPEN_CLIP_SAFE
    elif filename.endswith((".bin", ".pth")):
        filename = filename[:-4] + ".safetensors"  # the alternative open_clip tries first
    return HubFile(repo, filename)


def open_clip_cached(model: str, tag: str, cache_dir: Path | None) -> tuple[HubFile, Path, str]:
    """(source, weights file, commit) of a tag in the local cache; BadInput saying how to fetch it."""
    src = open_clip_source(model, tag)
    found = cached_file(src.repo, src.filename, cache_dir)
    if found is None:
        raise BadInput(
            f"open_clip detector {model}/{tag}: {src.repo}/{src.filename} is not in the hub cache "
            f"{cache_root(cache_dir)}; {FETCH_HINT}, or give pretrained: a .safetensors file"
        )
    return src, found[0], found[1]


# -- what a policy and the command line ask for --------------------------------------------------
@dataclass
class Want:
    """One hub repo to fetch: all of a diffusers pipeline, or one open_clip weights file."""

    kind: str  # "checkpoint" or "open_clip"
    repo: str
    revision: str
    cache_dir: Path | None
    filename: str | None = None  # open_clip: its one file
    used_by: list[str] = field(default_factory=list)


def _policy_detectors(path: Path) -> dict[str, Any]:
    """Where -> DetectorSpec, for each detector a policy's concepts use (a base: its named ones)."""
    import yaml

    from gate.policy import _detector, load_policy, validate_base

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raw = None  # load_policy says what is wrong
    if isinstance(raw, dict) and "concepts" not in raw and "include" not in raw:
        named = validate_base(path).get("detectors") or {}
        return {f"detector {n}": _detector(f"{path.name}: detectors.{n}", {"use": n}, named) for n in named}
    out = {}
    for c in load_policy(path).concepts:
        out[f"concept {c.name!r}"] = c.detector
        for group in ("retained", "incidental"):
            if (spec := getattr(c, f"{group}_detector")) is not None:
                out[f"concept {c.name!r} ({group})"] = spec
    return out


def plan(policy: str | None, checkpoints: list[str], cache_dir: Path | None) -> tuple[list[Want], list[str]]:
    """What to fetch, and notes on what needs nothing (NudeNet, weights files)."""
    wants: dict[tuple, Want] = {}
    notes: list[str] = []
    if policy:
        path = Path(policy)
        for where, spec in _policy_detectors(path).items():
            s = spec.settings
            if spec.type == "nudenet":
                note = "nudenet: nothing to fetch (its ONNX model ships inside the nudenet wheel)"
            elif spec.type == "open_clip":
                model, tag = str(s.get("model", "")), str(s.get("pretrained", ""))
                if not model or not tag:
                    raise BadInput(f"{path.name}: {where}: open_clip needs 'model' and 'pretrained'")
                if Path(tag).suffix:
                    note = f"open_clip {model}: weights file {tag}: nothing to fetch"
                else:
                    src = open_clip_source(model, tag)
                    cache = expand_path(s["cache_dir"], path.parent, "cache_dir") if s.get("cache_dir") else cache_dir
                    w = wants.setdefault(("open_clip", src.repo, src.filename, cache),
                                         Want("open_clip", src.repo, "main", cache, src.filename))  # fmt: skip
                    w.used_by.append(f"{where}: {model}/{tag}")
                    continue
            else:
                note = f"{spec.type}: nothing to fetch (reads local files)"
            if note not in notes:
                notes.append(note)
    for spec in checkpoints:
        repo, revision = parse_hub_id(spec)
        w = wants.setdefault(("checkpoint", repo, revision, cache_dir),
                             Want("checkpoint", repo, revision or "main", cache_dir))  # fmt: skip
        w.used_by.append(f"--checkpoint {spec}")
    return list(wants.values()), notes


# -- fetching (online) -------------------------------------------------------------------------
def check_online() -> None:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise BadInput(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: `gate models fetch` downloads, so run it on a "
            "connected machine with it unset (e.g. HF_HUB_OFFLINE=0 gate models fetch ...)"
        )


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """The hub's errors as the gate's: a wrong repo or revision is bad input (2), an unreachable
    hub a tool error (3); one line, no traceback."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub import errors as E

    try:
        yield
    except E.GatedRepoError:
        raise BadInput(f"{what}: a gated repo; accept its terms on the hub and set HF_TOKEN") from None
    except E.RepositoryNotFoundError:
        raise BadInput(f"{what}: no such repo on {constants.ENDPOINT} (or it is private: set HF_TOKEN)") from None
    except E.RevisionNotFoundError:
        raise BadInput(f"{what}: no such revision (a branch, tag or full commit sha)") from None
    except E.RemoteEntryNotFoundError as e:
        raise BadInput(f"{what}: a file is missing from the repo ({str(e).splitlines()[-1]})") from None
    except (httpx2.HTTPError, E.OfflineModeIsEnabled, E.LocalEntryNotFoundError, E.HfHubHTTPError) as e:
        detail = " ".join(str(e).split())[:300]
        raise InternalError(
            f"{what}: cannot reach the hub at {constants.ENDPOINT} ({type(e).__name__}: {detail}); "
            "check the network, HF_ENDPOINT and proxy settings, then run it again"
        ) from None


def _select(want: Want, files: list[str]) -> list[str]:
    """The repo files to fetch; refuses repos that offer only pickles for what the gate needs."""
    from huggingface_hub.utils import filter_repo_objects

    if want.kind == "open_clip":
        if want.filename in files:
            return [want.filename]
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        why = f"it offers only pickles ({', '.join(pickles)})" if pickles else "no such file there"
        raise BadInput(
            f"open_clip weights {want.repo}/{want.filename}: {why}; untrusted weights are never unpickled: "
            "give the detector pretrained: a .safetensors file"
        )
    if "model_index.json" not in files:
        raise BadInput(f"--checkpoint {want.repo}: not a diffusers pipeline repo (no model_index.json)")
    chosen = list(filter_repo_objects(files, allow_patterns=PIPELINE_PATTERNS, ignore_patterns=PIPELINE_IGNORE))
    only_pickles = pickle_only_components(files)
    if only_pickles:
        raise BadInput(
            f"--checkpoint {want.repo}@{want.revision}: {', '.join(only_pickles)} offer(s) only pickled weights "
            "(.bin/.ckpt/.pt); untrusted weights are never unpickled: use a revision or repo with .safetensors"
        )
    if not any(f.endswith(".safetensors") for f in chosen):
        raise BadInput(f"--checkpoint {want.repo}@{want.revision}: no safetensors weights in it")
    return sorted(chosen)


def fetch(wants: list[Want], *, dry_run: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Downloads each want into its cache (or, with ``dry_run``, lists it); returns lock entries."""
    import datetime as dt

    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download

    from gate.provenance import hash_file

    check_online()
    api, entries = HfApi(), []
    for w in wants:
        what = f"{w.kind} {w.repo}@{w.revision}"
        with hub_errors(what):
            info = api.model_info(w.repo, revision=w.revision, files_metadata=True)
            siblings = {s.rfilename: s for s in info.siblings or []}
            files = _select(w, list(siblings))
            size = sum(siblings[f].size or 0 for f in files)
            head = f"{what} -> {info.sha}: {len(files)} file(s), {size / 1e6:.1f} MB, into {cache_root(w.cache_dir)}"
            if dry_run:
                log(f"would fetch {head}")
                for f in files:
                    log(f"  {f}")
                continue
            cache = str(w.cache_dir) if w.cache_dir else None
            if w.kind == "open_clip":
                assert w.filename is not None  # an open_clip entry always names its weights file
                hf_hub_download(w.repo, w.filename, revision=w.revision, cache_dir=cache)
            else:
                snapshot_download(w.repo, revision=w.revision, cache_dir=cache,
                                  allow_patterns=PIPELINE_PATTERNS, ignore_patterns=PIPELINE_IGNORE)  # fmt: skip
        found = cached_file(w.repo, files[0], w.cache_dir, revision=w.revision)
        if found is None or found[1] != info.sha:
            raise InternalError(f"{what}: the branch moved while fetching ({info.sha} asked); run it again")
        snap = found[0].parents[len(files[0].split("/")) - 1]
        records = []
        for f in files:
            sha = hash_file(snap / f)
            lfs = siblings[f].lfs
            if lfs is not None and lfs.sha256 != sha:
                raise InternalError(f"{what}: {f} arrived corrupt (sha256 {sha}, the hub says {lfs.sha256})")
            records.append({"path": f, "size": (snap / f).stat().st_size, "sha256": sha})
        log(f"fetched {head}")
        entries.append({
            "kind": w.kind, "repo": w.repo, "requested_revision": w.revision, "resolved_commit": info.sha,
            "endpoint": constants.ENDPOINT, "cache_dir": cache, "used_by": w.used_by, "files": records,
            "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        })  # fmt: skip
    return entries


# -- the lock file -------------------------------------------------------------------------------
def read_lock(path: Path) -> dict:
    import json

    if not path.exists():
        return {"version": LOCK_VERSION, "models": []}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"--lock {path}: not a readable lock file ({e}); move it away or pass another --lock") from None
    if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION or not isinstance(doc.get("models"), list):
        raise BadInput(f"--lock {path}: not a gate models lock file (version {LOCK_VERSION})")
    return doc


def write_lock(path: Path, entries: list[dict]) -> dict:
    """Merges ``entries`` into the lock at ``path`` (one entry per kind, repo, revision and cache)."""
    from gate import __version__
    from gate.provenance import write_json_atomic

    doc = read_lock(path)

    def key(e: dict) -> tuple:
        return e.get("kind"), e.get("repo"), e.get("requested_revision"), e.get("cache_dir")

    merged = {key(e): e for e in doc["models"]}
    merged.update({key(e): e for e in entries})
    doc = {"version": LOCK_VERSION, "tool": f"gate {__version__}",
           "models": sorted(merged.values(), key=lambda e: tuple(str(x) for x in key(e)))}  # fmt: skip
    write_json_atomic(path, doc)
    return doc
