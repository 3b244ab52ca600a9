"""The gate end to end on the small world: verdicts on the zoo's candidates, the pytest
interface, bad input, reproducibility and the baseline cache. Real models, real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gate.cli import main

REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "policies" / "small-world.yaml")


def run_check(zoo, update, tmp_path, cache_dir, *extra):
    out = tmp_path / "report"
    code = main(["check", "--checkpoint", zoo["checkpoint"], "--original", zoo["original"], "--policy", POLICY,
                 "--cache-dir", cache_dir, "--report-dir", str(out), *(["--update", zoo[update]] if update else []), *extra])  # fmt: skip
    return code, json.loads((out / "report.json").read_text()), out


def rules(report):
    return {(r["concept"], r["rule"]): r for c in report["concepts"] for r in c["rules"]}


def test_relearning_control_fails(zoo, tmp_path, cache_dir, capsys):
    """The positive control (fine-tuned on images that show the skull) brings it back: FAIL."""
    code, rep, out = run_check(zoo, "relearn", tmp_path, cache_dir)
    assert code == 1 and rep["verdict"] == "fail"
    r = rules(rep)
    assert r[("skull", "max_presence_rate")]["verdict"] == "fail"
    assert r[("skull", "max_increase_over_baseline")]["verdict"] == "fail"
    assert r[("skull", "max_resurgence")]["observed"] >= 0.3
    assert r[("skull", "max_increase_over_baseline")]["p_value"] < 0.001
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("VERDICT: FAIL")
    assert (out / "summary.md").read_text().count("**FAIL**") >= 1
    assert "<img" in (out / "report.html").read_text() and list((out / "images").glob("*.png"))
    for key in ("checkpoint", "update", "original", "policy"):
        assert len(rep["inputs"][key]["sha256"]) == 64


def test_benign_candidate_that_resurges_fails(zoo, tmp_path, cache_dir):
    """Concept resurgence proper: a LoRA trained on data that never shows a skull (labels
    guarantee it) brings the skull back, and the gate fails it."""
    code, rep, _ = run_check(zoo, "resurgent", tmp_path, cache_dir)
    assert code == 1 and rep["verdict"] == "fail"
    r = rules(rep)
    assert r[("skull", "max_increase_over_baseline")]["verdict"] == "fail"
    assert r[("skull", "max_resurgence")]["observed"] >= 0.3
    # the model still works: this is resurgence, not a broken model
    assert r[("skull", "min_retained_fidelity")]["verdict"] == "pass"


def test_benign_candidate_passes(zoo, tmp_path, cache_dir):
    """A LoRA on self-attention only, trained on data without any skull: measured not to resurge."""
    code, rep, _ = run_check(zoo, "benign", tmp_path, cache_dir)
    assert code == 0 and rep["verdict"] == "pass", rules(rep)


def test_second_candidate_only_generates_its_own_images(zoo, tmp_path, cache_dir):
    run_check(zoo, "benign", tmp_path / "a", cache_dir)
    _, rep, _ = run_check(zoo, "benign_kv", tmp_path / "b", cache_dir)
    # every baseline and original image was a cache hit
    n_base = sum(r["n"] for r in rules(rep).values() if r["rule"] == "max_presence_rate")
    assert rep["cache"]["hits"] >= n_base


def test_two_runs_give_identical_figures(zoo, tmp_path):
    # the small test policy (one prompt per group): reproducibility does not need the full image count
    tiny = ("--no-cache", "--policy", str(REPO / "tests" / "policies" / "tiny.yaml"))
    _, a, _ = run_check(zoo, "relearn", tmp_path / "a", str(tmp_path / "c1"), *tiny)
    _, b, _ = run_check(zoo, "relearn", tmp_path / "b", str(tmp_path / "c2"), *tiny)
    assert a["inputs"]["policy"]["name"] == "small-world-tiny"
    keys = ("observed", "low", "high", "verdict", "baseline", "worst")
    assert {k: {f: v[f] for f in keys} for k, v in rules(a).items()} == {
        k: {f: v[f] for f in keys} for k, v in rules(b).items()
    }


# ---------------------------------------------------------------------------------------
# bad input: exit 2, one clear line naming the input, no traceback, nothing executed


def _bad(capsys, args, expect):
    code = main(["check", "--no-cache", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expect in err and "Traceback" not in err
    return err


def test_missing_checkpoint(capsys, tmp_path):
    _bad(capsys, ["--checkpoint", str(tmp_path / "nope"), "--policy", POLICY], "no such folder or file")


def test_truncated_update(zoo, capsys, tmp_path):
    blob = Path(zoo["relearn"]).read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(blob[: len(blob) // 3])
    _bad(
        capsys,
        ["--checkpoint", zoo["checkpoint"], "--update", str(bad), "--policy", POLICY],
        "not a readable safetensors file",
    )


def test_pickle_update_is_refused_and_never_loaded(zoo, capsys, tmp_path):
    import pickle

    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "unet.bin"
    bad.write_bytes(pickle.dumps(Evil()))
    _bad(capsys, ["--checkpoint", zoo["checkpoint"], "--update", str(bad), "--policy", POLICY], "pickles can run code")
    assert not marker.exists()
    # opting in still never unpickles arbitrary objects: weights_only=True refuses it
    _bad(
        capsys,
        ["--checkpoint", zoo["checkpoint"], "--update", str(bad), "--policy", POLICY, "--allow-pickle"],
        "not a plain tensor state dict",
    )
    assert not marker.exists()


def test_lora_for_another_model(zoo, capsys, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from gate.world.models import unet_config

    other = UNet2DConditionModel(**dict(unet_config(), block_out_channels=(16, 32, 48)))
    other.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_k", "to_v"]))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(other))
    _bad(capsys, ["--checkpoint", zoo["checkpoint"], "--update", str(tmp_path / "pytorch_lora_weights.safetensors"), "--policy", POLICY],
         "built for another architecture")  # fmt: skip


def test_nan_weights(zoo, capsys, tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"conv_in.weight": torch.full((32, 4, 3, 3), float("nan"))}, str(tmp_path / "unet.safetensors"))
    _bad(
        capsys,
        ["--checkpoint", zoo["checkpoint"], "--update", str(tmp_path / "unet.safetensors"), "--policy", POLICY],
        "NaN or infinite",
    )


def test_corrupt_checkpoint_folder(zoo, capsys, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(zoo["checkpoint"], ck)
    w = ck / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    _bad(capsys, ["--checkpoint", str(ck), "--policy", POLICY], "cannot be loaded")


def test_policy_typo_and_unknown_detector(zoo, capsys, tmp_path):
    text = Path(POLICY).read_text()
    p = tmp_path / "typo.yaml"
    p.write_text(text.replace("max_presence_rate", "max_presense_rate"))
    _bad(capsys, ["--checkpoint", zoo["checkpoint"], "--policy", str(p)], "did you mean 'max_presence_rate'")
    p.write_text(text.replace("type: world_clip", "type: world_clipp"))
    _bad(capsys, ["--checkpoint", zoo["checkpoint"], "--policy", str(p)], "unknown detector 'world_clipp'")


# ---------------------------------------------------------------------------------------
# the pytest interface


def test_pytest_probes_fail_and_pass(zoo, pytester, cache_dir):
    pytester.makepyfile(
        test_probe="from gate.plugin import check_rule\n\ndef test_rule(gate_rule, gate_result):\n    check_rule(gate_result)\n"
    )
    args = ["--checkpoint", zoo["checkpoint"], "--original", zoo["original"], "--policy", POLICY,
            "--gate-cache-dir", cache_dir, "--gate-report-dir", str(pytester.path / "rep"), "-p", "no:randomly"]  # fmt: skip
    uri = f"sqlite:///{pytester.path / 'mlflow.db'}"
    res = pytester.runpytest_subprocess(
        *args, "--update", zoo["relearn"], "--junitxml", "j.xml", "--gate-tracking-uri", uri
    )
    outcomes = res.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1
    text = res.stdout.str()
    assert "skull-max_increase_over_baseline" in text and "worst prompts" in text and "Traceback" not in text
    assert "reproduce with: gate check" in text
    xml = (pytester.path / "j.xml").read_text()
    assert '<property name="observed"' in xml and '<property name="threshold"' in xml
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("resurgence-gate").experiment_id], "tags.`gate.kind` = 'check'"
    )
    assert len(runs) == 1 and runs[0].data.tags["gate.verdict"] == "fail"  # pytest probes/ is logged like gate check
    res = pytester.runpytest_subprocess(*args, "--update", zoo["benign"])
    assert res.parseoutcomes().get("failed", 0) == 0 and res.parseoutcomes().get("passed", 0) == 5
    # the benign LoRA that resurges fails the same tests as the relearning control
    res = pytester.runpytest_subprocess(*args, "--update", zoo["resurgent"], "--gate-no-track")
    failed = {line.split("::")[-1].split(" ")[0] for line in res.stdout.lines if line.startswith("FAILED")}
    assert any("skull-max_increase_over_baseline" in f for f in failed), res.stdout.str()[-3000:]
