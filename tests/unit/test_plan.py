"""``gate plan`` and ``gate.yaml``: candidates of a pull request from git alone, by the base's rules.

Each test builds a throwaway git repository: a base commit on ``main`` with ``gate.yaml`` and a
policy file, then a ``pr`` branch with the pull request's changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gate.cli import main
from gate.errors import BadInput
from gate.plan import NO_CHANGES, _dirs, _model_folders, _tree, _ungated, plan
from gate.repo_config import Glob, load_repo_config

REPO = Path(__file__).resolve().parents[2]

GATE_YAML = """\
version: 1
model_lines:
  sd14-nsfw:
    checkpoint: models/sd14-unlearned
    original: models/sd14
    policy: policies/nudity.yaml
    candidates:
      - loras/sd14-nsfw/*.safetensors
      - models/x-ft/
    shards: 2
  sd21-art:
    checkpoint: stabilityai/stable-diffusion-2-1
    policy: policies/art.yaml
    candidates: [loras/sd21-art/**/*.safetensors]
exempt:
  - tests/fixtures/**
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def write(repo: Path, files: dict[str, str | bytes | None]) -> None:
    for rel, content in files.items():
        p = repo / rel
        if content is None:
            git(repo, "rm", "-q", "-r", rel)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        git(repo, "add", rel)


def commit(repo: Path, files: dict[str, str | bytes | None], msg: str = "c") -> None:
    write(repo, files)
    git(repo, "commit", "-q", "--allow-empty", "-m", msg)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(
        r,
        {
            "gate.yaml": GATE_YAML,
            "policies/nudity.yaml": "version: 1\n",
            "policies/art.yaml": "version: 1\n",
            "README.md": "hi\n",
            "models/x-ft/unet/config.json": "{}",
            "models/x-ft/unet/diffusion_pytorch_model.safetensors": b"\0" * 64,
        },
        "base",
    )
    git(r, "checkout", "-q", "-b", "pr")
    return r


def pr(repo: Path, files: dict[str, str | bytes | None]) -> None:
    commit(repo, files, "pr")


def run_plan(repo: Path, tmp_path: Path, capsys) -> tuple[int, dict, str]:
    out = tmp_path / "plan.json"
    code = main(["plan", "--repo", str(repo), "--base", "main", "--head", "pr", "--json", str(out)])
    captured = capsys.readouterr()
    return code, (json.loads(out.read_text()) if out.is_file() else {}), captured.out + captured.err


def test_new_lora_is_one_candidate_with_a_matrix_entry_per_shard(repo, tmp_path, capsys):
    pr(repo, {"loras/sd14-nsfw/x.safetensors": b"lora"})
    code, j, out = run_plan(repo, tmp_path, capsys)
    assert code == 0
    assert set(j) == {"base", "head", "changed", "candidates", "matrix", "not_gated", "refused"}
    assert j["base"] == git(repo, "rev-parse", "main").strip() and j["head"] == git(repo, "rev-parse", "pr").strip()
    assert j["changed"] == 1
    assert j["candidates"] == [
        {"id": "sd14-nsfw.loras-sd14-nsfw-x", "model_line": "sd14-nsfw", "path": "loras/sd14-nsfw/x.safetensors",
         "kind": "file", "checkpoint": "models/sd14-unlearned", "original": "models/sd14",
         "policy": "policies/nudity.yaml", "shards": 2}
    ]  # fmt: skip
    assert j["matrix"] == {
        "include": [
            {"candidate": "sd14-nsfw.loras-sd14-nsfw-x", "shard": 1, "shards": 2},
            {"candidate": "sd14-nsfw.loras-sd14-nsfw-x", "shard": 2, "shards": 2},
        ]
    }
    assert j["not_gated"] == [] and j["refused"] == []
    assert "sd14-nsfw" in out and "loras/sd14-nsfw/x.safetensors" in out and "plan: ok" in out


def test_two_candidates_in_two_model_lines(repo, tmp_path, capsys):
    pr(repo, {"loras/sd14-nsfw/a.safetensors": b"a", "loras/sd21-art/deep/er/b.safetensors": b"b"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 0
    assert [(c["model_line"], c["id"], c["original"]) for c in j["candidates"]] == [
        ("sd14-nsfw", "sd14-nsfw.loras-sd14-nsfw-a", "models/sd14"),
        ("sd21-art", "sd21-art.loras-sd21-art-deep-er-b", None),
    ]
    assert [(m["candidate"], m["shard"]) for m in j["matrix"]["include"]] == [
        ("sd14-nsfw.loras-sd14-nsfw-a", 1), ("sd14-nsfw.loras-sd14-nsfw-a", 2), ("sd21-art.loras-sd21-art-deep-er-b", 1)
    ]  # fmt: skip


def test_readme_only_change_plans_nothing(repo, tmp_path, capsys):
    pr(repo, {"README.md": "changed\n"})
    code, j, out = run_plan(repo, tmp_path, capsys)
    assert code == 0
    assert j["candidates"] == [] and j["matrix"] == {"include": []} and j["note"] == NO_CHANGES
    assert "no model files changed" in out


def test_pickle_under_a_model_line_is_refused(repo, tmp_path, capsys):
    pr(repo, {"loras/sd14-nsfw/x.bin": b"pickle", "loras/sd14-nsfw/ok.safetensors": b"ok"})
    # the .bin does not match *.safetensors; a glob that takes any file shows the refusal of a candidate
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1 and j["not_gated"][0]["path"] == "loras/sd14-nsfw/x.bin"
    commit(repo, {"gate.yaml": GATE_YAML.replace("*.safetensors\n", "*\n", 1)}, "base takes any file")
    git(repo, "branch", "-f", "main", "HEAD")
    pr(repo, {"loras/sd14-nsfw/y.BIN": b"pickle"})
    code, j, out = run_plan(repo, tmp_path, capsys)
    assert code == 1
    assert [c["path"] for c in j["candidates"]] == []
    assert [r["path"] for r in j["refused"]] == ["loras/sd14-nsfw/y.BIN"]
    assert "pickle" in j["refused"][0]["reason"] and "refused" in out and "plan: FAIL" in out


def test_lora_outside_every_model_line_is_not_gated(repo, tmp_path, capsys):
    pr(repo, {"loras/other/x.safetensors": b"x", "tests/fixtures/tiny.safetensors": b"t", "notes.txt": "n"})
    code, j, out = run_plan(repo, tmp_path, capsys)
    assert code == 1
    assert j["not_gated"] == [
        {"path": "loras/other/x.safetensors", "reason": j["not_gated"][0]["reason"]}
    ]  # the exempt fixture and the text file are not listed
    assert "no model line" in j["not_gated"][0]["reason"] and "not gated" in out
    assert "note" not in j


def test_head_cannot_exempt_its_own_lora_by_editing_gate_yaml(repo, tmp_path, capsys):
    steer = GATE_YAML.replace("  - tests/fixtures/**\n", "  - tests/fixtures/**\n  - loras/**\n")
    steer = steer.replace("loras/sd14-nsfw/*.safetensors", "nothing/*.safetensors")
    pr(repo, {"gate.yaml": steer, "loras/sd14-nsfw/evil.safetensors": b"e", "loras/elsewhere/x.safetensors": b"x"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1  # base rules: loras/elsewhere is not gated, loras/sd14-nsfw/evil still a candidate
    assert [c["path"] for c in j["candidates"]] == ["loras/sd14-nsfw/evil.safetensors"]
    assert [f["path"] for f in j["not_gated"]] == ["loras/elsewhere/x.safetensors"]


def test_folder_candidate_once_for_many_changed_files(repo, tmp_path, capsys):
    pr(repo, {
        "models/x-ft/unet/diffusion_pytorch_model.safetensors": b"\1" * 64,
        "models/x-ft/unet/config.json": '{"a": 1}',
        "models/x-ft/README.md": "tuned",
    })  # fmt: skip
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 0
    assert [(c["id"], c["path"], c["kind"]) for c in j["candidates"]] == [
        ("sd14-nsfw.models-x-ft", "models/x-ft", "folder")
    ]
    assert j["changed"] == 3 and len(j["matrix"]["include"]) == 2


def test_deleted_candidate_is_not_planned(repo, tmp_path, capsys):
    commit(repo, {"loras/sd14-nsfw/old.safetensors": b"o"})
    git(repo, "branch", "-f", "main", "HEAD")
    pr(repo, {"loras/sd14-nsfw/old.safetensors": None})
    code, j, out = run_plan(repo, tmp_path, capsys)
    assert code == 0 and j["candidates"] == [] and j["changed"] == 1
    assert "deleted, not planned: loras/sd14-nsfw/old.safetensors" in out
    pr(repo, {"models/x-ft": None})  # the whole folder candidate goes: nothing to check
    assert run_plan(repo, tmp_path, capsys)[1]["candidates"] == []


def test_deleting_a_file_of_a_folder_candidate_plans_the_folder(repo, tmp_path, capsys):
    pr(repo, {"models/x-ft/unet/config.json": None})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 0 and [c["path"] for c in j["candidates"]] == ["models/x-ft"]


def test_oversized_candidate_is_refused(repo, tmp_path, capsys):
    commit(repo, {"gate.yaml": GATE_YAML + "max_file_mb: 0.00001\n"}, "tiny cap")
    git(repo, "branch", "-f", "main", "HEAD")
    pr(repo, {"loras/sd14-nsfw/big.safetensors": b"x" * 100, "loras/sd14-nsfw/small.safetensors": b"x"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1
    assert [c["path"] for c in j["candidates"]] == ["loras/sd14-nsfw/small.safetensors"]
    assert [r["path"] for r in j["refused"]] == ["loras/sd14-nsfw/big.safetensors"]
    assert "max_file_mb" in j["refused"][0]["reason"]


def test_lfs_pointer_counts_the_object_size(repo, tmp_path, capsys):
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 9000000000\n"
    pr(repo, {"loras/sd14-nsfw/huge.safetensors": pointer})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1 and "9000.0 MB" in j["refused"][0]["reason"]


def test_symlink_and_odd_path_candidates_are_refused(repo, tmp_path, capsys):
    (repo / "loras/sd14-nsfw").mkdir(parents=True)
    (repo / "loras/sd14-nsfw/link.safetensors").symlink_to("/etc/hostname")
    git(repo, "add", "loras/sd14-nsfw/link.safetensors")
    pr(repo, {"loras/sd14-nsfw/a b$(x).safetensors": b"x"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1 and j["candidates"] == []
    reasons = {r["path"]: r["reason"] for r in j["refused"]}
    assert "symbolic link" in reasons["loras/sd14-nsfw/link.safetensors"]
    assert "characters" in reasons["loras/sd14-nsfw/a b$(x).safetensors"]


def test_unknown_diffusers_folder_is_not_gated(repo, tmp_path, capsys):
    pr(repo, {"models/other/model_index.json": "{}", "models/other/scheduler/scheduler_config.json": "{}"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1
    assert [f["path"] for f in j["not_gated"]] == ["models/other/model_index.json",
                                                   "models/other/scheduler/scheduler_config.json"]  # fmt: skip


def test_a_file_in_two_model_lines_is_bad_input(repo, tmp_path, capsys):
    commit(repo, {"gate.yaml": GATE_YAML.replace("loras/sd21-art/**/*", "loras/**/*")}, "overlap")
    git(repo, "branch", "-f", "main", "HEAD")
    pr(repo, {"loras/sd14-nsfw/x.safetensors": b"x"})
    code, _, out = run_plan(repo, tmp_path, capsys)
    assert code == 2 and "'sd14-nsfw' and 'sd21-art'" in out


def test_gate_yaml_typo_is_exit_2_with_a_hint(repo, tmp_path, capsys):
    commit(repo, {"gate.yaml": GATE_YAML.replace("    shards: 2", "    shard: 2")}, "typo")
    git(repo, "branch", "-f", "main", "HEAD")
    code, j, out = run_plan(repo, tmp_path, capsys)
    assert code == 2 and j == {}
    assert "model_lines.sd14-nsfw: unknown key 'shard'; did you mean 'shards'?" in out


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"gate.yaml": None}, "no gate.yaml at the base ref"),
        ({"policies/art.yaml": None}, "policy 'policies/art.yaml' is not a file at the base ref"),
        ({"gate.yaml": "version: 2\n"}, "version 2 is not supported"),
        ({"gate.yaml": "version: 1\nmodel_lines: {a: {checkpoint: c, policy: p, candidates: [/abs]}}"}, "relative"),
    ],
)
def test_bad_base_is_exit_2(repo, tmp_path, capsys, change, needle):
    commit(repo, change, "bad base")
    git(repo, "branch", "-f", "main", "HEAD")
    code, _, out = run_plan(repo, tmp_path, capsys)
    assert code == 2 and needle in out and "Traceback" not in out


def test_unknown_ref_and_option_like_ref_are_exit_2(repo, tmp_path, capsys):
    assert main(["plan", "--repo", str(repo), "--base", "nope", "--head", "pr"]) == 2
    assert "--base 'nope'" in capsys.readouterr().err
    assert main(["plan", "--repo", str(repo), "--base", "main", "--head=--output=/tmp/x"]) == 2
    assert main(["plan", "--repo", str(tmp_path / "nothing"), "--base", "main", "--head", "pr"]) == 2


def test_library_api_and_json_to_stdout(repo, capsys):
    pr(repo, {"loras/sd14-nsfw/x.safetensors": b"x"})
    p = plan(repo / "models", "main", "pr")  # a folder inside the repository finds its root
    assert p.ok and p.exit_code == 0 and p.to_json()["candidates"][0]["id"] == "sd14-nsfw.loras-sd14-nsfw-x"
    assert main(["plan", "--repo", str(repo), "--base", "main", "--head", "pr", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["matrix"]["include"][0]["shard"] == 1 and "plan: ok" in captured.err
    code = (
        "import sys; from gate.cli import main\n"
        f"rc = main(['plan', '--repo', {str(repo)!r}, '--base', 'main', '--head', 'pr'])\n"
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("0 False")


def test_ids_are_safe_and_unique(repo, tmp_path, capsys):
    long = "loras/sd14-nsfw/" + "a" * 150 + ".safetensors"
    pr(repo, {"loras/sd14-nsfw/x.safetensors": b"1", "loras/sd14-nsfw/x.ckpt.safetensors": b"2", long: b"3"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    ids = [c["id"] for c in j["candidates"]]
    assert code == 0 and len(set(ids)) == 3
    assert all(len(i) <= 100 and all(ch.isalnum() or ch in "._-" for ch in i) for i in ids)


@pytest.mark.parametrize(
    ("glob", "path", "hit"),
    [
        ("loras/*.safetensors", "loras/x.safetensors", True),
        ("loras/*.safetensors", "loras/sub/x.safetensors", False),  # * does not cross /
        ("loras/**/*.safetensors", "loras/x.safetensors", True),  # ** matches no segment too
        ("loras/**/*.safetensors", "loras/a/b/x.safetensors", True),
        ("**/*.bin", "x.bin", True),
        ("**/*.bin", "a/b/x.bin", True),
        ("tests/fixtures/**", "tests/fixtures/a/b.pt", True),
        ("tests/fixtures/**", "tests/fixtures", False),
        ("tests/fixtures/**", "tests/fixturesX/a.pt", False),
        ("a/x?.pt", "a/x1.pt", True),
        ("a/x?.pt", "a/x/.pt", False),
        ("a/[ab].pt", "a/b.pt", True),
        ("a/[!ab].pt", "a/c.pt", True),
        ("a/[!ab].pt", "a/b.pt", False),
        ("a/b**c.pt", "a/bxc.pt", True),  # ** inside a segment is *
        ("a/b**c.pt", "a/b/c.pt", False),
        ("a/x+y(1).pt", "a/x+y(1).pt", True),  # regex characters are literal
        ("models/x-ft/", "models/x-ft/unet/w.safetensors", True),  # a folder glob
        ("models/x-ft/", "models/x-ft", False),
        ("models/*-ft/", "models/a-ft/unet/w.safetensors", True),
        ("Loras/*.pt", "loras/x.pt", False),  # case-sensitive
    ],
)
def test_glob_semantics(glob, path, hit):
    assert Glob.parse(glob).matches(path) is hit


def test_folder_glob_names_the_shortest_matching_folder():
    assert Glob.parse("models/*-ft/").folder_of("models/a-ft/unet/w.safetensors") == "models/a-ft"
    assert Glob.parse("models/**/").folder_of("models/a/b/c") == "models/a"


@pytest.mark.parametrize("bad", ["/abs/*.pt", "a//b", "a/../b", "./a", "", "a\\b"])
def test_bad_globs_are_bad_input(bad):
    with pytest.raises(BadInput):
        Glob.parse(bad)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version: 1\nmodel_line: {}\n", "unknown key 'model_line'; did you mean 'model_lines'?"),
        ("version: 1\nmax_file_mb: 0\n", "max_file_mb"),
        ("version: 1\nmodel_lines: {'a b': {checkpoint: c, policy: p, candidates: [x]}}\n", "model line name"),
        ("version: 1\nmodel_lines: {a: {checkpoint: c, policy: p}}\n", "missing 'candidates'"),
        ("version: 1\nmodel_lines: {a: {checkpoint: c, policy: p, candidates: [x], shards: 0}}\n", "shards"),
        ("version: 1\nmodel_lines: {a: {checkpoint: c, polcy: p, candidates: [x]}}\n", "did you mean 'policy'?"),
        ("[1, 2]\n", "expected a mapping"),
        ("version: [\n", "not valid YAML"),
    ],
)
def test_load_repo_config_errors(text, needle):
    with pytest.raises(BadInput, match=None) as e:
        load_repo_config(text, "gate.yaml")
    assert needle in str(e.value)


def test_this_repositorys_gate_yaml_is_valid_and_exempts_its_own_world():
    cfg = load_repo_config((REPO / "gate.yaml").read_text(), "gate.yaml")
    assert [m.name for m in cfg.model_lines] == ["sd14-nsfw"] and cfg.model_lines[0].shards == 2
    assert (REPO / cfg.model_lines[0].policy).is_file()
    tree = _tree(REPO, "HEAD")
    folders = _model_folders(tree)
    weights = [p for p in tree if _ungated("A", p, folders, _dirs(tree))]
    assert any(p.startswith("gate/world/zoo/") for p in weights) and any("assets/sd/" in p for p in weights)
    assert [p for p in weights if not cfg.is_exempt(p) and not any(m.match(p) for m in cfg.model_lines)] == []


def test_folder_candidate_with_a_pickle_or_a_submodule_is_refused(repo, tmp_path, capsys):
    pr(repo, {"models/x-ft/text_encoder/pytorch_model.bin": b"pickle"})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1 and j["candidates"] == []
    assert j["refused"][0]["path"] == "models/x-ft/text_encoder/pytorch_model.bin"
    assert "in folder candidate models/x-ft" in j["refused"][0]["reason"]
    sha = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},loras/sd14-nsfw/sub.safetensors")
    pr(repo, {})
    code, j, _ = run_plan(repo, tmp_path, capsys)
    assert code == 1 and any("submodule" in r["reason"] for r in j["refused"])
