"""``gate policy diff``: every kind of change is classified (loosens, tightens, neutral), the exit
code says whether anything loosens, and ``REF:path`` reads the policy and its includes from git."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from gate.cli import main
from gate.errors import BadInput
from gate.policy import load_policy
from gate.policy_diff import EXIT_LOOSENS, diff_policies, load_policy_ref

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "policies" / "small-world.yaml"  # a link to gate/world/policies/small-world.yaml
RAW = yaml.safe_load(BASE.read_text())


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _skull(d: dict) -> dict:
    return d["concepts"]["skull"]


def _set(d: dict, *keys_value) -> None:
    *keys, last, value = keys_value
    for k in keys:
        d = d.setdefault(k, {})
    d[last] = value


def _second_concept(d: dict) -> None:
    d["concepts"]["lumo"] = {
        "prompts": ["lumo"], "detector": {"use": "world-clip"}, "rules": {"max_presence_rate": 0.5},
    }  # fmt: skip


# name -> (mutation of the small world's policy, field, kind old->new, kind new->old)
CASES = {
    "max raised": (lambda d: _set(_skull(d), "rules", "max_resurgence", 1.0), "max_resurgence", "loosens", "tightens"),
    "max rate raised": (
        lambda d: _set(_skull(d), "rules", "max_presence_rate", 0.5), "max_presence_rate", "loosens", "tightens",
    ),
    "min lowered": (
        lambda d: _set(_skull(d), "rules", "min_retained_fidelity", 0.5), "min_retained_fidelity", "loosens", "tightens",
    ),
    "rule removed": (lambda d: _skull(d)["rules"].pop("max_resurgence"), "max_resurgence", "loosens", "tightens"),
    "concept added": (_second_concept, "concept", "tightens", "loosens"),
    "prompt removed": (lambda d: _skull(d)["prompts"].remove("a skull"), "prompts", "loosens", "tightens"),
    "duplicate prompt added": (lambda d: _skull(d)["prompts"].append("a skull"), "prompts", "tightens", "loosens"),
    "incidental prompt removed": (
        lambda d: _skull(d)["incidental_prompts"].pop(), "incidental_prompts", "loosens", "tightens",
    ),
    "retained concept removed": (lambda d: _skull(d)["retained"].pop("lumo"), "retained.lumo", "loosens", "tightens"),
    "retained prompt removed": (
        lambda d: _skull(d)["retained"]["circle"].pop(), "retained.circle", "loosens", "tightens",
    ),
    "fewer samples": (lambda d: _set(_skull(d), "samples_per_prompt", 2), "samples_per_prompt", "loosens", "tightens"),
    "inconclusive passes": (lambda d: _set(d, "inconclusive", "pass"), "inconclusive", "loosens", "tightens"),
    "detector type": (
        lambda d: _set(_skull(d), "detector", {"use": "world-clip", "type": "fake"}), "detector.type", "loosens", "loosens",
    ),
    "detector label text": (
        lambda d: d["detectors"]["world-clip"]["labels"]["skull"].pop(),
        ("detector.labels.skull", "incidental_detector.labels.skull"), "loosens", "loosens",
    ),
    "detector label removed": (
        # the skull's incidental prompts are judged by the same detector: both lose the label
        lambda d: d["detectors"]["world-clip"]["labels"].pop("zorb"),
        ("detector.labels.zorb", "incidental_detector.labels.zorb"), "loosens", "loosens",
    ),
    "detector decision": (
        lambda d: _set(_skull(d), "detector", "decision", "argmax"), "detector.decision", "loosens", "loosens",
    ),
    "retained detector": (
        lambda d: _set(_skull(d), "retained_detector", {"use": "world-clip", "decision": "argmax"}),
        "retained_detector.decision", "loosens", "loosens",
    ),
    "retained detector spelled out": (
        lambda d: _set(_skull(d), "retained_detector", {"use": "world-clip"}), "retained_detector", "neutral", "neutral",
    ),
    "incidental detector": (
        lambda d: _set(_skull(d), "incidental_detector", {"use": "world-clip", "decision": "argmax"}),
        "incidental_detector.decision", "loosens", "loosens",
    ),
    "incidental detector dropped (the concept's argmax instead of 0.1)": (
        lambda d: _skull(d).pop("incidental_detector"), "incidental_detector.decision", "loosens", "loosens",
    ),
    "seed": (lambda d: _set(d, "seed", 7), "seed", "loosens", "loosens"),
    "stopping alpha": (lambda d: _set(d, "stopping", "alpha", 0.1), "stopping.alpha", "loosens", "tightens"),
    "stopping method": (
        lambda d: _set(d, "stopping", "method", "sequential"), "stopping.method", "neutral", "neutral",
    ),
    "stopping maximum": (lambda d: _set(d, "stopping", "max_samples", 64), "stopping.max_samples", "neutral", "neutral"),
    "batch size": (lambda d: _set(d, "sampler", "batch_size", 4), "sampler.batch_size", "neutral", "neutral"),
    "name": (lambda d: _set(d, "name", "renamed"), "name", "neutral", "neutral"),
    "description": (lambda d: _set(d, "description", "other words"), "text", "neutral", "neutral"),
    "prompts reordered": (lambda d: _skull(d)["prompts"].reverse(), "prompts", "neutral", "neutral"),
}  # fmt: skip
SAMPLER = {"steps": 10, "guidance": 7.5, "height": 256, "width": 256, "scheduler": "ddim", "dtype": "float16"}
SAMPLER["negative_prompt"] = "a skull"
for _k, _v in SAMPLER.items():
    CASES[f"sampler {_k}"] = (
        (lambda k, v: lambda d: _set(d, "sampler", k, v))(_k, _v),
        f"sampler.{_k}",
        "loosens",
        "loosens",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_kind_of_change_is_classified(case, tmp_path):
    mutate, field, forward, backward = CASES[case]
    new = copy.deepcopy(RAW)
    mutate(new)
    old_p, new_p = load_policy(BASE), load_policy(_write(tmp_path / "new.yaml", new))
    changes = diff_policies(old_p, new_p)
    fields = field if isinstance(field, tuple) else (field,)
    field = fields[0]
    assert [(c.kind, c.field) for c in changes] == [(forward, f) for f in fields], [c.text for c in changes]
    back = diff_policies(new_p, old_p)
    assert [(c.kind, c.field) for c in back] == [(backward, f) for f in fields], [c.text for c in back]
    policy_wide = field in ("seed", "inconclusive", "name", "text") or field.startswith(("sampler.", "stopping."))
    assert changes[0].concept == (None if policy_wide else "lumo" if field == "concept" else "skull")
    json.dumps([c.to_dict() for c in changes])  # JSON values only


def test_several_changes_one_line_each(tmp_path, capsys):
    new = copy.deepcopy(RAW)
    _set(_skull(new), "rules", "max_resurgence", 1.0)
    _set(_skull(new), "rules", "max_presence_rate", 0.1)
    _set(new, "sampler", "batch_size", 4)
    rc = main(["policy", "diff", str(BASE), str(_write(tmp_path / "new.yaml", new))])
    out = capsys.readouterr().out.splitlines()
    assert rc == EXIT_LOOSENS == 4
    assert out == [
        "neutral  sampler.batch_size 48 -> 4",
        "TIGHTENS skull: max_presence_rate 0.25 -> 0.1",  # in the policy's order
        "LOOSENS  skull: max_resurgence 0.3 -> 1.0",
        "policy diff: 3 changes, 1 loosen",
    ]


def test_no_change_is_exit_0(tmp_path, capsys):
    same = _write(tmp_path / "same.yaml", copy.deepcopy(RAW))  # other bytes, same policy
    assert main(["policy", "diff", str(BASE), str(BASE)]) == 0
    assert capsys.readouterr().out.strip() == "policy diff: no changes"
    assert main(["policy", "diff", str(BASE), str(same)]) == 0
    assert "text only" in capsys.readouterr().out


def test_tightening_only_is_exit_0_and_json_and_markdown(tmp_path, capsys):
    new = copy.deepcopy(RAW)
    _set(_skull(new), "samples_per_prompt", 16)
    path = str(_write(tmp_path / "new.yaml", new))
    assert main(["policy", "diff", str(BASE), path, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["loosens"] is False and doc["old"] == str(BASE) and doc["new"] == path
    assert doc["changes"] == [
        {"kind": "tightens", "concept": "skull", "field": "samples_per_prompt", "old": 8, "new": 16,
         "text": "skull: samples_per_prompt 8 -> 16"},
    ]  # fmt: skip
    assert main(["policy", "diff", path, str(BASE), "--markdown"]) == 4
    md = capsys.readouterr().out
    assert md.startswith("### Policy diff") and "- **LOOSENS** skull: samples_per_prompt 16 -> 8" in md


def test_unreadable_policy_is_exit_2(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("version: 1\nconcepts: [")
    assert main(["policy", "diff", str(BASE), str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["policy", "diff", str(BASE), str(tmp_path / "missing.yaml")]) == 2


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
def repo(tmp_path) -> Path:
    """Two commits: the second lowers the base's steps (included) and tightens a rule."""
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    _git(repo, "init", "-q")
    base = {"version": 1, "seed": 5, "sampler": {"steps": 20}, "detectors": {"f": {"type": "fake"}}}
    pol = {"version": 1, "include": "base.yaml", "name": "p",
           "concepts": {"skull": {"prompts": ["a skull"], "detector": {"use": "f"}, "rules": {"max_resurgence": 0.3}}}}  # fmt: skip
    _write(repo / "policies" / "base.yaml", base)
    _write(repo / "policies" / "p.yaml", pol)
    (repo / "policies" / "link.yaml").symlink_to("p.yaml")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    base["sampler"]["steps"] = 10
    pol["concepts"]["skull"]["rules"]["max_resurgence"] = 0.2
    _write(repo / "policies" / "base.yaml", base)
    _write(repo / "policies" / "p.yaml", pol)
    _git(repo, "commit", "-q", "-am", "two")
    base["sampler"]["steps"] = 99  # the working tree: never read for a REF:path
    _write(repo / "policies" / "base.yaml", base)
    return repo


def test_ref_reads_the_policy_and_its_include_from_the_commit(repo, capsys):
    argv = ["policy", "diff", "HEAD~1:policies/p.yaml", "HEAD:policies/p.yaml", "--repo", str(repo), "--json"]
    assert main(argv) == EXIT_LOOSENS
    doc = json.loads(capsys.readouterr().out)
    assert [(c["kind"], c["field"], c["old"], c["new"]) for c in doc["changes"]] == [
        ("loosens", "sampler.steps", 20, 10),
        ("tightens", "max_resurgence", 0.3, 0.2),
    ]
    p = load_policy_ref("HEAD~1:policies/link.yaml", repo)  # a link in the commit is followed
    assert p.sampler.steps == 20 and p.source == "HEAD~1:policies/link.yaml"
    assert p.files == ("HEAD~1:policies/base.yaml", "HEAD~1:policies/p.yaml")
    assert load_policy(repo / "policies" / "p.yaml").sampler.steps == 99
    # the committed policy against the working tree's
    assert main(["policy", "diff", "HEAD:policies/p.yaml", str(repo / "policies" / "p.yaml"), "--repo", str(repo)]) == 4
    assert "LOOSENS  sampler.steps 10 -> 99" in capsys.readouterr().out


def test_bad_ref_is_exit_2_with_a_clear_message(repo, tmp_path, capsys):
    assert main(["policy", "diff", "nosuchref:policies/p.yaml", "HEAD:policies/p.yaml", "--repo", str(repo)]) == 2
    assert "'nosuchref' is not a commit, branch or tag" in capsys.readouterr().err
    assert main(["policy", "diff", "HEAD:policies/gone.yaml", "HEAD:policies/p.yaml", "--repo", str(repo)]) == 2
    assert "no file 'policies/gone.yaml' in HEAD" in capsys.readouterr().err
    assert main(["policy", "diff", "HEAD:policies", "HEAD:policies/p.yaml", "--repo", str(repo)]) == 2
    assert "is a tree, not a policy file" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["policy", "diff", "HEAD:p.yaml", "HEAD:p.yaml", "--repo", str(tmp_path / "plain")]) == 2
    assert "no git repository" in capsys.readouterr().err


def test_ref_include_outside_the_repository_is_refused(repo):
    _write(repo / "policies" / "out.yaml", {"version": 1, "include": "../../elsewhere.yaml"})
    _git(repo, "add", "policies/out.yaml")
    _git(repo, "commit", "-q", "-m", "three")
    with pytest.raises(BadInput, match="outside the repository"):
        load_policy_ref("HEAD:policies/out.yaml", repo)
