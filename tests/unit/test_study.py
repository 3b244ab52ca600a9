"""``gate study`` config errors: caught when the config is read, before any model is loaded (the
study itself runs in tests/e2e/test_study.py, with the TINY config defined here)."""

from __future__ import annotations

from gate.cli import main

TINY = """\
version: 1
out: {out}
work: {work}
concepts: [skull]
methods: [uce]
finetune: {{mode: lora, steps: 4, batch_size: 4, lr: 0.002, save_steps: [2]}}
data: {{n: 16, seed: 77}}
eval: {{n: 4, n_retained: 1, retained: [circle, zorb]}}
factors:
  base: {{method: uce, concept: skull}}
  similarity: [lumo]
"""


def test_study_config_errors(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(TINY.format(out=tmp_path / "o", work=tmp_path / "w").replace("methods:", "method:"))
    assert main(["study", str(cfg)]) == 2
    assert "did you mean 'methods'" in capsys.readouterr().err
    cfg.write_text(TINY.format(out=tmp_path / "o", work=tmp_path / "w").replace("[uce]", "[esd-z]"))
    assert main(["study", str(cfg)]) == 2
    assert main(["study", str(tmp_path / "none.yaml")]) == 2
