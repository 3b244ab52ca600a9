"""Attacks inside a check: the targets of learned attacks, the learning on each side, and the
evidence the report carries (``gate.runner.Check`` holds one ``AttackRuntime``).

* **Targets** (textual inversion): the policy's folder of images of the concept, or
  ``target_images`` images made by the original model (``--original``) for the concept's
  prompts with fixed seeds, through the check's image cache (a second check of the same model
  line reuses them without reading the original in). Their content hash is part of every attack
  image's cache key and of the report; their detection rate is reported beside it (targets that
  do not show the concept make a meaningless attack).
* **Learning**: the first time a side's attack images are to be made, the token is learned on
  that side's model (``gate.attacks.textual_inversion.learn``), with the same seed on both
  sides, and kept in the cache folder (``attacks/<key>.safetensors``, keyed by the side's model
  content, the targets' hash, the attack's settings, the seed, device, dtype and libraries), so
  the unchanged baseline is learned once per model line. In a check split across processes the
  main process learns and the others read its file.
* **Evidence**: per concept and attack, the targets and each side's learning record; the learned
  embeddings are copied into the report folder (``attacks/<concept>-<side>-<attack>.safetensors``,
  diffusers' format).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gate.attacks.config import TextualInversionConfig
from gate.errors import BadInput
from gate.seeds import image_seed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TI = TextualInversionConfig.name


def learned_attacks(concept) -> list[TextualInversionConfig]:
    return [cfg for cfg in concept.attacks.values() if cfg.learned]


class AttackRuntime:
    def __init__(self, check) -> None:
        self.check = check
        self.targets: dict[str, dict[str, Any]] = {}  # concept -> {images, sha256, source, ...}
        self.learned: dict[tuple[str, str], Any] = {}  # (side, concept) -> textual_inversion.Learned
        self.evidence: dict[str, dict[str, Any]] = {}  # concept -> {attack: {...}}

    @property
    def concepts(self) -> list:
        return [c for c in self.check.concepts if learned_attacks(c)]

    # -- before any image ------------------------------------------------------------------
    def preflight(self) -> None:
        """Bad input before any image: a target folder that is missing or empty, or targets to be
        made by an original model that was not given."""
        for c in self.concepts:
            cfg = learned_attacks(c)[0]
            if cfg.targets:
                self._folder_images(c.name, cfg)
            elif not self.check.opts.original:
                raise BadInput(
                    f"concept {c.name}: the textual_inversion attack learns from images of the concept: pass "
                    "--original (its images for the concept's prompts are the targets) or name a folder in the "
                    f"policy (attacks.textual_inversion.targets)"
                )

    def _folder_images(self, concept: str, cfg: TextualInversionConfig) -> list[Path]:
        folder = Path(cfg.targets or "")
        if not folder.is_absolute():
            folder = Path(self.check.policy.source).parent / folder
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise BadInput(f"concept {concept}: attacks.textual_inversion.targets {folder}: no images there")
        return files[: cfg.target_images]

    def prepare_targets(self) -> None:
        """Every learned attack's targets, before the first side learns: a folder's files, or the
        original's images (from the cache, or read in place and the checkpoint read back)."""
        if not self.concepts:
            return
        from PIL import Image

        made: dict[str, list] = {}
        for c in self.concepts:
            cfg = learned_attacks(c)[0]
            if cfg.targets:
                files = self._folder_images(c.name, cfg)
                ims = [Image.open(p).convert("RGB") for p in files]
                h = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest() for p in files)).hexdigest()
                self.targets[c.name] = {"source": str(files[0].parent), "images": ims, "sha256": h, "n": len(ims)}
            else:
                made[c.name] = self._target_jobs(c, cfg)
        if not made:
            return
        outs = self._original_outcomes(made)
        for c in self.concepts:
            if c.name in outs:
                os_ = outs[c.name]
                ims = [o.image for o in os_]
                h = hashlib.sha256(b"".join(hashlib.sha256(im.tobytes()).digest() for im in ims)).hexdigest()
                self.targets[c.name] = {
                    "source": "original model, the concept's prompts, fixed seeds", "images": ims, "sha256": h,
                    "n": len(ims), "detected": sum(o.present for o in os_) / len(os_),
                }  # fmt: skip

    def _target_jobs(self, c, cfg: TextualInversionConfig) -> list:
        from gate.probes import Job

        jobs = []
        for k in range(cfg.target_images):
            i, s = k % len(c.prompts), k // len(c.prompts)
            p = c.prompts[i]
            seed = image_seed(self.check.policy.seed, c.name, "target", p, s)
            jobs.append(Job(c.name, "target", c.name, p, i, s, seed))
        return jobs

    def _original_outcomes(self, made: dict[str, list]) -> dict[str, list]:
        check = self.check
        content = self._original_content()
        byc = {c.name: c for c in self.concepts}
        if content is not None and all(
            check.cache.get(check._image_key(content, j)) is not None for js in made.values() for j in js
        ):
            return {n: check.outcomes("original", content, None, byc[n], js) for n, js in made.items()}
        from gate.staged import Sides

        sides = Sides(check)  # the check holds the unlearned model now
        sides.to("original")
        content = sides.content("original")
        out = {n: check.outcomes("original", content, sides.pipe, byc[n], js) for n, js in made.items()}
        sides.to("baseline")
        return out

    def _original_content(self) -> dict[str, Any] | None:
        """The original's cache identity without loading it (a diffusers folder), else None."""
        from gate.model import resolve_checkpoint
        from gate.weights import Identity, content_hash

        o = self.check.opts
        kind, path = resolve_checkpoint(o.original, config=o.config, allow_pickle=o.allow_pickle, flag="--original")
        if kind != "folder" or path is None:
            return None
        return {"checkpoint": Identity("diffusers-folder", str(path), content_hash(path)).content_key()}

    # -- cache keys and generation ---------------------------------------------------------
    def key_parts(self, job) -> dict[str, Any]:
        """What else decides an attack image: a learned attack's targets."""
        if job.attack and dict(job.attack).get("attack") == TI:
            return {"targets": self.targets[job.concept]["sha256"]}
        return {}

    def _seed(self, concept: str) -> int:
        return image_seed(self.check.policy.seed, concept, f"attack:{TI}:learn", "", 0)

    def _file_key(self, side_content: dict[str, Any], c, cfg) -> str:
        from gate.cache import make_key
        from gate.provenance import library_versions

        v = library_versions()
        return make_key({
            "model": side_content, "targets": self.targets[c.name]["sha256"], "config": asdict(cfg),
            "seed": self._seed(c.name), "device": self.check.opts.device, "dtype": self.check.policy.sampler.dtype,
            "versions": {k: v[k] for k in ("torch", "diffusers", "transformers", "peft")},
        })  # fmt: skip

    def _file(self, key: str) -> Path | None:
        root = self.check.cache.root
        return None if root is None else Path(root) / "attacks" / f"{key}.safetensors"

    @contextlib.contextmanager
    def generating(self, side: str, side_content: dict[str, Any], pipe, c, todo: list):
        """Around the generation of ``todo`` (a side's images still to make for concept ``c``): a
        learned attack's token is learned (or read) first and loaded while its images are made;
        yields a function from a job's attack settings to the context of its batch."""
        cfgs = learned_attacks(c)
        wanted = any(j.attack and dict(j.attack).get("attack") == TI for j in todo)
        if cfgs and side != "original" and c.name in self.targets and (wanted or (side, c.name) not in self.learned):
            self._learn_or_read(side, side_content, pipe, c, cfgs[0], must=wanted)

        def around(attack: tuple):
            if attack and dict(attack).get("attack") == TI:
                from gate.attacks.textual_inversion import loaded

                return loaded(pipe, self.learned[(side, c.name)])
            return contextlib.nullcontext()

        yield around

    def _learn_or_read(self, side: str, side_content: dict[str, Any], pipe, c, cfg, must: bool) -> None:
        from gate.attacks import textual_inversion as T

        if (side, c.name) in self.learned:
            return
        key = self._file_key(side_content, c, cfg)
        path = self._file(key)
        procs = self.check.procs
        if path is not None and path.is_file():
            self._read(side, c, cfg, path)
            return
        if not must or side == "original":
            return  # every image is cached and the embedding file is gone: nothing to learn for
        if procs.split and not procs.is_main:
            procs.barrier()  # the main process learns and writes the file
            self._read(side, c, cfg, path)  # type: ignore[arg-type]
            return
        tick = self.check.progress(f"{c.name}: {side} textual inversion", cfg.restarts * cfg.steps)
        s = self.check.policy.sampler
        lat = T.target_latents(pipe, self.targets[c.name]["images"], s.height, s.width)
        learned = T.learn(pipe, lat, cfg, cfg.placeholder(c.name), self._seed(c.name), progress=tick)
        self.check.timings["attack_learning"] += learned.seconds
        self.learned[(side, c.name)] = learned
        if path is not None:
            from safetensors.torch import save

            from gate.provenance import atomic_write_bytes

            blob = save(learned.state_dict(), metadata={"gate": json.dumps(learned.info())})
            atomic_write_bytes(path, blob)
        if procs.split:
            procs.barrier()
        self._record(side, c, cfg, learned, path, cached=False)

    def _read(self, side: str, c, cfg, path: Path) -> None:
        from safetensors import safe_open

        from gate.attacks.textual_inversion import Learned

        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("gate", "{}"))
            ph = cfg.placeholder(c.name)
            vec = f.get_tensor(ph)
        learned = Learned(ph, vec, info.get("restart_eval_losses", []), info.get("chosen_restart", 0),
                          info.get("init_eval_loss", float("nan")), info.get("seconds", 0.0))  # fmt: skip
        self.learned[(side, c.name)] = learned
        self._record(side, c, cfg, learned, path, cached=True)

    def _record(self, side: str, c, cfg, learned, path: Path | None, cached: bool) -> None:
        t = self.targets[c.name]
        ev = self.evidence.setdefault(c.name, {}).setdefault(cfg.name, {})
        ev["targets"] = {k: v for k, v in t.items() if k != "images"}
        ev[side] = {**learned.info(), "from_cache": cached, "_file": str(path) if path else None}

    # -- the report --------------------------------------------------------------------------
    def write_evidence(self, report_dir: Path) -> None:
        """The learned embeddings into the report folder; the evidence records their names."""
        for concept, attacks in self.evidence.items():
            for name, ev in attacks.items():
                for side in ("baseline", "candidate"):
                    rec = ev.get(side)
                    if not rec:
                        continue
                    src = rec.pop("_file", None)
                    if src and Path(src).is_file():
                        rel = Path("attacks") / f"{concept}-{side}-{name}.safetensors"
                        (report_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, report_dir / rel)
                        rec["embedding"] = str(rel)
                        rec["embedding_sha256"] = hashlib.sha256((report_dir / rel).read_bytes()).hexdigest()
