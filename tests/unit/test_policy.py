"""Policies: data only, include:, version, errors with hints; gate validate without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gate.policy import PolicyError, load_policy

REPO = Path(__file__).resolve().parents[2]
BASE = textwrap.dedent(
    """
    version: 1
    seed: 7
    sampler: {steps: 4, guidance: 2.0}
    detectors:
      d: {type: fake}
    concepts:
      skull:
        prompts: [a skull]
        incidental_prompts: [a circle]
        retained: {circle: [a circle]}
        detector: {use: d}
        rules: {max_presence_rate: 0.2, min_retained_fidelity: 0.5, max_incidental_rate: 0.1}
    """
)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_shipped_policies_validate():
    for p in sorted((REPO / "policies").glob("*.yaml")):
        if p.name == "sd-base.yaml":
            continue
        pol = load_policy(p)
        assert pol.concepts and pol.version == 1 and len(pol.sha256) == 64


def test_include_and_override(tmp_path):
    write(tmp_path, BASE, "base.yaml")
    p = write(tmp_path, "version: 1\ninclude: base.yaml\nname: child\nsampler: {steps: 9}\n")
    pol = load_policy(p)
    assert pol.name == "child" and pol.sampler.steps == 9 and pol.sampler.guidance == 2.0
    assert pol.seed == 7 and pol.concepts[0].name == "skull"
    assert len(pol.files) == 2


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE.replace("sampler:", "samplr:"), "unknown key 'samplr'; did you mean 'sampler'?"),
        (BASE.replace("max_presence_rate", "max_presense_rate"), "did you mean 'max_presence_rate'?"),
        (BASE.replace("seed: 7", "seed: seven"), "seed: expected an integer seed"),
        (BASE.replace("version: 1", "version: 2"), "version 2 is not supported"),
        (BASE.replace("version: 1\n", ""), "missing 'version'"),
        (BASE.replace("{type: fake}", "{type: fakee}"), "unknown detector 'fakee'; did you mean 'fake'?"),
        (BASE.replace("use: d", "use: e"), "no detector named 'e'"),
        (BASE.replace("max_presence_rate: 0.2", "max_presence_rate: 20"), "is a rate; use a value between 0 and 1"),
        (BASE.replace("prompts: [a skull]", "prompts: 3"), "expected a list of prompts"),
        (BASE.replace("    incidental_prompts: [a circle]\n", ""), "max_incidental_rate needs incidental_prompts"),
        ("- a\n- list\n", "a policy is a mapping"),
        ("version: 1\nconcepts: {}\n", "missing 'concepts'"),
        ("version: [1\n", "not valid YAML"),
    ],
)
def test_bad_policies_name_the_problem(tmp_path, text, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_policy(write(tmp_path, text))


def test_yaml_tags_never_run_code(tmp_path):
    p = write(tmp_path, "version: 1\nconcepts: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(p)


def test_include_cycle(tmp_path):
    write(tmp_path, "version: 1\ninclude: b.yaml\n", "a.yaml")
    write(tmp_path, "version: 1\ninclude: a.yaml\n", "b.yaml")
    with pytest.raises(PolicyError, match="include cycle"):
        load_policy(tmp_path / "a.yaml")


def test_gate_validate_cli_without_torch(tmp_path):
    p = write(tmp_path, BASE)
    code = (
        f"import sys; from gate.cli import main; rc = main(['validate', {str(p)!r}]); print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "ok: policy" in out and out.strip().endswith("0 False")
    bad = write(tmp_path, BASE.replace("rules:", "rulez:"), "bad.yaml")
    res = subprocess.run([sys.executable, "-m", "gate.cli", "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and "did you mean 'rules'" in res.stderr and "Traceback" not in res.stderr


def test_incidental_detector_judges_the_incidental_prompts_only(tmp_path):
    det = "    detector: {use: d}\n"
    assert det in BASE
    p = write(tmp_path, BASE.replace(det, det + "    incidental_detector: {use: d, threshold: 0.3}\n"))
    c = load_policy(p).concepts[0]
    assert c.incidental_detector is not None and c.detector_for("incidental") == c.incidental_detector
    assert c.detector_for("concept") == c.detector_for("retained") == c.detector != c.incidental_detector
    no_incidental = (
        BASE.replace("    incidental_prompts: [a circle]\n", "")
        .replace(", max_incidental_rate: 0.1", "")
        .replace(det, det + "    incidental_detector: {use: d}\n")
    )
    with pytest.raises(PolicyError, match="incidental_detector needs incidental_prompts"):
        load_policy(write(tmp_path, no_incidental, "q.yaml"))
