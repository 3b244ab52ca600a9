"""``gate study`` on a tiny grid: real erasure (UCE), real LoRA fine-tunes, real measurements;
outputs, resumption after an interruption, and config errors."""

from __future__ import annotations

import contextlib
import csv
import json

from gate.cli import main
from tests.unit.test_study import TINY  # one tiny study config for both tiers


def test_study_runs_resumes_and_reports(tmp_path, capsys):
    out, work = tmp_path / "results", tmp_path / "work"
    cfg = tmp_path / "study.yaml"
    cfg.write_text(TINY.format(out=out, work=work))
    assert main(["study", str(cfg), "--threads", "1"]) == 0
    first = capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in rows]
    # original, unlearned, two fine-tuning steps of seed 0 and the last of seed 1, the control's two
    # steps (seed 0 only), the factor's two steps of seed 0 and the last of seed 1
    assert len(keys) == 10 == len(set(keys))
    assert {"original|skull", "unlearned|uce|skull", "finetuned|uce|skull|main|2", "finetuned|uce|skull|main|4",
            "finetuned|uce|skull|main|4|s1", "control|skull|2", "control|skull|4", "finetuned|uce|skull|data-lumo|4",
            "finetuned|uce|skull|data-lumo|4|s1"} <= set(keys)  # fmt: skip
    by_key = {r["key"]: r for r in rows}
    assert by_key["finetuned|uce|skull|main|4|s1"]["seed"] == 1 and by_key["control|skull|4"]["seed"] == 0
    s0, s1 = (work / "finetunes" / f"uce-skull-main-s{s}" for s in (0, 1))
    assert (s0 / "checkpoint-2").is_dir() and not (s1 / "checkpoint-2").exists()  # seed 1: the final step only
    lora = "pytorch_lora_weights.safetensors"
    assert (s0 / lora).read_bytes() != (s1 / lora).read_bytes()  # two fine-tunes, not one measured twice
    orig = next(r for r in rows if r["key"] == "original|skull")
    assert len(orig["hits"]) == 4 and len(orig["retained_hits"]) == 2 and len(orig["incidental_hits"]) == 2
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    ft = [r for r in table if r["stage"] == "finetuned"]
    assert ft and all(r["R"] != "" and float(r["R_low"]) <= float(r["R"]) <= float(r["R_high"]) for r in ft)
    sim = [r for r in ft if r["factor"] == "similarity"]
    assert sim and "clip_distance" in sim[0]["level"]
    assert sorted(r["seed"] for r in ft if r["factor"] == "") == ["0", "0", "1"]
    md = (out / "results.md").read_text()
    assert "| skull | uce |" in md and "Control (the same fine-tune with seed 0 only" in md
    assert "Fine-tuning seeds 0, 1:" in md and "R across seeds" in md
    for png in ("curves.png", "heatmap.png", "factors.png"):
        assert (out / png).stat().st_size > 1000
    assert first.count("fine-tune ") == 5  # the cell's and the factor's for each seed, the control's once

    # a rerun measures nothing again
    assert main(["study", str(cfg), "--threads", "1"]) == 0
    again = capsys.readouterr().out
    assert "fine-tune " not in again and "detection" not in again.replace("rows so far", "")

    # an interruption: the last measurement lost, the one before cut mid-line
    lines = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])
    assert main(["study", str(cfg), "--threads", "1"]) == 0
    resumed = capsys.readouterr().out
    assert "fine-tune " not in resumed  # the fine-tune on disk is reused
    redone = {json.loads(x)["key"] for x in lines[-2:]}
    assert all(k in resumed for k in redone)
    final = {}
    for x in (out / "rows.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            final[json.loads(x)["key"]] = json.loads(x)
    assert set(final) == set(keys)
    for k in redone:  # the same seeds give the same measurement
        assert final[k]["hits"] == next(r for r in rows if r["key"] == k)["hits"]

    # a model made with an older preset is not silently reused: its rows would mix with new ones
    rec_path = work / "models" / "uce-skull" / "erase.json"
    saved = rec_path.read_text()
    rec = json.loads(saved)
    rec["config"]["preserve_scale"] = 123.0
    rec_path.write_text(json.dumps(rec))
    assert main(["study", str(cfg), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "another uce configuration" in err and "preserve_scale: 123.0" in err

    # nor one erased from another build of the world's model
    rec = json.loads(saved)
    rec["inputs"]["checkpoint_sha256"] = "0" * 64
    rec_path.write_text(json.dumps(rec))
    assert main(["study", str(cfg), "--threads", "1"]) == 2
    assert "erased from another build of the world's model (sha256 000000000000" in capsys.readouterr().err

    # the output folder records the world its rows were measured on; rows of another build are refused
    stamp = json.loads((out / "world.json").read_text())
    assert len(stamp["sd_sha256"]) == 64 and len(stamp["clip_sha256"]) == 64
    assert stamp["sd_sha256"][:12] in (out / "results.md").read_text()
    (out / "world.json").write_text(json.dumps({**stamp, "sd_sha256": "f" * 64}))
    assert main(["study", str(cfg), "--threads", "1"]) == 2
    assert "another build of the world (sd_sha256 ffffffffffff there" in capsys.readouterr().err
    (out / "world.json").unlink()
    assert main(["study", str(cfg), "--threads", "1"]) == 2
    assert "no world.json" in capsys.readouterr().err
