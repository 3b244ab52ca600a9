"""Device and precision choices, the policy's new sampler and pre-screen keys: no model loads.
No GPU here: the CUDA branches are checked for the error a CPU-only machine must give."""

from __future__ import annotations

import pytest

from gate.devices import Compute, check_device
from gate.errors import BadInput


def test_cpu_is_fp32_and_cuda_absent_is_bad_input():
    c = Compute.resolve("cpu", "auto")
    assert (c.device, c.precision, c.autocast_dtype) == ("cpu", "fp32", None)
    assert c.as_record()["master_weights"] == "fp32" and "fp32" in c.describe()
    with pytest.raises(BadInput, match="needs a CUDA device"):
        Compute.resolve("cpu", "bf16")
    with pytest.raises(BadInput, match="no CUDA device here"):
        check_device("cuda:0")
    with pytest.raises(BadInput, match="use cpu, cuda"):
        check_device("gpu")
    with pytest.raises(BadInput, match="--precision"):
        Compute.resolve("cpu", "fp8")


def test_scaler_is_off_unless_fp16():
    assert not Compute.resolve("cpu").scaler().is_enabled()


def test_gradient_checkpointing_reaches_the_modules():
    class M:
        on = False

        def enable_gradient_checkpointing(self):
            self.on = True

    m = M()
    Compute("cpu", "fp32", True).prepare(m)
    assert m.on
    m2 = M()
    Compute("cpu", "fp32", False).prepare(m2)
    assert not m2.on


def _policy(tmp_path, extra: str):
    from gate.policy import load_policy

    p = tmp_path / "p.yaml"
    p.write_text(
        "version: 1\n" + extra + "\nconcepts:\n  c:\n    prompts: [a c]\n"
        "    detector: {type: fake}\n    rules: {max_presence_rate: 0.1}\n"
    )
    return load_policy(p)


def test_policy_sampler_auto_batch_and_vae_options(tmp_path):
    pol = _policy(tmp_path, "sampler: {batch_size: auto, vae_slicing: true, vae_tiling: false}")
    assert pol.sampler.batch_size == "auto" and pol.sampler.vae_slicing
    for bad, msg in (("sampler: {batch_size: 0}", "at least 1"), ("sampler: {batch_size: many}", "whole number"),
                     ("sampler: {vae_slicing: yes please}", "true or false")):  # fmt: skip
        with pytest.raises(BadInput, match=msg):
            _policy(tmp_path, bad)


def test_policy_prescreen_budget(tmp_path):
    pol = _policy(tmp_path, "prescreen: {latents: 2, timesteps: [200, 800], latent_size: 32}")
    assert (pol.prescreen.latents, pol.prescreen.timesteps, pol.prescreen.latent_size) == (2, (200, 800), 32)
    assert _policy(tmp_path, "").prescreen.latent_size == 16  # SD-size default: 16x16 latents
    for bad, msg in (("prescreen: {latent_size: 12}", "multiple of 8"), ("prescreen: {timesteps: [1000]}", "not a timestep"),
                     ("prescreen: {latens: 2}", "did you mean 'latents'"), ("prescreen: {timesteps: []}", "at least one")):  # fmt: skip
        with pytest.raises(BadInput, match=msg):
            _policy(tmp_path, bad)


def test_prescreen_budget_change_is_neutral_in_policy_diff(tmp_path):
    from gate.policy_diff import LOOSENS, NEUTRAL, diff_policies

    a = _policy(tmp_path, "")
    b = _policy(tmp_path, "prescreen: {latents: 4}\nsampler: {vae_slicing: true}")
    kinds = {c.field: c.kind for c in diff_policies(a, b)}
    assert kinds == {"prescreen": NEUTRAL, "sampler.vae_slicing": NEUTRAL}
    c = _policy(tmp_path, "sampler: {vae_tiling: true}")
    assert {ch.field: ch.kind for ch in diff_policies(a, c)} == {"sampler.vae_tiling": LOOSENS}


def test_distributed_shares_are_whole_batches():
    from gate.distributed import Processes

    batches = [[0, 1], [2, 3], [4]]
    a, b = Processes(0, 2), Processes(1, 2)
    assert a.share(batches) + b.share(batches) == [[0, 1], [4], [2, 3]]
    assert Processes(1, 2, local_rank=1).device("cuda") == "cuda:1"
    with pytest.raises(BadInput, match="give --device cuda"):
        Processes(1, 2).device("cuda:3")
    assert Processes().device("cuda:3") == "cuda:3"  # a single process uses what it is given


def test_out_of_memory_in_training_is_exit_3_with_what_to_lower(monkeypatch, capsys):
    """torch's CUDA out-of-memory error (raised here by hand: no GPU) in gate finetune."""
    from gate.cli import build_parser, main

    def boom(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("gate.cli.build_parser", lambda: _with(build_parser(), boom))
    assert main(["finetune", "--checkpoint", "x", "--data", "y", "--out", "z"]) == 3
    err = capsys.readouterr().err
    assert "out of memory while running gate finetune on cpu" in err and "--gradient-checkpointing" in err


def _with(parser, func):
    for action in parser._subparsers._group_actions:
        action.choices["finetune"].set_defaults(func=func)
    return parser


def test_large_file_hashes_are_memoised_but_never_for_fresh_files(tmp_path):
    import os

    from gate import provenance as P

    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * (P._MEMO_MIN_BYTES))
    first = P.hash_file(f)
    f.write_bytes(b"b" * (P._MEMO_MIN_BYTES))  # same size, written at once: still hashed anew
    assert P.hash_file(f) != first
    old = os.stat(f).st_mtime - 60
    os.utime(f, (old, old))
    h = P.hash_file(f)
    assert P.hash_file(f) == h and any(k[0] == str(f.resolve()) for k in P._HASHED)
