"""The study's run: the models (original, unlearned, fine-tuned) of every cell and their
measurements, each a row of ``rows.jsonl`` made once (a rerun resumes where a run stopped)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gate.errors import BadInput
from gate.world.study.config import EvalSpec, StudyConfig, retained_for, seed_suffix
from gate.world.study.rows import append_row, bits, model_name, rate, read_rows
from gate.world.study.tables import write_outputs


def measure(pipe, clip, concept: str, spec: EvalSpec) -> dict[str, Any]:
    """Detection of the concept for its own held-out prompts; fidelity of the retained concepts;
    incidental detection of the concept in the retained concepts' images. Fixed seeds (``spec.seed``)."""
    from gate.world.evaluate import measure_concept
    from gate.world.models import DEFAULT_GUIDANCE, DEFAULT_STEPS

    m = measure_concept(
        pipe, clip, concept, n=spec.n, retained=retained_for(concept, spec), n_retained=spec.n_retained,
        seed=spec.seed, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE,
    )  # fmt: skip
    return {k: bits(m[k]) for k in ("hits", "retained_hits", "incidental_hits")}


class Study:
    def __init__(self, cfg: StudyConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        self.rows_path = cfg.out / "rows.jsonl"
        self.rows: dict[str, dict[str, Any]] = read_rows(self.rows_path)
        self._clip: Any = None
        self._world: dict[str, str] | None = None

    @property
    def clip(self):
        if self._clip is None:
            from gate.world.clip import ASSETS, WorldCLIP

            self._clip = WorldCLIP(ASSETS / "clip")
        return self._clip

    def _record(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        self.rows[key] = append_row(self.rows_path, key, row)
        return self.rows[key]

    def _measured(self, key: str, folder_or_pipe, concept: str, extra: dict[str, Any]) -> dict[str, Any]:
        if key in self.rows:
            return self.rows[key]
        from gate.pipeline import load_pipeline

        pipe = folder_or_pipe
        if isinstance(folder_or_pipe, Path):
            pipe = load_pipeline(folder_or_pipe, device=self.cfg.device)
        t0 = time.perf_counter()
        m = measure(pipe, self.clip, concept, self.cfg.eval)
        row = self._record(key, {**extra, "concept": concept, **m, "eval_s": round(time.perf_counter() - t0, 1)})
        self.log(f"  {key}: detection {rate(row['hits']):.2f}, retained {rate(row['retained_hits']):.2f}, "
                 f"incidental {rate(row['incidental_hits']):.2f}")  # fmt: skip
        return row

    # models ----------------------------------------------------------------------------------

    def compute(self):
        """Training on the study's device: fp32 there (the study's figures were measured in fp32)."""
        from gate.devices import Compute

        return Compute.resolve(self.cfg.device, "fp32")

    def original(self) -> Path:
        from gate.world.clip import ASSETS

        return ASSETS / "sd"

    def unlearned(self, method: str, concept: str, overrides: dict[str, Any] | None = None, tag: str = "") -> Path:
        from gate.unlearn.base import EraseRequest, erase
        from gate.world import concepts as C

        folder = self.cfg.work / "models" / model_name(method + tag, concept)
        if (folder / "erase.json").is_file():
            self._check_same_config(folder, method, concept, tag, overrides)
            return folder
        retained = retained_for(concept, self.cfg.eval)
        request = EraseRequest(list(C.concept(concept).synonyms), retained, seed=self.cfg.seed)
        tmp = folder.with_name(folder.name + ".tmp")
        self.log(f"erase {concept} with {method}{tag}")
        erase(self.original(), tmp, method, request, overrides=overrides, compute=self.compute())
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

    def finetuned(
        self, base: Path, data: Path, ft: dict[str, Any], name: str, seed: int
    ) -> tuple[Path, dict[str, Any]]:
        """The fine-tune ``name`` with ``seed``, in ``finetunes/<name>-s<seed>`` (made once). A
        fine-tune made before the seed was in the folder name (``finetunes/<name>``) is reused
        when it was made with that seed."""
        from gate.finetune import FinetuneConfig, finetune

        folder = self.cfg.work / "finetunes" / f"{name}-s{seed}"
        legacy = self.cfg.work / "finetunes" / name
        if not folder.is_dir() and (legacy / "finetune.json").is_file():
            made = json.loads((legacy / "finetune.json").read_text()).get("config", {}).get("seed")
            if made == seed:
                folder = legacy
        if (folder / "finetune.json").is_file():
            return folder, json.loads((folder / "finetune.json").read_text())
        cfg = FinetuneConfig(**{**ft, "seed": seed})
        self.log(f"fine-tune {folder.name} ({cfg.mode}, {cfg.steps} steps, lr {cfg.lr:g}, seed {seed})")
        rec = finetune(base, data, folder, cfg, compute=self.compute())
        return folder, rec

    def seed_plan(self, ft: dict[str, Any]) -> list[tuple[int, dict[str, Any], list[int]]]:
        """(seed, fine-tune settings, steps measured) for each fine-tuning seed: the first seed
        saves and measures every ``save_steps`` checkpoint, the others only the final step."""
        plan = []
        for i, seed in enumerate(self.cfg.finetune_seeds):
            ft_s = ft if i == 0 else {**ft, "save_steps": ()}
            plan.append((seed, ft_s, sorted({*ft_s.get("save_steps", ()), int(ft["steps"])})))
        return plan

    def candidate_pipe(self, base: Path, ft_folder: Path, mode: str, step: int | None):
        from gate.finetune import LORA_WEIGHTS
        from gate.pipeline import load_pipeline
        from gate.updates import load_lora

        where = ft_folder if step is None else ft_folder / f"checkpoint-{step}"
        if mode == "full":
            return load_pipeline(where, device=self.cfg.device)
        pipe = load_pipeline(base, device=self.cfg.device)
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
        fkey = f"{method}{erase_tag}|{concept}|{ft_name}"
        for seed, ft_s, steps in self.seed_plan(ft):
            keys = {s: f"finetuned|{fkey}|{s}{seed_suffix(self.cfg, seed)}" for s in steps}
            if all(k in self.rows for k in keys.values()):
                continue
            folder, rec = self.finetuned(base, data, ft_s, f"{method}{erase_tag}-{concept}-{ft_name}", seed)
            for s in steps:
                pipe = self.candidate_pipe(base, folder, ft.get("mode", "lora"), None if s == int(ft["steps"]) else s)
                extra = {**common, "stage": "finetuned", "finetune": ft_name, "step": s, "seed": seed,
                         "data": data.name, "ft_folder": folder.name, "ft_wall_s": rec.get("wall_time_s")}  # fmt: skip
                self._measured(keys[s], pipe, concept, extra)

    def control(self, concept: str, ft: dict[str, Any]) -> None:
        """The same fine-tune of the original model, with the first fine-tuning seed only."""
        data = self.data_dir(concept)
        seed, ft_s, steps = self.seed_plan(ft)[0]
        keys = {s: f"control|{concept}|{s}{seed_suffix(self.cfg, seed)}" for s in steps}
        if all(k in self.rows for k in keys.values()):
            return
        folder, _ = self.finetuned(self.original(), data, ft_s, f"original-{concept}-main", seed)
        for s in steps:
            pipe = self.candidate_pipe(
                self.original(), folder, ft.get("mode", "lora"), None if s == int(ft["steps"]) else s
            )
            extra = {"stage": "control", "method": "none", "finetune": "main", "step": s, "seed": seed}
            self._measured(keys[s], pipe, concept, extra)

    def world_stamp(self) -> dict[str, str]:
        """Content hashes of the world the study measures on: the original model and the detector."""
        if self._world is None:
            from gate.provenance import hash_tree
            from gate.world.clip import ASSETS

            self._world = {"sd_sha256": hash_tree(self.original()), "clip_sha256": hash_tree(ASSETS / "clip")}
        return self._world

    def check_world(self) -> None:
        """Rows measured on one build of the world must not mix with rows of another: the output
        folder records the hashes of the world its rows were measured on (``world.json``), and a
        run against another build is refused."""

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
        self.log(f"study: {len(c.methods)} methods x {len(c.concepts)} concepts x {len(c.finetune_seeds)} fine-tuning "
                 f"seeds; rows so far: {len(self.rows)}")  # fmt: skip
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


def report_only(cfg: StudyConfig) -> None:
    study = Study(cfg)
    if not study.rows:
        raise BadInput(f"{cfg.out}: no rows yet; run gate study {cfg.source}")
    write_outputs(cfg, study.rows)
