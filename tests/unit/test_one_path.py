"""The check's single path, without loading a model: where the embedded default is decided,
the typed report, exit codes, and rendering that cannot cost a verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gate.cli import main
from gate.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, BadInput, OutOfMemory
from gate.judge import RuleResult, rate_rule
from gate.report import ConceptReport, Report, load_report, write_reports
from gate.weights import Identity, guard
from gate.world import demo

REPO = Path(__file__).resolve().parents[2]


def _non_world_folder(tmp_path: Path) -> Path:
    """A diffusers-shaped folder that is not the small world (another tokenizer)."""
    f = tmp_path / "sd14-like"
    (f / "tokenizer").mkdir(parents=True)
    (f / "model_index.json").write_text("{}")
    (f / "tokenizer" / "vocab.json").write_text('{"a</w>": 0}')
    return f


def test_a_real_checkpoint_without_policy_is_bad_input_naming_the_policies(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["check", "--checkpoint", str(_non_world_folder(tmp_path)), "--no-track"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert "give --policy" in err and "sd14-nudity.yaml" in err and "sd14-objects.yaml" in err
    assert "sd-base.yaml" not in err  # an include-only base is not a policy to pick
    assert "Traceback" not in err


def test_the_world_sd_keeps_the_world_policy_and_others_must_name_one(tmp_path):
    from gate.world.clip import ASSETS

    got = demo.resolve(str(ASSETS / "sd"), None, None, None)
    assert got.policy == str(demo.POLICY) and demo.POLICY.is_file()
    # an erased or fine-tuned copy keeps the world's tokenizer, so it is recognised by content
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ASSETS / "sd" / "tokenizer", copy / "tokenizer")
    assert demo.is_world_checkpoint(str(copy))
    with pytest.raises(BadInput, match="give --policy"):
        demo.resolve(str(_non_world_folder(tmp_path)), None, None, None)
    # an explicit policy is always taken as given
    assert demo.resolve("x", "u", "", "p.yaml") == demo.Inputs("x", "u", None, "p.yaml")


def test_the_world_policy_ships_in_the_package_and_the_checkout_links_to_it():
    assert demo.POLICY.parent.parent.name == "world"  # gate/world/policies: package data
    link = REPO / "policies" / "small-world.yaml"
    assert link.resolve() == demo.POLICY.resolve()
    text = (REPO / "pyproject.toml").read_text()
    assert '"policies/*.yaml"' in text


def test_world_policy_labels_are_the_world_concepts_words():
    """The policy's detector labels must agree with gate/world/concepts.py (they were a hand copy)."""
    from gate.policy import load_policy
    from gate.world.clip import object_texts

    pol = load_policy(demo.POLICY)
    spec = pol.concept("skull").detector
    assert spec.type == "world_clip"
    assert spec.settings["labels"] == object_texts()


# ---------------------------------------------------------------------------------------
# the typed report


def _report(verdict="fail") -> Report:
    r1 = rate_rule("skull", "max_presence_rate", 0.25, [True] * 9 + [False] * 3, baseline=0.0)
    r2 = RuleResult.skipped("skull", "max_resurgence", 0.3, "needs --original")
    return Report(
        verdict=verdict, inconclusive_counts_as="fail",
        inputs={"checkpoint": {"kind": "diffusers-folder", "path": "/x", "sha256": "a" * 64},
                "update": None, "policy": {"path": "p.yaml", "name": "p", "version": 1, "sha256": "b" * 64}},
        reproduce="gate check --checkpoint /x --policy p.yaml", seed=1, sampler={"steps": 2}, device="cpu",
        concepts=[ConceptReport.judged("skull", [r1, r2], True)],
    )  # fmt: skip


def test_report_round_trips_through_json_and_keeps_unknown_keys(tmp_path):
    rep = _report()
    d = rep.to_json()
    assert list(d)[:5] == ["report_version", "gate_version", "verdict", "inconclusive_counts_as", "inputs"]
    assert d["concepts"][0]["rules"][0]["direction"] == "max" and "meaning" in d["concepts"][0]["rules"][0]
    d["tracking"] = {"run_id": "r1"}  # a key this version does not know
    (tmp_path / "r.json").write_text(json.dumps(d))
    back = load_report(tmp_path / "r.json")
    assert back.concepts[0].verdict == "fail" and back.rule("skull", "max_presence_rate").observed == 0.75
    assert math.isnan(back.rule("skull", "max_resurgence").observed)
    assert back.to_json()["tracking"] == {"run_id": "r1"}
    assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(d, sort_keys=True)


def test_a_file_that_is_not_a_report_is_bad_input(tmp_path):
    (tmp_path / "a.json").write_text('{"hello": 1}')
    with pytest.raises(BadInput, match="not a gate report"):
        load_report(tmp_path / "a.json")
    with pytest.raises(BadInput, match="no such report"):
        load_report(tmp_path / "missing.json")


def test_a_renderer_failure_warns_and_keeps_the_json(tmp_path, monkeypatch):
    import gate.report as R

    def broken(*a, **k):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(R, "render_html", broken)
    warnings: list[str] = []
    written = write_reports(_report(), tmp_path, warn=warnings.append)
    assert json.loads((tmp_path / "report.json").read_text())["verdict"] == "fail"
    assert (tmp_path / "summary.md").is_file() and written == [tmp_path / "report.json", tmp_path / "summary.md"]
    assert len(warnings) == 1 and "report.html" in warnings[0] and "renderer bug" in warnings[0]


def test_rich_table_renders_every_verdict_including_skipped():
    """The skipped verdict had an empty rich style, ``[]skipped[/]``: a MarkupError after every image."""
    from rich.console import Console

    from gate.report import rich_table

    console = Console(record=True, width=140)
    console.print(rich_table(_report()))
    text = console.export_text()
    assert "skipped" in text and "fail" in text


# ---------------------------------------------------------------------------------------
# exit codes


def test_out_of_memory_is_the_tools_failure_with_what_to_try():
    def oom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory) as e:
        guard(oom, "--checkpoint sd14", "cuda")
    assert e.value.exit_code == EXIT_INTERNAL and "batch_size" in str(e.value) and "float16" in str(e.value)

    def corrupt():
        raise RuntimeError("Error(s) in loading state_dict: size mismatch")

    with pytest.raises(BadInput, match="cannot be loaded"):
        guard(corrupt, "--checkpoint x")


def test_cli_turns_out_of_memory_into_exit_3(monkeypatch, capsys, tmp_path):
    """GPU memory cannot run out on this machine, so the runner is replaced by one that raises
    what torch's out-of-memory error becomes in the gate (gate.runner._generate, gate.weights.guard)."""
    import gate.runner

    def fake_run_check(opts, **kw):
        raise OutOfMemory("generating images", "cuda:0", "batch of 8")

    monkeypatch.setattr(gate.runner, "run_check", fake_run_check)
    code = main(["check", "--checkpoint", str(tmp_path), "--policy", str(demo.POLICY), "--no-track"])
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL and "out of memory while generating images on cuda:0" in err and "batch_size" in err


def test_identity_content_key_leaves_out_where_a_file_is():
    a = Identity("diffusers-folder", "/runner/ws1/model", "c" * 64)
    b = Identity("diffusers-folder", "/tmp/head/model", "c" * 64)
    assert a.content_key() == b.content_key() and a.as_dict() != b.as_dict()
    s = Identity("single-file", "/a/m.safetensors", "d" * 64, {"config": "/a/cfg", "config_sha256": "e" * 64})
    assert s.content_key() == {"kind": "single-file", "sha256": "d" * 64, "config_sha256": "e" * 64}
