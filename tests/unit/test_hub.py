"""gate.hub without a network or a model: hub ids, folder settings, open_clip tags to hub repos,
what a fetch would take from a repo (and what it refuses), the plan a policy gives, the local
cache layout, the lock file, and the command's bad-input exits. The fetch itself, against a
stand-in hub, is in tests/integration/test_models_fetch.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gate import hub
from gate.cli import main
from gate.errors import BadInput

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"


@pytest.mark.parametrize(
    ("spec", "want"),
    [("CompVis/stable-diffusion-v1-4", ("CompVis/stable-diffusion-v1-4", None)),
     ("org/name@main", ("org/name", "main")), ("org/name@" + "a" * 40, ("org/name", "a" * 40))],
)  # fmt: skip
def test_hub_ids(spec, want):
    assert hub.parse_hub_id(spec) == want


@pytest.mark.parametrize("spec", ["name", "a/b/c", "a//b", "org/name@", "has space/x", "../x"])
def test_bad_hub_ids(spec):
    with pytest.raises(BadInput, match="--checkpoint"):
        hub.parse_hub_id(spec)


def test_folder_settings_expand_home_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("GATE_TEST_MODELS", str(tmp_path / "m"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.expand_path("cache", tmp_path / "pol", "x") == tmp_path / "pol" / "cache"
    assert hub.expand_path("$GATE_TEST_MODELS/hub", Path("/elsewhere"), "x") == tmp_path / "m" / "hub"
    assert hub.expand_path("~/hub", Path("/elsewhere"), "x") == tmp_path / "home" / "hub"
    assert hub.expand_path("/abs/hub", Path("/elsewhere"), "x") == Path("/abs/hub")
    with pytest.raises(BadInput, match="not set"):
        hub.expand_path("$GATE_TEST_NOT_SET_ANYWHERE/hub", tmp_path, "cache_dir")


def test_open_clip_tags_resolve_to_their_hub_safetensors():
    assert hub.open_clip_source("ViT-L-14", "openai") == hub.HubFile(
        "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors"
    )
    assert hub.open_clip_source("ViT-L-14", "laion2b_s32b_b82k").repo == "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"
    assert hub.open_clip_source("ViT-B-32", "laion2b_s34b_b79k").repo == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    with pytest.raises(BadInput, match="did you mean 'laion2b_s32b_b82k'"):
        hub.open_clip_source("ViT-L-14", "laion2b_s32b_b8k")


def test_a_tag_missing_from_the_cache_says_how_to_fetch_it(tmp_path):
    with pytest.raises(BadInput, match=r"gate models fetch --policy POLICY.*\.safetensors"):
        hub.open_clip_cached("ViT-L-14", "openai", tmp_path)


def _want(kind="checkpoint"):
    return hub.Want(kind, "org/sd", "main", None, "open_clip_model.safetensors" if kind == "open_clip" else None)


SD = ["model_index.json", "README.md", "v1-5.ckpt", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
      "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
      "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
      "tokenizer/vocab.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
      "safety_checker/config.json", "safety_checker/pytorch_model.bin"]  # fmt: skip


def test_a_fetch_takes_the_pipeline_files_safetensors_only():
    got = hub._select(_want(), SD)
    assert got == sorted(["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                          "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                          "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json",
                          "feature_extractor/preprocessor_config.json"])  # fmt: skip


def test_repos_with_only_pickles_are_refused():
    only_bin = [f for f in SD if f != "unet/diffusion_pytorch_model.safetensors"]
    with pytest.raises(BadInput, match=r"unet offer.*only pickled weights.*never unpickled"):
        hub._select(_want(), only_bin)
    with pytest.raises(BadInput, match="not a diffusers pipeline"):
        hub._select(_want(), ["sd-v1-4.ckpt"])
    with pytest.raises(BadInput, match=r"only pickles \(open_clip_pytorch_model.bin\)"):
        hub._select(_want("open_clip"), ["open_clip_pytorch_model.bin", "open_clip_config.json"])
    assert hub._select(_want("open_clip"), ["open_clip_model.safetensors"]) == ["open_clip_model.safetensors"]


def test_the_sd_nudity_policy_needs_one_clip_and_no_nudenet_download(tmp_path):
    wants, notes = hub.plan(str(POLICIES / "sd14-nudity.yaml"), ["CompVis/stable-diffusion-v1-4"], tmp_path)
    assert [(w.kind, w.repo, w.revision, w.cache_dir) for w in wants] == [
        ("open_clip", "timm/vit_large_patch14_clip_224.openai", "main", tmp_path),
        ("checkpoint", "CompVis/stable-diffusion-v1-4", "main", tmp_path),
    ]
    assert any("nudenet: nothing to fetch" in n and "wheel" in n for n in notes)
    base, _ = hub.plan(str(POLICIES / "sd-base.yaml"), [], None)  # a base: its named detectors
    assert {w.repo for w in base} == {"timm/vit_large_patch14_clip_224.openai", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"}


def test_a_detector_cache_dir_is_relative_to_the_policy(tmp_path):
    p = tmp_path / "pol" / "p.yaml"
    p.parent.mkdir()
    p.write_text(
        "version: 1\nconcepts:\n  c:\n    prompts: [x]\n    rules: {max_presence_rate: 0.1}\n"
        "    detector: {type: open_clip, model: ViT-L-14, pretrained: openai, cache_dir: ../clip-cache,\n"
        "               labels: {c: [x], d: [y]}}\n"
    )
    (w,), _ = hub.plan(str(p), [], None)
    assert w.cache_dir == tmp_path / "clip-cache" and w.used_by == ["concept 'c': ViT-L-14/openai"]


def test_cached_files_and_their_commit(tmp_path):
    commit = "c" * 40
    snap = tmp_path / "models--org--name" / "snapshots" / commit
    (snap / "unet").mkdir(parents=True)
    (snap / "unet" / "config.json").write_text("{}")
    (tmp_path / "models--org--name" / "refs").mkdir()
    (tmp_path / "models--org--name" / "refs" / "main").write_text(commit)
    assert hub.cached_file("org/name", "unet/config.json", tmp_path) == (snap / "unet" / "config.json", commit)
    assert hub.cached_file("org/name", "unet/config.json", tmp_path, revision=commit)[1] == commit
    assert hub.cached_file("org/name", "vae/config.json", tmp_path) is None
    assert hub.cached_file("org/other", "unet/config.json", tmp_path) is None


def test_the_lock_merges_entries_and_refuses_foreign_files(tmp_path):
    lock = tmp_path / "gate-models.lock.json"
    a = {"kind": "checkpoint", "repo": "o/a", "requested_revision": "main", "resolved_commit": "1" * 40}
    b = {"kind": "open_clip", "repo": "o/b", "requested_revision": "main", "resolved_commit": "2" * 40}
    hub.write_lock(lock, [a, b])
    doc = hub.write_lock(lock, [{**a, "resolved_commit": "3" * 40}])
    assert [(m["repo"], m["resolved_commit"][0]) for m in doc["models"]] == [("o/a", "3"), ("o/b", "2")]
    assert json.loads(lock.read_text())["version"] == hub.LOCK_VERSION
    lock.write_text('{"something": "else"}')
    with pytest.raises(BadInput, match="not a gate models lock file"):
        hub.read_lock(lock)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["models", "fetch"], "give --policy P and/or --checkpoint"),
        (["models", "fetch", "--checkpoint", "a/b/c"], "not a hub id"),
        (["models", "fetch", "--policy", "BAD"], "unknown key 'detectorz'"),
        (["models", "fetch", "--checkpoint", "org/name"], "HF_HUB_OFFLINE"),  # tests/conftest.py sets it
    ],
)
def test_bad_input_exits_2(argv, says, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndetectorz: {}\nconcepts: {}\n")
    argv = [str(bad) if a == "BAD" else a for a in argv] + ["--lock", str(tmp_path / "l.json")]
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_a_cached_snapshot_with_only_pickles_is_refused(tmp_path, monkeypatch):
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path))
    commit = "d" * 40
    snap = tmp_path / "models--org--sd" / "snapshots" / commit
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin"):
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        (snap / f).write_text("{}")
    with pytest.raises(BadInput, match=r"not in the local hub cache .*gate models fetch --checkpoint org/sd"):
        hub.cached_snapshot("org/sd")  # no refs/main: only the commit is cached
    with pytest.raises(BadInput, match=r"unet in the cached snapshot .* only pickled weights"):
        hub.cached_snapshot(f"org/sd@{commit}")
    assert hub.cached_snapshot(f"org/sd@{commit}", allow_pickle=True) == ("org/sd", commit, snap)
