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

``finetune_seeds`` fine-tunes every cell (and factor level) once per seed, so that R's spread
across fine-tunes stands beside its interval within one (the median seed's); the first seed is
measured at every saved checkpoint, the others at the final step, the control with the first
seed only. An erasure that removed less than half of its concept is marked in the tables, and the
concepts whose erasures mostly removed them are named as the headline rows.

The ``factors`` section varies one thing at a time around a base cell (learning rate, steps,
LoRA against full fine-tuning, LoRA targets, the fine-tuning data's similarity to the erased
concept measured as a CLIP distance, the strength of the erasure).

Every measurement is one JSON line in ``<out>/rows.jsonl``, written as soon as it is made; a
rerun skips what is there (models and fine-tunes are kept in ``work`` and reused), so an
interrupted study resumes where it stopped. ``gate study --report`` (and the end of every run)
writes ``results.csv``, ``results.md`` and the figures from the rows.

Modules: ``config`` (the study file), ``runner`` (``Study``: models, measurements, rows),
``rows`` (``rows.jsonl`` and its keys), ``summary`` (R across seeds, weak erasures), ``tables``
(``results.csv``, ``results.md``), ``plots`` (figures).
The measurement itself is the world's (``gate.world.evaluate.measure_concept``).
"""

from __future__ import annotations

from gate.world.study.config import EvalSpec, StudyConfig, describe, load_config, retained_for
from gate.world.study.rows import bits, rate, read_rows, unbits
from gate.world.study.runner import Study, measure, report_only
from gate.world.study.tables import CSV_FIELDS, markdown, table, write_csv, write_outputs

__all__ = [
    "CSV_FIELDS",
    "EvalSpec",
    "Study",
    "StudyConfig",
    "bits",
    "describe",
    "load_config",
    "markdown",
    "measure",
    "rate",
    "read_rows",
    "report_only",
    "retained_for",
    "table",
    "unbits",
    "write_csv",
    "write_outputs",
]
