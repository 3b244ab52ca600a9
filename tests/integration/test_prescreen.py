"""The pre-screen on the zoo's candidates: no images, real weights."""

from __future__ import annotations

import json

import pytest

from gate.cli import main
from gate.prescreen_command import weight_prescreen
from gate.world import concepts as C


@pytest.fixture(scope="module")
def scores(zoo):
    prompts = list(C.concept("skull").synonyms)
    return {k: weight_prescreen(zoo["original"], zoo["checkpoint"], zoo[k], prompts)
            for k in ("relearn", "resurgent", "benign")}  # fmt: skip


def test_scores_separate_the_resurgent_from_the_benign(scores):
    # measured R (gate/world/zoo): relearning control 0.98, resurgent benign LoRA 0.89,
    # self-attention LoRA 0.00. The pre-screen separates the two that resurge from the one that
    # does not; it does not order 0.98 against 0.89 (eps_undo 1.024 against 1.026 on the world
    # build with co-occurrence), as its measured rank correlation (0.67) leads one to expect
    for key in ("eps_undo", "guidance_undo"):
        s = {k: v[key] for k, v in scores.items()}
        assert min(s["relearn"], s["resurgent"]) > 1.5 * s["benign"], (key, s)
    g = {k: v["guidance_undo"] for k, v in scores.items()}
    assert g["relearn"] <= 1.0  # 1 means the guidance is back at the original model's
    assert scores["benign"]["kv_undo"] == pytest.approx(0.0, abs=1e-6)  # it never touches cross-attention
    assert scores["resurgent"]["kv_undo"] > 0 and scores["resurgent"]["layers"]


def test_prescreen_cli(zoo, tmp_path, capsys):
    assert main(["prescreen", "--original", zoo["original"], "--checkpoint", zoo["checkpoint"],
                 "--update", zoo["resurgent"], "--concept", "skull"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert 0 < res["eps_undo"] < 1.5 and res["seconds"] > 0
    assert main(["prescreen", "--checkpoint", zoo["checkpoint"], "--concept", "skull"]) == 2
    assert "needs --original and --update" in capsys.readouterr().err
    from gate.world.export import write_folder

    write_folder(tmp_path / "d", n=32, seed=3, exclude=["skull"])
    assert (
        main(["prescreen", "--checkpoint", zoo["checkpoint"], "--data", str(tmp_path / "d"), "--concept", "skull"]) == 0
    )
    assert 0 <= json.loads(capsys.readouterr().out)["data_overlap"] <= 1
