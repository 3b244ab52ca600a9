"""``gate study``: the resurgence study."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_study(args: argparse.Namespace) -> int:
    import torch

    from gate.devices import check_device
    from gate.world.study import Study, load_config, report_only

    cfg = load_config(args.config)
    cfg.device = check_device(args.device)
    if args.out:
        cfg.out = Path(args.out).resolve()
    if args.report:
        report_only(cfg)
    else:
        torch.set_num_threads(args.threads)
        Study(cfg).run()
    print(f"results: {cfg.out}/results.csv, results.md, curves.png, heatmap.png, factors.png")
    return 0


def register(sub) -> None:
    """Adds ``gate study``."""
    st = sub.add_parser("study", help="the resurgence study: erase, fine-tune on benign data, measure (resumable)")
    st.add_argument("config", nargs="?", default="studies/small-world.yaml")
    st.add_argument("--out", help="results folder (default: the config's out)")
    st.add_argument("--report", action="store_true", help="only rewrite CSV, Markdown and plots from the rows")
    st.add_argument("--threads", type=int, default=2)
    st.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps: where models train and generate")
    st.set_defaults(func=cmd_study)
