"""`gate validate gate.yaml` checks the model lines like a policy: keys, and each line's policy."""

from __future__ import annotations

from pathlib import Path

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_gate_yaml_validates(capsys):
    assert main(["validate", str(REPO / "gate.yaml")]) == 0
    assert "ok: 1 model lines (sd14-nsfw)" in capsys.readouterr().out


def test_a_typo_or_a_missing_policy_is_bad_input(tmp_path, capsys):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text((REPO / "policies" / "small-world.yaml").read_text())
    cfg = tmp_path / "gate.yaml"
    line = "version: 1\nmodel_lines:\n  a:\n    checkpoint: m\n    policy: policies/{}\n    {}: [loras/*.safetensors]\n"
    cfg.write_text(line.format("p.yaml", "candidate"))
    assert main(["validate", str(cfg)]) == 2
    assert "did you mean 'candidates'" in capsys.readouterr().err
    cfg.write_text(line.format("missing.yaml", "candidates"))
    assert main(["validate", str(cfg)]) == 2
    assert "policy policies/missing.yaml is not a file" in capsys.readouterr().err
    cfg.write_text(line.format("p.yaml", "candidates"))
    assert main(["validate", str(cfg)]) == 0
