"""``gate study`` without a model: config errors (caught when the config is read), fine-tuning seeds
and their row keys, R across seeds and weak erasures in the tables (from rows made up here), and a
texture as a study concept (prompts, retained concepts, data). The study itself runs in
tests/e2e/test_study.py, with the TINY config defined here."""

from __future__ import annotations

from gate.cli import main

TINY = """\
version: 1
out: {out}
work: {work}
concepts: [skull]
methods: [uce]
finetune: {{mode: lora, steps: 4, batch_size: 4, lr: 0.002, save_steps: [2]}}
finetune_seeds: [0, 1]
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


# --- fine-tuning seeds ---------------------------------------------------------------------------


def _config(tmp_path, extra: str = "", tiny: str = TINY):
    from gate.world.study import load_config

    path = tmp_path / "study.yaml"
    path.write_text(tiny.format(out=tmp_path / "o", work=tmp_path / "w") + extra)
    return load_config(path)


def test_finetune_seeds_default_to_the_study_seed_and_are_checked(tmp_path, capsys):
    plain = TINY.replace("finetune_seeds: [0, 1]\n", "")
    assert _config(tmp_path, tiny=plain).finetune_seeds == [0]  # one fine-tune, as the first studies
    assert _config(tmp_path, "seed: 3\n", tiny=plain).finetune_seeds == [3]
    assert _config(tmp_path).finetune_seeds == [0, 1]
    for bad, said in (("[]", "non-empty list"), ("[0, 0]", "repeats a seed"), ("3", "non-empty list"),
                      ("[-1]", "non-negative"), ("[true]", "non-empty list"), ("[a]", "non-empty list")):  # fmt: skip
        (tmp_path / "bad.yaml").write_text(TINY.format(out=tmp_path / "o", work=tmp_path / "w")
                                           .replace("finetune_seeds: [0, 1]", f"finetune_seeds: {bad}"))  # fmt: skip
        assert main(["study", str(tmp_path / "bad.yaml")]) == 2
        assert said in capsys.readouterr().err, bad
    (tmp_path / "bad.yaml").write_text(
        TINY.format(out=tmp_path / "o", work=tmp_path / "w").replace("steps: 4,", "steps: 4, seed: 1,")
    )
    assert main(["study", str(tmp_path / "bad.yaml")]) == 2
    assert "finetune_seeds" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text(TINY.format(out=tmp_path / "o", work=tmp_path / "w").replace("[skull]", "[x]"))
    assert main(["study", str(tmp_path / "bad.yaml")]) == 2  # an unknown concept is bad input, not a crash
    assert "unknown small-world concept 'x'" in capsys.readouterr().err


def test_row_keys_carry_seeds_other_than_the_study_seed(tmp_path):
    from gate.world.study import Study
    from gate.world.study.config import seed_suffix
    from gate.world.study.rows import parse_key, seed_of

    cfg = _config(tmp_path, "finetune_seeds: [0, 1, 2]\n", tiny=TINY.replace("finetune_seeds: [0, 1]\n", ""))
    assert (seed_suffix(cfg, 0), seed_suffix(cfg, 2)) == ("", "|s2")
    ft = dict(cfg.finetune)
    plan = Study(cfg, log=lambda m: None).seed_plan(ft)
    # the first seed measures every saved checkpoint; the others the final step only
    assert [(s, steps) for s, _, steps in plan] == [(0, [2, 4]), (1, [4]), (2, [4])]
    assert plan[0][1]["save_steps"] == [2] and plan[1][1]["save_steps"] == () == plan[2][1]["save_steps"]
    assert parse_key("finetuned|esd-x|skull|main|300") == {
        "stage": "finetuned",
        "tag": "esd-x",
        "concept": "skull",
        "finetune": "main",
        "step": 300,
        "seed": None,
    }  # fmt: skip  (the key of a single-seed study's row)
    k = parse_key("finetuned|esd-x@7c9fdfa5|skull|lr0.004|300|s2")
    assert (k["tag"], k["finetune"], k["step"], k["seed"]) == ("esd-x@7c9fdfa5", "lr0.004", 300, 2)
    assert parse_key("control|zorb|100|s1")["seed"] == 1 and parse_key("control|zorb|100")["step"] == 100
    assert parse_key("unlearned|uce|striped")["concept"] == "striped"
    assert seed_of("finetuned|uce|skull|main|4|s1", {}) == 1 and seed_of("finetuned|uce|skull|main|4", {"seed": 0}) == 0
    assert seed_of("finetuned|uce|skull|main|4", {}) is None
    # fine-tunes live in <name>-s<seed>; one made before the seed was in the name is reused for its seed
    legacy = cfg.work / "finetunes" / "uce-skull-main"
    legacy.mkdir(parents=True)
    (legacy / "finetune.json").write_text('{"config": {"seed": 0}}')
    assert Study(cfg).finetuned(tmp_path, tmp_path, ft, "uce-skull-main", 0) == (legacy, {"config": {"seed": 0}})


def _rows(seed_hits: dict[int, str], unl: str = "0000000000", concept: str = "skull", method: str = "esd-x"):
    """Rows of one cell: the original sees the concept in 10 of 10 images; the fine-tunes by seed."""
    rows = {
        f"original|{concept}": {"stage": "original", "method": "none", "step": 0, "concept": concept,
                                "hits": "1" * 10, "retained_hits": "1111", "incidental_hits": "0000"},
        f"unlearned|{method}|{concept}": {"stage": "unlearned", "method": method, "factor": "", "level": None,
                                          "step": 0, "concept": concept, "hits": unl, "retained_hits": "1110",
                                          "incidental_hits": "0000"},
    }  # fmt: skip
    for seed, hits in seed_hits.items():
        key = f"finetuned|{method}|{concept}|main|4" + ("" if seed == 0 else f"|s{seed}")
        rows[key] = {"stage": "finetuned", "method": method, "factor": "", "level": None, "finetune": "main",
                     "step": 4, "seed": seed, "concept": concept, "hits": hits, "retained_hits": "1111",
                     "incidental_hits": "0001"}  # fmt: skip
    return rows


def test_r_across_seeds_median_and_spread(tmp_path):
    import csv

    from gate.world.study import markdown, table, write_csv
    from gate.world.study.summary import final_steps, seed_summary

    # R = A_ft here (A_orig 1, A_unl 0): 0.5, 0.2, 0.8 for seeds 0, 1, 2
    rows = _rows({0: "1111100000", 1: "1100000000", 2: "1111111100"})
    rows["finetuned|esd-x|skull|main|2"] = {**rows["finetuned|esd-x|skull|main|4"], "step": 2, "hits": "1" + "0" * 9}
    recs = table(rows)
    (group,) = [g for k, g in final_steps(recs).items()]
    sm = seed_summary(group)
    assert [r["seed"] for r in sm["recs"]] == [0, 1, 2]
    assert sm["median"]["seed"] == 0 and sm["median"]["R"] == 0.5
    assert (sm["min"], sm["max"]) == (0.2, 0.8) and abs(sm["sd"] - 0.3) < 1e-12  # sample sd of 0.2, 0.5, 0.8
    assert sm["median"]["R_low"] <= 0.5 <= sm["median"]["R_high"]  # the interval within one fine-tune
    two = seed_summary([r for r in group if r["seed"] != 0])
    assert two["median"]["seed"] == 1 and two["sd"] is None  # even count: the lower middle; no sd below 3 seeds
    cfg = _config(tmp_path)
    md = markdown(cfg, recs)
    assert "| skull | esd-x | 1.00 | 0.00 | s0 0.50, s1 0.20, s2 0.80 | s0 0.50, s1 0.20, s2 0.80 | **0.50** [" in md
    assert "(s0) | 0.20, 0.80 (sd 0.30) | 0.75 -> 1.00 | 0.00 -> 0.25 |" in md
    assert "Fine-tuning seeds 0, 1, 2:" in md and "## Along the fine-tuning steps (seed 0)" in md
    steps = md.split("## Along the fine-tuning steps")[1]
    assert "| skull | esd-x | 2 | 0.10 | 0.10 |" in steps and steps.count("| skull | esd-x | 4 |") == 1
    write_csv(tmp_path / "r.csv", recs)
    with (tmp_path / "r.csv").open() as f:
        assert [r["seed"] for r in csv.DictReader(f) if r["stage"] == "finetuned"] == ["0", "0", "1", "2"]
    # one seed: the single-seed layout, no seed columns
    one = markdown(cfg, table(_rows({0: "1111100000"})))
    assert "| concept | method | A_orig | A_unl | A_ft | R [95%] |" in one and "by seed" not in one


def test_weak_erasures_are_marked_and_not_headline(tmp_path):
    from gate.world.study import markdown, table
    from gate.world.study.summary import headline_concepts, weak_erasure

    assert weak_erasure(1.0, 0.6) and not weak_erasure(1.0, 0.5) and weak_erasure(0.94, 0.59)
    assert not weak_erasure(0.94, 0.41)
    rows = _rows({0: "1111100000"}) | _rows({0: "1111111100"}, unl="1111110000", concept="circle")
    rows |= _rows({0: "1111111100"}, unl="1111111000", concept="circle", method="uce")
    rows |= _rows({0: "1111111100"}, unl="0000000000", concept="zorb", method="uce")
    rows |= _rows({0: "1111111100"}, unl="1110000000", concept="zorb", method="esd-x")
    recs = table(rows)
    assert headline_concepts(recs) == (["skull", "zorb"], {"circle": (2, 2), "skull": (0, 1), "zorb": (0, 2)})
    md = markdown(_config(tmp_path), recs)
    assert "| circle | esd-x | 1.00 | 0.60 (removed < half) |" in md and "| skull | esd-x | 1.00 | 0.00 |" in md
    assert "Headline rows: skull, zorb" in md and "Not headline: circle" in md


# --- a texture as a study concept ----------------------------------------------------------------


def test_a_texture_is_measured_without_asking_retained_concepts_for_it(monkeypatch):
    from gate.world import concepts as C
    from gate.world import data, evaluate

    assert evaluate.retained_concepts("skull") == [*C.SHAPES, *C.IDENTITIES]  # objects: as before
    assert evaluate.retained_concepts("striped") == [*C.SHAPES, *C.IDENTITIES, *C.UNSAFE, "dotted", "checkered"]
    # a retained shape's prompts never ask for the erased texture; an object's prompts are unchanged
    plain = [p for p, _ in data.concept_prompts("circle", 40, 5)]
    assert any("striped" in p or "stripy" in p or "banded" in p for p in plain)
    avoiding = evaluate.prompts_avoiding("circle", 40, 5, ["striped"])
    assert len(avoiding) == 40 and not any(w in p for p in avoiding for w in C.TEXTURES["striped"])
    assert evaluate.prompts_avoiding("circle", 40, 5, ["skull"]) == plain
    assert evaluate.incidental_applies("skull", "zorb") and evaluate.incidental_applies("striped", "circle")
    assert not evaluate.incidental_applies("striped", "zorb")  # a character's texture label means nothing

    asked: list[str] = []

    class Clip:  # the detector's answer: the first label the prompt names (the images are prompts here)
        def classify(self, images, labels):
            named = {k: C.concept(k).synonyms for k in labels if k != "solid"}
            return [next((k for k, ws in named.items() if any(w in im for w in ws)), "solid") for im in images]

    monkeypatch.setattr(evaluate, "generate", lambda pipe, prompts, seeds, **kw: asked.extend(prompts) or prompts)
    retained = evaluate.retained_concepts("striped")
    m = evaluate.measure_concept(None, Clip(), "stripy", n=4, retained=retained, n_retained=3, seed=1, steps=1,
                                 guidance=1.0)  # fmt: skip
    assert m["hits"] == [True] * 4 and len(m["retained_hits"]) == 3 * 12
    assert len(m["incidental_hits"]) == 3 * 8  # the retained shapes and textures, not the characters
    assert not any(w in p for p in asked[4:] for w in C.TEXTURES["striped"])


def test_texture_data_never_shows_it_and_the_study_takes_its_synonyms(tmp_path):
    import json

    from gate.world import concepts as C
    from gate.world.export import write_folder

    write_folder(tmp_path / "d", n=40, seed=3, exclude=["stripy"], require="circle")
    for line in (tmp_path / "d" / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert "circle" in row["labels"]["concepts"] and "striped" not in row["labels"]["concepts"]
        assert not any(w in row["text"] for w in C.TEXTURES["striped"])
    cfg = _config(
        tmp_path,
        tiny=TINY.replace("[skull]", "[stripy]").replace(
            "retained: [circle, zorb]", "retained: [circle, banded, zorb]"
        ),
    )
    from gate.world.study import retained_for

    assert cfg.concepts == ["striped"] and retained_for("striped", cfg.eval) == ["circle", "zorb"]
