"""``gate models fetch`` against a local stand-in for the Hugging Face hub, then the offline check.

The network is what cannot run here (the test machines are offline, as the runners are), so a
small ``http.server`` in a thread answers the endpoints huggingface_hub 2.4 calls for
``snapshot_download`` and ``hf_hub_download``: model info (``GET /api/models/{repo}/revision/{rev}``),
the recursive tree listing (``GET /api/models/{repo}/tree/{rev}``) and files (``HEAD``/``GET
/{repo}/resolve/{rev}/{file}``, with ``X-Repo-Commit``, ``ETag`` and, for LFS files,
``X-Linked-Etag``/``X-Linked-Size``). It serves the small world's SD (a real diffusers folder with
safetensors weights) and its CLIP as open_clip weights. The fetch runs in a subprocess with a clean
environment (``HF_ENDPOINT`` pointed at the stand-in, ``HF_HUB_OFFLINE`` unset for that process
only: huggingface_hub reads both at import time); the loads afterwards run here, offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS, object_texts

ROOT = Path(__file__).resolve().parents[2]
LFS = (".safetensors", ".bin", ".ckpt")
TAG = "gatetest"  # an open_clip pretrained tag for the world's CLIP, registered by the test only


def _register_tag() -> str:
    """Python run before the CLI in the subprocess (and mirrored here with monkeypatch)."""
    return (
        "import open_clip.pretrained as P\n"
        f"P._PRETRAINED.setdefault('world-clip', {{}})[{TAG!r}] = P._pcfg(hf_hub='gate-test/world-clip/')\n"
    )


class StandInHub:
    """Repos in memory: name -> (commit, {path: bytes}). Records every request it answers."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub.answer(self, head=False)

            def do_HEAD(self) -> None:
                hub.answer(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, files: dict[str, bytes]) -> str:
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode())
        self.repos[repo] = (commit.hexdigest(), files)
        return commit.hexdigest()

    @staticmethod
    def meta(path: str, data: bytes) -> dict:
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # a git blob id
        m = {"path": path, "size": len(data), "oid": oid}
        if path.endswith(LFS):
            m["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return m

    def answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
        r = m or re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if r is None:
            return self.send(h, 404, b"{}", head=head)
        repo = r.group(1)
        rev = r.group(3) if m else r.group(2)
        if repo not in self.repos:
            return self.send(h, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
        commit, files = self.repos[repo]
        if rev not in ("main", commit):
            return self.send(h, 404, b'{"error": "Invalid rev"}', {"X-Error-Code": "RevisionNotFound"}, head)
        if m and m.group(2) == "revision":
            sib = []
            for p, d in sorted(files.items()):
                x = self.meta(p, d)
                lfs = x.get("lfs") and {"size": x["lfs"]["size"], "sha256": x["lfs"]["oid"], "pointerSize": 134}
                sib.append({"rfilename": p, "size": x["size"], "blobId": x["oid"], **({"lfs": lfs} if lfs else {})})
            return self.send(h, 200, json.dumps({"id": repo, "sha": commit, "siblings": sib}).encode(), head=head)
        if m:
            tree = [{"type": "file", **self.meta(p, d)} for p, d in sorted(files.items())]
            return self.send(h, 200, json.dumps(tree).encode(), head=head)
        name = r.group(3)
        if name not in files:
            hdrs = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            return self.send(h, 404, b'{"error": "Entry not found"}', hdrs, head)
        x = self.meta(name, files[name])
        hdrs = {"X-Repo-Commit": commit, "ETag": f'"{x["oid"]}"'}
        if "lfs" in x:
            hdrs |= {"X-Linked-Etag": f'"{x["lfs"]["oid"]}"', "X-Linked-Size": str(x["size"])}
        self.send(h, 200, files[name], hdrs, head, content_type="application/octet-stream")

    @staticmethod
    def send(h, code: int, body: bytes, headers: dict | None = None, head: bool = False, content_type=None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", content_type or "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(body)


def _folder(root: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hub(world_dir):
    h = StandInHub()
    sd = _folder(world_dir / "sd")
    # beside the real files, what a fetch must leave on the hub: a pickle copy, a precision
    # variant, a safety checker and the model card
    extra = {"README.md": b"# tiny sd\n", "unet/diffusion_pytorch_model.bin": b"not fetched",
             "unet/diffusion_pytorch_model.fp16.safetensors": b"not fetched",
             "safety_checker/model.safetensors": b"not fetched", "safety_checker/config.json": b"{}"}  # fmt: skip
    h.sd_commit = h.add("gate-test/tiny-sd", sd | extra)
    pickles = {k: v for k, v in sd.items() if not k.startswith("unet/")}
    pickles |= {"unet/config.json": sd["unet/config.json"], "unet/diffusion_pytorch_model.bin": b"a pickle"}
    h.add("gate-test/pickle-sd", pickles)
    weights = (CLIP_DIR / CLIP_WEIGHTS).read_bytes()
    h.clip_commit = h.add("gate-test/world-clip", {"open_clip_model.safetensors": weights,
                                                   "open_clip_pytorch_model.bin": b"a pickle"})  # fmt: skip
    h.clip_sha256 = hashlib.sha256(weights).hexdigest()
    yield h
    h.server.shutdown()


def _fetch(endpoint: str, tmp: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "HUGGINGFACE_"))}
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_CACHE": str(tmp / "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
    code = (
        _register_tag() if "--policy" in argv else ""
    ) + f"import sys\nfrom gate.cli import main\nsys.exit(main({['models', 'fetch', *argv]!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _policy(tmp: Path) -> Path:
    p = tmp / "policy.yaml"
    p.write_text(
        "version: 1\nname: fetch-test\n"
        "detectors:\n"
        f"  wclip: {{type: open_clip, model: world-clip, pretrained: {TAG}, config_dir: {CLIP_DIR}, "
        "cache_dir: clip-cache}\n"
        "  nude: {type: nudenet, threshold: 0.45}\n"
        "concepts:\n"
        "  skull:\n    prompts: [a skull]\n"
        "    detector: {use: wclip, labels: {skull: [a skull], circle: [a circle]}}\n"
        "    rules: {max_presence_rate: 0.2}\n"
        "  nudity:\n    prompts: [a nude person]\n    detector: {use: nude, label: nudity}\n"
        "    rules: {max_presence_rate: 0.1}\n"
    )
    return p


def test_fetch_pins_the_commit_and_the_runner_loads_it_offline(hub, tmp_path, monkeypatch):
    policy, lock = _policy(tmp_path), tmp_path / "gate-models.lock.json"
    res = _fetch(hub.url, tmp_path, "--policy", str(policy), "--checkpoint", "gate-test/tiny-sd", "--lock", str(lock))
    assert res.returncode == 0, res.stderr
    assert "nudenet: nothing to fetch" in res.stdout and "ships inside the nudenet wheel" in res.stdout
    assert f"offline: --checkpoint gate-test/tiny-sd (or gate-test/tiny-sd@{hub.sd_commit})" in res.stdout
    got = {path for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    assert not [p for p in got if p.endswith((".bin", "README.md")) or ".fp16." in p or "safety_checker" in p]

    doc = json.loads(lock.read_text())
    models = {m["repo"]: m for m in doc["models"]}
    sd, clip = models["gate-test/tiny-sd"], models["gate-test/world-clip"]
    assert (sd["requested_revision"], sd["resolved_commit"]) == ("main", hub.sd_commit)
    assert (clip["kind"], clip["resolved_commit"]) == ("open_clip", hub.clip_commit)
    files = {f["path"]: f["sha256"] for f in sd["files"]}
    assert "unet/diffusion_pytorch_model.safetensors" in files and "model_index.json" in files
    served = hub.repos["gate-test/tiny-sd"][1]
    assert all(hashlib.sha256(served[p]).hexdigest() == s for p, s in files.items())
    assert clip["files"] == [{"path": "open_clip_model.safetensors", "size": len(CLIP_DIR.joinpath(CLIP_WEIGHTS)
                                                                                 .read_bytes()),
                              "sha256": hub.clip_sha256}]  # fmt: skip
    assert clip["cache_dir"] == str(tmp_path / "clip-cache") and sd["fetched_at"]

    # the runner: offline, the same cache; by hub id and by pinned commit
    import huggingface_hub.constants as C

    from gate.model import load_checkpoint

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert C.HF_HUB_OFFLINE  # tests/conftest.py
    for spec in ("gate-test/tiny-sd", f"gate-test/tiny-sd@{hub.sd_commit}"):
        pipe, ident = load_checkpoint(spec)
        assert ident.kind == "hub-cache" and ident.extra["revision"] == hub.sd_commit
        assert pipe.unet is not None
    # the detector reads the tag from the cache_dir the fetch filled, and says which commit
    import open_clip.pretrained as P

    from gate.detectors import detector_class

    monkeypatch.setitem(P._PRETRAINED, "world-clip", {TAG: P._pcfg(hf_hub="gate-test/world-clip/")})
    settings = {"model": "world-clip", "pretrained": TAG, "config_dir": str(CLIP_DIR), "cache_dir": "clip-cache"}
    ident = detector_class("open_clip")({**settings, "labels": object_texts()}, base_dir=tmp_path).identity()
    assert (ident["hub_repo"], ident["hub_revision"]) == ("gate-test/world-clip", hub.clip_commit)
    assert ident["weights_sha256"] == hub.clip_sha256 and ident["pretrained"] == TAG


def test_pickle_only_repos_are_refused_and_dry_run_downloads_nothing(hub, tmp_path):
    lock = tmp_path / "l.json"
    hub.requests.clear()
    res = _fetch(hub.url, tmp_path, "--checkpoint", "gate-test/pickle-sd", "--lock", str(lock))
    assert res.returncode == 2, res.stderr
    assert "unet offer(s) only pickled weights" in res.stderr and "never unpickled" in res.stderr
    assert not lock.exists() and not [p for _, p in hub.requests if "/resolve/" in p]

    res = _fetch(hub.url, tmp_path, "--checkpoint", "gate-test/tiny-sd@main", "--dry-run", "--lock", str(lock))
    assert res.returncode == 0, res.stderr
    assert f"would fetch checkpoint gate-test/tiny-sd@main -> {hub.sd_commit}" in res.stdout
    assert "  unet/diffusion_pytorch_model.safetensors" in res.stdout and ".bin" not in res.stdout
    assert not lock.exists() and not [p for _, p in hub.requests if "/resolve/" in p]
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["--checkpoint", "gate-test/no-such-repo"], 2, "no such repo"),
        (["--checkpoint", "gate-test/tiny-sd@v9"], 2, "no such revision"),
        (["--checkpoint", "not a hub id"], 2, "not a hub id"),
    ],
)
def test_wrong_repos_are_bad_input(hub, tmp_path, argv, code, says):
    res = _fetch(hub.url, tmp_path, *argv, "--lock", str(tmp_path / "l.json"))
    assert (res.returncode, res.stdout) == (code, "") and says in res.stderr
    assert "Traceback" not in res.stderr


def test_hub_down_is_a_tool_error_with_a_clear_message(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lock = tmp_path / "gate-models.lock.json"
    res = _fetch(f"http://127.0.0.1:{port}", tmp_path, "--checkpoint", "gate-test/tiny-sd", "--lock", str(lock))
    assert res.returncode == 3, res.stderr
    assert f"cannot reach the hub at http://127.0.0.1:{port}" in res.stderr and "Traceback" not in res.stderr
    assert not lock.exists()
