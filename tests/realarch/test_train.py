"""The commands that train, at Stable Diffusion's real architecture (random weights, CPU):
``gate erase`` with every method at a 1-2 iteration budget, ``gate finetune`` LoRA and full for
2 steps, ``gate prescreen``. Sizes: 64 px (8x8 latents) and 1-step image sets, so the tier fits
in CI; the code paths, parameter counts and file formats are SD's own. SalUn and SHS train the
cross-attention here (their default, every UNet weight, needs ~21 GB with Adam and saliency at
SD size: more than this 23 GB machine can spare)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.realarch

RES = "64"
BUDGET = {
    "esd-x": ["iterations=1", "ddim_steps=2"],
    "esd-u": ["iterations=1", "ddim_steps=2"],
    "uce": [],
    "mace": ["lora_steps=1", "n_forget=1", "n_retain=1"],
    "sdd": ["steps=1", "ddim_steps=2"],
    "salun": ["epochs=1", "n_forget=1", "n_retain=1", "batch_size=1", "train_method=xattn"],
    "shs": ["epochs=1", "prune_num=1", "n_forget=1", "n_retain=1", "batch_size=1", "train_method=xattn"],
    "erasediff": ["epochs=1", "k_steps=1", "n_forget=1", "n_retain=1", "batch_size=1"],
}


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    """The gate CLI in this process (``gate.cli.main``: what the ``gate`` command runs), so that
    the tier pays for torch's import and the weights' hashes once; output captured."""
    import contextlib
    import io

    from gate.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["gate", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def scratch(tmp_path) -> Iterator[Path]:
    """A folder for one SD-size output (an erased or fully fine-tuned model: about 4 GB in fp32),
    deleted after the test whatever its outcome, so the tier holds at most one such output on
    disk beside the cache (CI machines may have little disk to spare)."""
    out = tmp_path / "out"
    try:
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Two captioned images (random pixels) in the diffusers training layout."""
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("benign-data")
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["a photo of a bicycle", "a watercolor of a lighthouse"]):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": text}))
    (d / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return d


@pytest.mark.parametrize("method", list(BUDGET))
def test_erase_every_method(method, sd14_dir, scratch):
    from gate.unlearn import METHODS

    assert set(BUDGET) == set(METHODS)  # every method is here
    out = scratch
    sets = [x for s in BUDGET[method] for x in ("--set", s)]
    extra = ["--gradient-checkpointing"] if method == "esd-x" else []
    p = gate("erase", "--method", method, "--concept", "a photo of a cat", "--preserve", "a photo of a dog",
             "--checkpoint", str(sd14_dir), "--out", str(out), "--resolution", RES, "--image-steps", "1",
             "--device", "cpu", *sets, *extra)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "erase.json").read_text())
    assert rec["method"] == method and rec["preset"] == "original"
    assert rec["compute"]["device"] == "cpu" and rec["compute"]["precision"] == "fp32"
    assert rec["compute"]["gradient_checkpointing"] is bool(extra) and rec["resolution"] == 64
    assert rec["parameters_changed"]["values"] > 0
    assert "compute: device cpu, fp32" in p.stderr
    cfg = json.loads((out / "unet" / "config.json").read_text())
    assert cfg["cross_attention_dim"] == 768 and cfg["block_out_channels"] == [320, 640, 1280, 1280]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_finetune_sd14(mode, sd14_dir, data_dir, scratch):
    out = scratch
    p = gate("finetune", "--checkpoint", str(sd14_dir), "--data", str(data_dir), "--out", str(out), "--mode", mode,
             "--steps", "2", "--batch-size", "1", "--resolution", RES, "--device", "cpu",
             "--gradient-checkpointing")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "finetune.json").read_text())
    assert rec["compute"] == {**rec["compute"], "device": "cpu", "precision": "fp32", "gradient_checkpointing": True}
    assert rec["config"]["resolution"] == 64 and rec["final_loss"] > 0
    if mode == "lora":
        assert (out / "pytorch_lora_weights.safetensors").is_file()
    else:
        assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_finetune_sd21_v_prediction(sd21_dir, data_dir, tmp_path):
    """SD 2.1 predicts velocity: the LoRA trains against v, not the noise."""
    out = tmp_path / "lora21"
    p = gate("finetune", "--checkpoint", str(sd21_dir), "--data", str(data_dir), "--out", str(out), "--mode", "lora",
             "--steps", "2", "--batch-size", "1", "--resolution", RES, "--device", "cpu")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    sched = json.loads((sd21_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction"


def test_precision_needs_cuda(sd14_dir, data_dir, tmp_path):
    p = gate("finetune", "--checkpoint", str(sd14_dir), "--data", str(data_dir), "--out", str(tmp_path / "x"),
             "--precision", "bf16", "--device", "cpu")  # fmt: skip
    assert p.returncode == 2 and "needs a CUDA device" in p.stderr


@pytest.fixture(scope="module")
def sd14_uce(sd14_dir, tmp_path_factory) -> Iterator[Path]:
    """An unlearned SD v1.4-size model: UCE (closed form, seconds) erasing a cat; deleted after
    the module's tests."""
    out = tmp_path_factory.mktemp("uce") / "sd14-uce"
    try:
        p = gate("erase", "--method", "uce", "--concept", "a photo of a cat", "--checkpoint", str(sd14_dir),
                 "--out", str(out), "--device", "cpu")  # fmt: skip
        assert p.returncode == 0, p.stderr[-3000:]
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_prescreen_command(sd14_dir, sd14_uce, tmp_path):
    """gate prescreen at SD v1.4 size: one pipeline, a small budget (16x16 latents, one timestep)."""
    from gate.realarch import make_peft_lora

    lora = make_peft_lora(sd14_dir, tmp_path / "lora")
    p = gate("prescreen", "--original", str(sd14_dir), "--checkpoint", str(sd14_uce), "--update", str(lora),
             "--concept", "a photo of a cat", "--latents", "1", "--timesteps", "500", "--latent-size", "16",
             "--device", "cpu")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["kv_undo"] is not None and res["kv_edit_energy"] > 0  # UCE edited the K/V projections
    assert res["weight_undo"] is not None and res["budget"]["latent_size"] == 16 and res["device"] == "cpu"
    assert set(res["stages_s"]) >= {"unlearned", "candidate", "weights", "original", "restore"}


def test_certify_sd14(sd14_dir, sd14_uce, data_dir, realarch_policy, tmp_path):
    """gate certify at SD v1.4 size: an SD-family recipe file (the sd1 recipe's shape at 64 px,
    batch 1), one LoRA fine-tune of 2 steps on a benign data folder, the policy's check on it, the
    certificate. The family is told from the UNet (768-d cross-attention: sd1)."""
    from gate.certify.recipe import family_of, load_recipe

    assert family_of(str(sd14_uce)) == "sd1"
    sd1 = load_recipe("sd1")
    recipe = tmp_path / "sd1-tier.yaml"
    recipe.write_text(json.dumps({
        "version": 1, "name": "sd1-tier", "family": "sd1", "description": "the sd1 recipe at the tier's size",
        "data": "folder", "resolution": 64, "seeds": [0],
        "finetunes": {"lora": {**sd1.finetunes["lora"], "steps": 2, "batch_size": 1}},
    }))  # fmt: skip
    out = tmp_path / "cert"
    p = gate("certify", "--checkpoint", str(sd14_uce), "--original", str(sd14_dir),
             "--policy", str(realarch_policy("sd14-objects")), "--recipe", str(recipe), "--data", str(data_dir),
             "--out", str(out), "--device", "cpu", "--gradient-checkpointing", "--no-track", "--no-cache")  # fmt: skip
    assert p.returncode in (0, 1), p.stderr[-3000:]
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["recipe"]["name"] == "sd1-tier" and cert["recipe"]["standard"] is True
    assert cert["data"]["n"] == 2 and cert["finetunes"][0]["steps"] == 2
    assert p.returncode == (1 if cert["verdict"] == "fail" else 0)
    assert set(cert["concepts"]["church"]["lora"]["figures"]) >= {"max_presence_rate", "min_retained_fidelity"}
    assert (out / "certificate.md").is_file()
