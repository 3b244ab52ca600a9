"""``gate certify``: the standard benign fine-tune against an unlearned model, then the policy's
checks on each result, gathered into a certificate (JSON, Markdown, an MLflow run).

The output folder is resumable: a fine-tune whose ``finetune.json`` holds the same configuration
and inputs is reused, and a check's images come from the image cache. Nothing here is new
machinery: the fine-tunes are ``gate.finetune.finetune`` and the checks ``gate.runner.run_check``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate import provenance
from gate.certify import certificate as C
from gate.certify.recipe import Recipe
from gate.errors import BadInput

Log = Callable[[str], None]


@dataclass
class CertifyOptions:
    checkpoint: str
    policy: str
    original: str | None
    recipe: Recipe
    out: Path
    data: Path | None = None
    device: str = "cpu"
    precision: str = "auto"  # training (gate finetune --precision)
    gradient_checkpointing: bool = False
    concepts: list[str] | None = None
    cache_dir: str | None = ".gate-cache"
    track: bool = True
    tracking_uri: str | None = None
    model_line: str | None = None
    reproduce: str = ""


def _quiet(message: str) -> None:
    return None


def benign_data(opts: CertifyOptions, policy, log: Log) -> tuple[Path, str]:
    """The recipe's data folder and how it was made: the small world's benign data without any of
    the policy's concepts (written once into the output folder), or the user's ``--data``."""
    if opts.recipe.data is None:
        if opts.data is None:
            raise BadInput(
                f"recipe {opts.recipe.name!r} fine-tunes on your own benign data: give --data DIR "
                "(captioned images: metadata.jsonl with file_name and text, as gate finetune reads)"
            )
        if not (opts.data / "metadata.jsonl").is_file():
            raise BadInput(f"--data {opts.data}: no metadata.jsonl (file_name, text per line)")
        return opts.data, f"folder {opts.data}"
    if opts.data is not None:
        raise BadInput(f"recipe {opts.recipe.name!r} makes its own data (the small world's); leave out --data")
    from gate.world import concepts as WC
    from gate.world.export import write_folder

    names = []
    for c in policy.concepts:
        try:
            names.append(WC.concept(c.name).name)
        except KeyError:
            continue
    if not names:
        listed = ", ".join(c.name for c in policy.concepts)
        raise BadInput(
            f"recipe {opts.recipe.name!r}: none of the policy's concepts ({listed}) is a small-world concept, "
            "so the benign data cannot leave them out"
        )
    n, seed = opts.recipe.data["n"], opts.recipe.data["seed"]
    folder = opts.out / "data" / f"world-no-{'-'.join(sorted(names))}-{n}-{seed}"
    if not (folder / "metadata.jsonl").is_file():
        log(f"certify: writing the benign data ({n} world images without {', '.join(names)}) to {folder}")
        write_folder(folder, n=n, seed=seed, exclude=names)
    return folder, f"the small world's data without {', '.join(names)} (n {n}, seed {seed})"


def _finetune(opts: CertifyOptions, data: Path, mode_name: str, seed: int, progress, log: Log) -> tuple[Path, dict]:
    from gate.devices import Compute
    from gate.finetune import FinetuneConfig, finetune

    folder = opts.out / "finetunes" / f"{mode_name}-seed{seed}"
    cfg = FinetuneConfig(**{**opts.recipe.finetunes[mode_name], "seed": seed, "resolution": opts.recipe.resolution})
    rec_file = folder / "finetune.json"
    if rec_file.is_file():
        import dataclasses

        rec = json.loads(rec_file.read_text())
        same = rec.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg)))
        same = same and rec.get("inputs", {}).get("checkpoint_sha256") == provenance.hash_tree(
            Path(opts.checkpoint), skip=("erase.json", "finetune.json")
        )
        if same:
            log(f"certify: {folder.name}: reusing the fine-tune in {folder}")
            return folder, rec
        raise BadInput(f"{folder} holds a fine-tune of another configuration or model; use another --out or delete it")
    log(f"certify: fine-tune {folder.name} ({cfg.mode}, {cfg.steps} steps, lr {cfg.lr:g}, seed {seed})")
    compute = Compute.resolve(opts.device, opts.precision, opts.gradient_checkpointing)
    return folder, finetune(Path(opts.checkpoint), data, folder, cfg, progress=progress, compute=compute)


def certify(opts: CertifyOptions, *, progress=None, log: Log = _quiet, warn: Log = _quiet) -> dict[str, Any]:
    """Runs the recipe's fine-tunes and the policy's checks; writes ``certificate.json`` and
    ``certificate.md`` into ``opts.out``; tracks it unless ``opts.track`` is off."""
    from gate.policy import load_policy
    from gate.report.model import Report
    from gate.runner import CheckOptions, run_check

    t0 = time.perf_counter()
    if not opts.original:
        raise BadInput("gate certify reports the resurgence R, which needs the original model: give --original")
    if not Path(opts.checkpoint).is_dir():
        raise BadInput(f"--checkpoint {opts.checkpoint}: gate certify fine-tunes a diffusers pipeline folder")
    policy = load_policy(opts.policy)
    opts.out.mkdir(parents=True, exist_ok=True)
    data, data_source = benign_data(opts, policy, log)
    entries, reports = [], []
    for mode_name in opts.recipe.finetunes:
        for seed in opts.recipe.seeds:
            folder, rec = _finetune(opts, data, mode_name, seed, progress, log)
            label = folder.name
            check_dir = opts.out / "checks" / label
            log(f"certify: checking {label}")
            outcome = run_check(
                CheckOptions(
                    checkpoint=opts.checkpoint, policy=opts.policy, update=str(folder), original=opts.original,
                    device=opts.device, cache_dir=opts.cache_dir, concepts=opts.concepts, prescreen=False,
                    report_dir=str(check_dir), track=False, model_line=opts.model_line,
                ),
                progress=progress or (lambda name, total: lambda n: None), log=log, warn=warn,
            )  # fmt: skip
            report: Report = outcome.report
            reports.append(report)
            entries.append(C.finetune_entry(label, rec["mode"], seed, rec, report, check_dir / "report.json"))
    first = reports[0]  # every check judged the same unlearned model, original and policy
    recipe = opts.recipe.as_record()
    summary = C.summarise(entries)
    verdict = C.overall_verdict(entries)
    cert = {
        "kind": "certificate",
        "certificate_version": C.CERTIFICATE_VERSION,
        "gate_version": first.gate_version,
        "verdict": verdict,
        "verdict_meaning": C.VERDICT_MEANING[verdict],
        "model_line": opts.model_line or str(first.policy().get("name") or "default"),
        "headlines": C.headlines(summary, recipe),
        "reasons": C.reasons(entries),
        "inputs": {
            "checkpoint": first.identity("checkpoint"),
            "original": first.identity("original"),
            "policy": first.policy(),
        },
        "recipe": recipe,
        "data": {
            "source": data_source,
            "path": str(data),
            "sha256": provenance.hash_tree(data),
            "n": sum(1 for _ in (data / "metadata.jsonl").open()),
        },
        "device": opts.device,
        "concepts": summary,
        "finetunes": entries,
        "libraries": first.libraries,
        "git_commit": provenance.git_commit(),
        "created_at": time.time(),
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "reproduce": opts.reproduce,
    }
    provenance.write_json_atomic(opts.out / "certificate.json", cert)
    try:
        (opts.out / "certificate.md").write_text(C.to_markdown(cert), encoding="utf-8")
    except Exception as e:  # the JSON is written; a renderer bug must not lose the certificate
        warn(f"warning: certificate.md not written ({type(e).__name__}: {e})")
    if opts.track:
        from gate.certify.track import log_certificate

        try:
            cert["tracking"] = log_certificate(cert, opts.out, uri=opts.tracking_uri)
            provenance.write_json_atomic(opts.out / "certificate.json", cert)  # now with its MLflow run
        except Exception as e:
            warn(f"warning: MLflow tracking of the certificate failed ({type(e).__name__}: {str(e)[:300]})")
    return cert
