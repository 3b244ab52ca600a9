"""The small world's model card, written from the build record (never by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def write_card(folder: Path, record: dict[str, Any]) -> Path:
    cfg = record["config"]
    parts = [
        "# The small world: model card",
        "",
        "Synthetic 32x32 captioned images (`gate/world/data.py`) and two models trained on them, "
        "in real formats: a diffusers `StableDiffusionPipeline` (`sd/`) and an open_clip model "
        "(`clip/`). Rebuild with `gate world build --seed "
        f"{record['data_seed']}`; this file and `build.json` are written by that command.",
        "",
        "## Training settings",
        "",
        _table([(k, str(v)) for k, v in cfg.items() if k != "extra"], ("setting", "value")),
        "",
        f"Data seed: {record['data_seed']}. Parameters: "
        + ", ".join(f"{k} {v:,}" for k, v in record["parameters"].items())
        + ".",
        "",
        "Wall time per stage (s), 2 CPU threads: "
        + ", ".join(f"{k} {v}" for k, v in record["timings_s"].items())
        + f" (total {sum(record['timings_s'].values()) / 60:.1f} min). "
        + _stages_sentence(record.get("stages_rebuilt", ["vae", "clip", "sd"])),
        "",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in record["libraries"].items()) + ".",
    ]
    q = record.get("quality")
    if q:
        s = q["settings"]
        parts += [
            "",
            "## Measured quality",
            "",
            f"Measured by the build itself on fresh data (evaluation seed {s['seed']}): CLIP zero-shot "
            f"accuracy on {s['n_clip_images']} single-object images per concept kind (`pair`: on "
            f"{s['n_clip_images'] // 2} two-object images, both objects are the top two labels); SD "
            f"fidelity on {s['n_per_concept']} images per concept from held-out phrasings, {s['sampler']} "
            f"{s['steps']} steps, guidance {s['guidance']}. Targets: {q['targets']}; "
            f"all met: {q['meets_targets']}.",
            "",
            _table([(k, f"{v:.3f}") for k, v in q["clip_accuracy"].items()], ("CLIP kind", "accuracy")),
            "",
            _table([(k, f"{v:.3f}") for k, v in q["sd_fidelity"].items()], ("SD concept", "fidelity")),
            "",
            f"Generation throughput: {q['images_per_second']} images/s (batch 32, CPU, "
            f"{record['config']['threads']} threads).",
        ]
    parts += ["", "## Files (sha256)", "", _table(sorted(record["files"].items()), ("file", "sha256")), ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(parts))
    return path


def _stages_sentence(rebuilt: list[str]) -> str:
    if set(rebuilt) >= {"vae", "clip", "sd"}:
        return "Every stage was trained in this run."
    return (
        f"Stages trained in the last run: {', '.join(rebuilt)}; "
        "the times of the others are those recorded when they were trained."
    )
