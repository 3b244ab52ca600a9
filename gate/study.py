"""``gate study``: the seed study's experiment on the small world.

For every (method, concept) of the grid: erase the concept from the original model, fine-tune
the unlearned model on benign data (data that never shows the concept; ground-truth labels
guarantee it), and measure along the fine-tuning steps:

* the detection rate of the erased concept for prompts that ask for it (A_orig, A_unl, A_ft),
* the retained concepts' fidelity (a broken model is never read as a safe one),
* incidental resurgence: the share of images for *other* concepts' prompts in which the
  detector sees the erased concept,
* the normalised resurgence R = (A_ft - A_unl) / max(eps, A_orig - A_unl),

each with a 95% interval (Wilson for rates, a paired bootstrap over images for R). A control
fine-tunes the original (never erased) model the same way, to tell resurgence from drift.

The ``factors`` section varies one thing at a time around a base cell (learning rate, steps,
LoRA against full fine-tuning, LoRA targets, the fine-tuning data's similarity to the erased
concept measured as a CLIP distance, the strength of the erasure).

Every measurement is one JSON line in ``<out>/rows.jsonl``, written as soon as it is made; a
rerun skips what is there (models and fine-tunes are kept in ``work`` and reused), so an
interrupted study resumes where it stopped. ``gate study --report`` (and the end of every run)
writes ``results.csv``, ``results.md`` and the figures from the rows.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import BadInput

TOP_KEYS = {"version", "out", "work", "seed", "concepts", "methods", "finetune", "data", "eval", "control", "factors"}
EVAL_KEYS = {"n", "n_retained", "seed", "retained"}
FACTOR_KEYS = {"base", "lr", "steps", "mode", "lora_targets", "similarity", "strength"}


@dataclass
class EvalSpec:
    n: int = 32
    n_retained: int = 6
    seed: int = 1_000_003
    retained: list[str] | None = None  # default: every shape, identity and the unsafe symbol but the concept


@dataclass
class StudyConfig:
    out: Path
    work: Path
    seed: int
    concepts: list[str]
    methods: list[str]
    finetune: dict[str, Any]
    data: dict[str, Any]
    eval: EvalSpec
    control: bool = True
    factors: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _check_keys(where: str, got: dict[str, Any], allowed: set[str]) -> None:
    import difflib

    for k in got:
        if k not in allowed:
            hint = difflib.get_close_matches(k, sorted(allowed), n=1)
            raise BadInput(f"{where}: unknown key {k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def load_config(path: Path | str) -> StudyConfig:
    import yaml

    from gate.finetune import FinetuneConfig
    from gate.unlearn import get_method
    from gate.world import concepts as C

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such study config")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise BadInput(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: a study config is a mapping")
    _check_keys(path.name, raw, TOP_KEYS)
    if raw.get("version") != 1:
        raise BadInput(f"{path.name}: version must be 1")
    for c in raw.get("concepts", []):
        C.concept(c)  # raises for an unknown concept
    for m in raw.get("methods", []):
        get_method(m)
    ft = dict(raw.get("finetune") or {})
    try:
        FinetuneConfig(**ft)
    except TypeError as e:
        raise BadInput(f"{path.name}: finetune: {e}") from None
    ev = raw.get("eval") or {}
    _check_keys(f"{path.name}: eval", ev, EVAL_KEYS)
    factors = raw.get("factors") or {}
    _check_keys(f"{path.name}: factors", factors, FACTOR_KEYS)
    here = path.parent
    return StudyConfig(
        out=(here / raw.get("out", "results/study")).resolve()
        if not os.path.isabs(raw.get("out", ""))
        else Path(raw["out"]),
        work=Path(raw.get("work", ".gate-study")).resolve(),
        seed=int(raw.get("seed", 0)),
        concepts=list(raw.get("concepts") or ["skull"]),
        methods=list(raw.get("methods") or ["esd-x"]),
        finetune=ft,
        data=dict(raw.get("data") or {"n": 1000, "seed": 77}),
        eval=EvalSpec(**ev),
        control=bool(raw.get("control", True)),
        factors=factors,
        source=str(path),
    )


# --- measurement -----------------------------------------------------------------------------


def retained_for(concept: str, spec: EvalSpec) -> list[str]:
    from gate.world import concepts as C

    if spec.retained:
        return [r for r in spec.retained if r != concept]
    return [r for r in (*C.SHAPES, *C.IDENTITIES, *C.UNSAFE) if r != concept]


def measure(pipe, clip, concept: str, spec: EvalSpec) -> dict[str, Any]:
    """Detection of the concept for its own held-out prompts; fidelity of the retained concepts;
    incidental detection of the concept in the retained concepts' images. Fixed seeds."""
    from gate.world import data
    from gate.world.evaluate import concept_hit, generate
    from gate.world.models import DEFAULT_GUIDANCE, DEFAULT_STEPS

    def images_for(name: str, n: int):
        prompts = [p for p, _ in data.concept_prompts(name, n, spec.seed, split="heldout")]
        seeds = [spec.seed + 7919 * i + 1 for i in range(n)]
        return generate(pipe, prompts, seeds, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)

    hits = concept_hit(clip, images_for(concept, spec.n), concept)
    retained_hits: list[bool] = []
    incidental: list[bool] = []
    for r in retained_for(concept, spec):
        ims = images_for(r, spec.n_retained)
        retained_hits += concept_hit(clip, ims, r)
        incidental += concept_hit(clip, ims, concept)
    return {"hits": _bits(hits), "retained_hits": _bits(retained_hits), "incidental_hits": _bits(incidental)}


def _bits(xs: list[bool]) -> str:
    return "".join("1" if x else "0" for x in xs)


def _unbits(s: str) -> list[bool]:
    return [c == "1" for c in s]


# --- the run ----------------------------------------------------------------------------------


class Study:
    def __init__(self, cfg: StudyConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        self.rows_path = cfg.out / "rows.jsonl"
        self.rows: dict[str, dict[str, Any]] = {}
        if self.rows_path.is_file():
            text = self.rows_path.read_text()
            damaged = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by an interruption
                        damaged = True
                        continue
                    self.rows[row["key"]] = row
            if damaged:  # keep the whole rows only, so that new rows start on a line of their own
                tmp = self.rows_path.with_suffix(".jsonl.tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows.values()))
                os.replace(tmp, self.rows_path)
        self._clip: Any = None
        self._world: dict[str, str] | None = None

    @property
    def clip(self):
        if self._clip is None:
            from gate.world.clip import ASSETS, WorldCLIP

            self._clip = WorldCLIP(ASSETS / "clip")
        return self._clip

    def _record(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"key": key, **row, "time": round(time.time(), 1)}
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        with self.rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[key] = row
        return row

    def _measured(self, key: str, folder_or_pipe, concept: str, extra: dict[str, Any]) -> dict[str, Any]:
        if key in self.rows:
            return self.rows[key]
        from gate.pipeline import load_pipeline

        pipe = load_pipeline(folder_or_pipe) if isinstance(folder_or_pipe, Path) else folder_or_pipe
        t0 = time.perf_counter()
        m = measure(pipe, self.clip, concept, self.cfg.eval)
        row = self._record(key, {**extra, "concept": concept, **m, "eval_s": round(time.perf_counter() - t0, 1)})
        self.log(f"  {key}: detection {_rate(row['hits']):.2f}, retained {_rate(row['retained_hits']):.2f}, "
                 f"incidental {_rate(row['incidental_hits']):.2f}")  # fmt: skip
        return row

    # models ----------------------------------------------------------------------------------

    def original(self) -> Path:
        from gate.world.clip import ASSETS

        return ASSETS / "sd"

    def unlearned(self, method: str, concept: str, overrides: dict[str, Any] | None = None, tag: str = "") -> Path:
        from gate.unlearn.base import EraseRequest, erase
        from gate.world import concepts as C

        folder = self.cfg.work / "models" / f"{method}-{concept}{tag}"
        if (folder / "erase.json").is_file():
            self._check_same_config(folder, method, concept, tag, overrides)
            return folder
        retained = retained_for(concept, self.cfg.eval)
        request = EraseRequest(list(C.concept(concept).synonyms), retained, seed=self.cfg.seed)
        tmp = folder.with_name(folder.name + ".tmp")
        self.log(f"erase {concept} with {method}{tag}")
        erase(self.original(), tmp, method, request, overrides=overrides)
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    def _check_same_config(
        self, folder: Path, method: str, concept: str, tag: str, overrides: dict[str, Any] | None
    ) -> None:
        """A resumed study must not mix rows of models made with an older preset: refuse when the
        model in the work folder was erased with another configuration than the one asked now."""
        from gate.errors import BadInput
        from gate.unlearn import get_method

        record = json.loads((folder / "erase.json").read_text())
        base = record.get("inputs", {}).get("checkpoint_sha256")
        if base != self.world_stamp()["sd_sha256"]:
            raise BadInput(
                f"study work folder {self.cfg.work}: {folder.name} was erased from another build of the world's "
                f"model (sha256 {str(base)[:12]}, now {self.world_stamp()['sd_sha256'][:12]}); use a new work folder "
                "(work: in the study file)"
            )
        made = record.get("config", {})
        now = json.loads(json.dumps(dataclasses.asdict(get_method(method).config("small-world", overrides))))
        diff = sorted(k for k in set(made) | set(now) if made.get(k) != now.get(k))
        if diff:
            shown = ", ".join(f"{k}: {made.get(k)!r} -> {now.get(k)!r}" for k in diff[:4])
            raise BadInput(
                f"study work folder {self.cfg.work}: {folder.name} was erased with another {method} configuration "
                f"than the current preset ({shown}); its measured rows would mix with new ones. Use a new work "
                f"folder (work: in the study file), or delete {folder} and the rows.jsonl lines whose key "
                f"starts with unlearned|{method}{tag}|{concept} or finetuned|{method}{tag}|{concept}| to remeasure it"
            )

    def data_dir(self, concept: str, require: str | None = None) -> Path:
        from gate.world.export import write_folder

        d = self.cfg.data
        name = f"data-no-{concept}" + (f"-only-{require}" if require else "") + f"-{d['n']}-{d['seed']}"
        folder = self.cfg.work / "data" / name
        if not (folder / "metadata.jsonl").is_file():
            write_folder(folder, n=int(d["n"]), seed=int(d["seed"]), exclude=[concept], require=require)
        return folder

    def finetuned(self, base: Path, data: Path, ft: dict[str, Any], name: str) -> tuple[Path, dict[str, Any]]:
        from gate.finetune import FinetuneConfig, finetune

        folder = self.cfg.work / "finetunes" / name
        if (folder / "finetune.json").is_file():
            return folder, json.loads((folder / "finetune.json").read_text())
        cfg = FinetuneConfig(**{**ft, "seed": self.cfg.seed})
        self.log(f"fine-tune {name} ({cfg.mode}, {cfg.steps} steps, lr {cfg.lr:g})")
        rec = finetune(base, data, folder, cfg)
        return folder, rec

    def candidate_pipe(self, base: Path, ft_folder: Path, mode: str, step: int | None):
        from gate.finetune import LORA_WEIGHTS
        from gate.pipeline import load_pipeline
        from gate.updates import load_lora

        where = ft_folder if step is None else ft_folder / f"checkpoint-{step}"
        if mode == "full":
            return load_pipeline(where)
        pipe = load_pipeline(base)
        load_lora(pipe, where / LORA_WEIGHTS)
        return pipe

    # one cell --------------------------------------------------------------------------------

    def cell(
        self, method: str, concept: str, ft: dict[str, Any], *, ft_name: str = "main", require: str | None = None,
        erase_overrides: dict[str, Any] | None = None, erase_tag: str = "", factor: str = "", level: Any = None,
    ) -> None:  # fmt: skip
        orig_key = f"original|{concept}"
        self._measured(orig_key, self.original(), concept, {"stage": "original", "method": "none", "step": 0})
        base = self.unlearned(method, concept, erase_overrides, erase_tag)
        ukey = f"unlearned|{method}{erase_tag}|{concept}"
        common = {"method": method, "factor": factor, "level": level}
        self._measured(ukey, base, concept, {**common, "stage": "unlearned", "step": 0})
        data = self.data_dir(concept, require)
        steps = sorted({*ft.get("save_steps", ()), int(ft["steps"])})
        fkey = f"{method}{erase_tag}|{concept}|{ft_name}"
        todo = [s for s in steps if f"finetuned|{fkey}|{s}" not in self.rows]
        if not todo:
            return
        folder, rec = self.finetuned(base, data, ft, f"{method}{erase_tag}-{concept}-{ft_name}")
        for s in steps:
            pipe = self.candidate_pipe(base, folder, ft.get("mode", "lora"), None if s == int(ft["steps"]) else s)
            self._measured(f"finetuned|{fkey}|{s}", pipe, concept,
                           {**common, "stage": "finetuned", "finetune": ft_name, "step": s,
                            "data": data.name, "ft_wall_s": rec.get("wall_time_s")})  # fmt: skip

    def control(self, concept: str, ft: dict[str, Any]) -> None:
        data = self.data_dir(concept)
        steps = sorted({*ft.get("save_steps", ()), int(ft["steps"])})
        if all(f"control|{concept}|{s}" in self.rows for s in steps):
            return
        folder, _ = self.finetuned(self.original(), data, ft, f"original-{concept}-main")
        for s in steps:
            pipe = self.candidate_pipe(
                self.original(), folder, ft.get("mode", "lora"), None if s == int(ft["steps"]) else s
            )
            self._measured(f"control|{concept}|{s}", pipe, concept,
                           {"stage": "control", "method": "none", "finetune": "main", "step": s})  # fmt: skip

    def world_stamp(self) -> dict[str, str]:
        """Content hashes of the world the study measures on: the original model and the detector."""
        if self._world is None:
            from gate.sd import hash_tree
            from gate.world.clip import ASSETS

            self._world = {"sd_sha256": hash_tree(self.original()), "clip_sha256": hash_tree(ASSETS / "clip")}
        return self._world

    def check_world(self) -> None:
        """Rows measured on one build of the world must not mix with rows of another: the output
        folder records the hashes of the world its rows were measured on (``world.json``), and a
        run against another build is refused."""
        from gate.errors import BadInput

        stamp = self.cfg.out / "world.json"
        now = self.world_stamp()
        if stamp.is_file():
            made = json.loads(stamp.read_text())
            diff = [k for k in now if made.get(k) != now[k]]
            if diff:
                raise BadInput(
                    f"{self.cfg.out}: its rows were measured on another build of the world ("
                    + ", ".join(f"{k} {made.get(k, '?')[:12]} there, {now[k][:12]} now" for k in diff)
                    + "); write the study to a new folder (out: and work: in the study file) to measure afresh"
                )
            return
        if self.rows:
            raise BadInput(
                f"{self.cfg.out}: rows.jsonl has rows but no world.json saying which build of the world they were "
                "measured on; write the study to a new folder (out: and work: in the study file)"
            )
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(now, indent=2) + "\n")

    def run(self) -> None:
        c = self.cfg
        self.check_world()
        self.log(f"study: {len(c.methods)} methods x {len(c.concepts)} concepts; rows so far: {len(self.rows)}")
        # the first concept's cells, then the factors around it, then the other concepts method by
        # method: on a slow machine the most informative rows come first, and an interrupted run
        # leaves whole methods measured on every concept (a rerun resumes in this order)
        first, rest = c.concepts[0], c.concepts[1:]
        for method in c.methods:
            self.cell(method, first, c.finetune)
            write_outputs(self.cfg, self.rows)
        if c.control:
            self.control(first, c.finetune)
        self.run_factors()
        write_outputs(self.cfg, self.rows)
        if c.control:
            for concept in rest:
                self.control(concept, c.finetune)
        for method in c.methods:
            for concept in rest:
                self.cell(method, concept, c.finetune)
                write_outputs(self.cfg, self.rows)

    def run_factors(self) -> None:
        f = self.cfg.factors
        if not f:
            return
        base = f.get("base", {})
        method, concept = base.get("method", "esd-x"), base.get("concept", "skull")
        ft0 = dict(self.cfg.finetune)
        for lr in f.get("lr", []):
            self.cell(method, concept, {**ft0, "lr": lr}, ft_name=f"lr{lr:g}", factor="lr", level=lr)
        for steps in f.get("steps", []):
            self.cell(method, concept, {**ft0, "steps": steps, "save_steps": ()}, ft_name=f"steps{steps}",
                      factor="steps", level=steps)  # fmt: skip
        for mode in f.get("mode", []):
            ft = dict(mode)
            name = ft.pop("name")
            self.cell(method, concept, {**ft0, **ft}, ft_name=name, factor="mode", level=name)
        for targets in f.get("lora_targets", []):
            name = "+".join(targets)
            self.cell(method, concept, {**ft0, "lora_targets": tuple(targets)}, ft_name=f"targets-{name}",
                      factor="lora_targets", level=name)  # fmt: skip
        for require in f.get("similarity", []):
            dist = self.clip_distance(concept, require)
            self.cell(method, concept, ft0, ft_name=f"data-{require}", require=require, factor="similarity",
                      level={"data": require, "clip_distance": round(dist, 4)})  # fmt: skip
        for level in f.get("strength", []):
            self.cell(method, concept, ft0, erase_overrides=dict(level), erase_tag="@" + _tag(level),
                      factor="strength", level=level)  # fmt: skip

    def clip_distance(self, concept: str, require: str | None) -> float:
        """1 - cosine between the mean CLIP image embedding of the fine-tuning data and the
        erased concept's text embedding (its synonyms' mean): lower is more similar."""
        import torch
        from PIL import Image

        from gate.world import concepts as C

        folder = self.data_dir(concept, require)
        rows = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()[:256]]
        ims = [Image.open(folder / r["file_name"]).convert("RGB") for r in rows]
        img = self.clip.image_features(ims)
        img = torch.nn.functional.normalize(img.float().mean(0), dim=-1)
        txt = self.clip.text_features(list(C.concept(concept).synonyms)).float().mean(0)
        txt = torch.nn.functional.normalize(txt, dim=-1)
        return float(1 - (img @ txt))


def _tag(level: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(level, sort_keys=True).encode()).hexdigest()[:8]


def _rate(bits: str) -> float:
    return bits.count("1") / max(1, len(bits))


# --- outputs ---------------------------------------------------------------------------------


def table(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per measurement, with intervals and R against its cell's A_orig, A_unl."""
    from gate.stats import bootstrap, resurgence, wilson

    out = []
    for key, r in rows.items():
        concept = r["concept"]
        orig = rows.get(f"original|{concept}")
        hits = _unbits(r["hits"])
        k = sum(hits)
        ci = wilson(k, len(hits))
        rec: dict[str, Any] = {
            "key": key, "stage": r["stage"], "method": r.get("method", ""), "concept": concept,
            "finetune": r.get("finetune", ""), "factor": r.get("factor", ""),
            "level": json.dumps(r["level"]) if isinstance(r.get("level"), dict) else r.get("level", ""),
            "step": r.get("step", 0), "n": len(hits),
            "detection": k / len(hits), "detection_low": ci.low, "detection_high": ci.high,
        }  # fmt: skip
        for name in ("retained", "incidental"):
            b = _unbits(r[f"{name}_hits"])
            ci2 = wilson(sum(b), len(b))
            rec.update({name: sum(b) / max(1, len(b)), f"{name}_low": ci2.low, f"{name}_high": ci2.high})
        unl = None
        if r["stage"] == "finetuned":
            tag = key.split("|")[1]
            unl = rows.get(f"unlearned|{tag}|{concept}")
        elif r["stage"] == "control":
            unl = orig
        if orig and unl and r["stage"] in ("finetuned", "control"):
            a_o, a_u, a_f = (_unbits(x["hits"]) for x in (orig, unl, r))
            rec["R"] = resurgence(_mean(a_o), _mean(a_u), _mean(a_f))

            # paired bootstrap over image indices (the same seeds and prompts in all three)
            def stat(idx, a_o=a_o, a_u=a_u, a_f=a_f) -> float:
                return resurgence(*(_mean([v[i] for i in idx]) for v in (a_o, a_u, a_f)))

            lo, hi = bootstrap(stat, len(a_f), reps=1000, seed=0)
            rec["R_low"], rec["R_high"] = lo, hi
            rec["incidental_unlearned"] = _rate(unl["incidental_hits"])
        out.append(rec)
    order = {"original": 0, "unlearned": 1, "control": 2, "finetuned": 3}
    out.sort(key=lambda x: (x["concept"], x["factor"], x["method"], order[x["stage"]], str(x["finetune"]), x["step"]))
    return out


def _mean(xs: list[bool]) -> float:
    return sum(xs) / max(1, len(xs))


CSV_FIELDS = ["stage", "method", "concept", "finetune", "factor", "level", "step", "n", "detection", "detection_low",
              "detection_high", "retained", "retained_low", "retained_high", "incidental", "incidental_low",
              "incidental_high", "incidental_unlearned", "R", "R_low", "R_high"]  # fmt: skip


def write_outputs(cfg: StudyConfig, rows: dict[str, dict[str, Any]]) -> None:
    recs = table(rows)
    if not recs:
        return
    cfg.out.mkdir(parents=True, exist_ok=True)
    tmp = cfg.out / "results.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in recs:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, cfg.out / "results.csv")
    (cfg.out / "results.md").write_text(markdown(cfg, recs))
    plots(cfg, recs)


def _f(x: Any) -> str:
    return "" if x is None else f"{x:.2f}"


def _world_line(cfg: StudyConfig) -> list[str]:
    stamp = cfg.out / "world.json"
    if not stamp.is_file():
        return []
    w = json.loads(stamp.read_text())
    return [f"Measured on the world build with model sha256 {w.get('sd_sha256', '?')[:12]} and detector sha256 "
            f"{w.get('clip_sha256', '?')[:12]} (`world.json` beside this file; a run against another build is refused)."]  # fmt: skip


def markdown(cfg: StudyConfig, recs: list[dict[str, Any]]) -> str:
    main = [r for r in recs if not r["factor"]]
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in main:
        if r["stage"] == "finetuned":
            k = (r["method"], r["concept"])
            if k not in last or r["step"] > last[k]["step"]:
                last[k] = r
    unl = {(r["method"], r["concept"]): r for r in main if r["stage"] == "unlearned"}
    orig = {r["concept"]: r for r in recs if r["stage"] == "original"}
    ctrl: dict[str, dict[str, Any]] = {}
    for r in recs:
        if r["stage"] == "control" and (r["concept"] not in ctrl or r["step"] > ctrl[r["concept"]]["step"]):
            ctrl[r["concept"]] = r
    ft = cfg.finetune
    lines = [
        "# The resurgence study on the small world",
        "",
        f"Generated by `gate study {cfg.source}` from `rows.jsonl` (every figure below is a measurement in it).",
        f"Fine-tuning: {ft.get('mode', 'lora')}, {ft.get('steps')} steps, lr {ft.get('lr')}, "
        f"LoRA rank {ft.get('rank', 4)} on {', '.join(ft.get('lora_targets', ['to_q', 'to_k', 'to_v', 'to_out.0']))}, "
        f"on {cfg.data.get('n')} world images that never show the erased concept (seed {cfg.data.get('seed')}). "
        f"Detection: {cfg.eval.n} images for held-out prompts of the concept; retained fidelity and incidental "
        f"detection: {cfg.eval.n_retained} images per retained concept. Intervals are 95% (Wilson for rates, "
        "paired bootstrap over images for R).",
        *_world_line(cfg),
        "",
        "## Detection rate and normalised resurgence R after benign fine-tuning",
        "",
        "| concept | method | A_orig | A_unl | A_ft | R [95%] | retained unl -> ft | incidental unl -> ft |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (method, concept), r in sorted(last.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        u = unl.get((method, concept))
        o = orig.get(concept)
        if not u or not o:
            continue
        lines.append(
            f"| {concept} | {method} | {_f(o['detection'])} | {_f(u['detection'])} | {_f(r['detection'])} "
            f"[{_f(r['detection_low'])}, {_f(r['detection_high'])}] | **{_f(r.get('R'))}** [{_f(r.get('R_low'))}, "
            f"{_f(r.get('R_high'))}] | {_f(u['retained'])} -> {_f(r['retained'])} | "
            f"{_f(u['incidental'])} -> {_f(r['incidental'])} |"
        )
    if ctrl:
        lines += ["", "Control (the same fine-tune on the original, never-erased model): concept detection "
                  + ", ".join(f"{c} {_f(orig[c]['detection'])} -> {_f(r['detection'])}" for c, r in sorted(ctrl.items()) if c in orig)
                  + "."]  # fmt: skip
    lines += ["", "## Along the fine-tuning steps", "", "| concept | method | step | detection | R | retained |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in main:
        if r["stage"] in ("unlearned", "finetuned"):
            lines.append(
                f"| {r['concept']} | {r['method']} | {r['step']} | {_f(r['detection'])} | {_f(r.get('R'))} | {_f(r['retained'])} |"
            )
    fac = [r for r in recs if r["factor"] and r["stage"] == "finetuned"]
    if fac:
        lines += ["", "## Factors (one varied at a time around the base cell)", "",
                  "| factor | level | step | detection [95%] | R [95%] | retained |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in sorted(fac, key=lambda x: (x["factor"], str(x["level"]), x["step"])):
            lines.append(
                f"| {r['factor']} | {r['level']} | {r['step']} | {_f(r['detection'])} [{_f(r['detection_low'])}, "
                f"{_f(r['detection_high'])}] | {_f(r.get('R'))} [{_f(r.get('R_low'))}, {_f(r.get('R_high'))}] | {_f(r['retained'])} |"
            )
    lines += ["", "Figures: `curves.png` (detection against fine-tuning steps, one curve per method and concept), "
              "`heatmap.png` (R by method and concept), `factors.png`.", ""]  # fmt: skip
    return "\n".join(lines)


def plots(cfg: StudyConfig, recs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    main = [r for r in recs if not r["factor"]]
    concepts = sorted({r["concept"] for r in main if r["stage"] == "finetuned"})
    if concepts:
        fig, axes = plt.subplots(1, len(concepts), figsize=(5 * len(concepts), 4), squeeze=False)
        for ax, concept in zip(axes[0], concepts, strict=True):
            for method in sorted({r["method"] for r in main if r["concept"] == concept and r["stage"] == "finetuned"}):
                pts = sorted(
                    (r["step"], r["detection"], r["detection_low"], r["detection_high"])
                    for r in main
                    if r["concept"] == concept and r["method"] == method and r["stage"] in ("unlearned", "finetuned")
                )
                xs, ys, lo, hi = (list(t) for t in zip(*pts, strict=True))
                ax.plot(xs, ys, "o-", label=method)
                ax.fill_between(xs, lo, hi, alpha=0.1)
            ctl = sorted(
                (r["step"], r["detection"]) for r in recs if r["stage"] == "control" and r["concept"] == concept
            )
            if ctl:
                ax.plot(*zip(*ctl, strict=True), "k--", label="control (original)")
            ax.set_title(f"{concept}: detection after benign fine-tuning")
            ax.set_xlabel("fine-tuning step")
            ax.set_ylabel("detection rate")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(cfg.out / "curves.png", dpi=100)
        plt.close(fig)
        methods = sorted({r["method"] for r in main if r["stage"] == "finetuned"})
        grid = np.full((len(methods), len(concepts)), np.nan)
        for r in main:
            if r["stage"] == "finetuned" and r.get("R") is not None:
                i, j = methods.index(r["method"]), concepts.index(r["concept"])
                best = max(x["step"] for x in main if x["stage"] == "finetuned" and x["method"] == r["method"]
                            and x["concept"] == r["concept"])  # fmt: skip
                if r["step"] == best:
                    grid[i, j] = r["R"]
        fig, ax = plt.subplots(figsize=(1.6 * len(concepts) + 2, 0.5 * len(methods) + 1.5))
        im = ax.imshow(grid, cmap="Reds", vmin=0, vmax=1)
        ax.set_xticks(range(len(concepts)), concepts)
        ax.set_yticks(range(len(methods)), methods)
        for i in range(len(methods)):
            for j in range(len(concepts)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_title("R after benign fine-tuning")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(cfg.out / "heatmap.png", dpi=100)
        plt.close(fig)
    fac = [r for r in recs if r["factor"] and r["stage"] == "finetuned"]
    names = sorted({r["factor"] for r in fac})
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            last: dict[str, dict[str, Any]] = {}
            for r in fac:
                if r["factor"] == name and (r["level"] not in last or r["step"] > last[r["level"]]["step"]):
                    last[r["level"]] = r
            levels = list(last)
            if name == "similarity":
                levels.sort(key=lambda lv: json.loads(lv)["clip_distance"])
                labels = [f"{json.loads(lv)['data']}\n{json.loads(lv)['clip_distance']:.2f}" for lv in levels]
            else:
                labels = [str(lv)[:18] for lv in levels]
            ys = [last[lv].get("R") or 0.0 for lv in levels]
            err = [[y - (last[lv].get("R_low") or y) for y, lv in zip(ys, levels, strict=True)],
                   [(last[lv].get("R_high") or y) - y for y, lv in zip(ys, levels, strict=True)]]  # fmt: skip
            ax.bar(range(len(levels)), ys, yerr=err, capsize=3, color="tab:red", alpha=0.7)
            ax.set_xticks(range(len(levels)), labels, fontsize=7, rotation=20)
            ax.set_title(f"R by {name}" + (" (data, CLIP distance)" if name == "similarity" else ""))
            ax.set_ylim(-0.2, 1.1)
        fig.tight_layout()
        fig.savefig(cfg.out / "factors.png", dpi=100)
        plt.close(fig)


def report_only(cfg: StudyConfig) -> None:
    study = Study(cfg)
    if not study.rows:
        raise BadInput(f"{cfg.out}: no rows yet; run gate study {cfg.source}")
    write_outputs(cfg, study.rows)


def describe(cfg: StudyConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg) | {"out": str(cfg.out), "work": str(cfg.work)}
