"""``rows.jsonl``: one JSON line per measurement, written as soon as it is made.

Hit lists are stored as strings of ``0`` and ``1`` (one character per image, in seed order).

Keys: ``original|<concept>``, ``unlearned|<method><tag>|<concept>``,
``finetuned|<method><tag>|<concept>|<fine-tune>|<step>`` and ``control|<concept>|<step>``, where
``<tag>`` is ``@<hash>`` for a ``strength`` factor level; a fine-tuned or control row of a
fine-tuning seed other than the study's ``seed`` ends in ``|s<seed>`` (rows of the study's seed,
and every row of the single-seed studies, end in the step).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def model_name(tag: str, concept: str) -> str:
    """The work folder's name for the unlearned model of a row's ``<method><tag>`` and concept:
    ``esd-x`` -> ``esd-x-skull``; a strength level's ``esd-x@<hash>`` -> ``esd-x-skull@<hash>``."""
    method, at, level = tag.partition("@")
    return f"{method}-{concept}{at}{level}"


def bits(xs: list[bool]) -> str:
    return "".join("1" if x else "0" for x in xs)


def unbits(s: str) -> list[bool]:
    return [c == "1" for c in s]


def rate(b: str) -> float:
    """The share of hits in a stored hit string (0 for an empty one)."""
    return b.count("1") / max(1, len(b))


def mean(xs: list[bool]) -> float:
    return sum(xs) / max(1, len(xs))


def parse_key(key: str) -> dict[str, Any]:
    """The parts of a row's key: ``stage``, ``tag`` (method and erasure tag), ``concept``,
    ``finetune``, ``step`` and ``seed`` (None where the key does not say: the study's seed)."""
    parts = key.split("|")
    seed = None
    if parts[0] in ("finetuned", "control") and parts[-1][:1] == "s" and parts[-1][1:].isdigit():
        seed = int(parts.pop()[1:])
    if parts[0] == "finetuned":
        stage, tag, concept, finetune, step = parts
        return {"stage": stage, "tag": tag, "concept": concept, "finetune": finetune, "step": int(step), "seed": seed}
    if parts[0] == "control":
        return {"stage": "control", "tag": "", "concept": parts[1], "finetune": "main", "step": int(parts[2]),
                "seed": seed}  # fmt: skip
    if parts[0] == "unlearned":
        return {"stage": "unlearned", "tag": parts[1], "concept": parts[2], "finetune": "", "step": 0, "seed": None}
    return {"stage": parts[0], "tag": "", "concept": parts[-1], "finetune": "", "step": 0, "seed": None}


def seed_of(key: str, row: dict[str, Any]) -> int | None:
    """The fine-tuning seed of a row: recorded in the row (rows made since seeds were studied), or
    in its key; None for the rows of a single-seed study made before (the study's ``seed``)."""
    if row.get("seed") is not None:
        return int(row["seed"])
    return parse_key(key)["seed"]


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The rows by key. A line cut by an interruption is dropped, and the file rewritten with the
    whole rows only, so that new rows start on a line of their own."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    text = path.read_text()
    damaged = bool(text) and not text.endswith("\n")
    for line in text.splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                damaged = True
                continue
            rows[row["key"]] = row
    if damaged:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
        os.replace(tmp, path)
    return rows


def append_row(path: Path, key: str, row: dict[str, Any]) -> dict[str, Any]:
    """Append one row (with its key and the time) and sync it to disk; returns the row written."""
    row = {"key": key, **row, "time": round(time.time(), 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return row
