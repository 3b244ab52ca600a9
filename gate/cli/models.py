"""``gate models fetch``: put what a policy and checkpoints need into the local hub cache, on a
connected machine, so that the runner then works offline (docs/offline.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
What is fetched: each open_clip detector's pretrained tag that the policy's concepts use (its hub
repo, from open_clip's pretrained table; the safetensors file only) into the detector's cache_dir
(or --cache-dir, or $HF_HUB_CACHE); each --checkpoint, a diffusers repo: model_index.json,
configs, safetensors weights, tokenizer and scheduler (no pickles, no fp16 variants, no safety
checker). NudeNet needs nothing: its model ships inside the nudenet wheel. Repos offering only
pickled weights (.bin/.ckpt/.pt) are refused. Each fetched repo's resolved commit and files (with
sha256) go into the lock file.

On the runner: copy the cache, set HF_HUB_CACHE (or HF_HOME) to it and HF_HUB_OFFLINE=1, and pass
--checkpoint ORG/NAME (the commit main had) or ORG/NAME@COMMIT.

exit codes: 0 fetched (or listed); 2 bad input (an unknown policy key, a bad hub id, a repo with
only pickles, no such repo or revision); 3 tool error (the hub cannot be reached)."""


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from gate import hub
    from gate.errors import BadInput

    if not args.policy and not args.checkpoint:
        raise BadInput("gate models fetch: give --policy P and/or --checkpoint ORG/NAME[@REVISION]")
    cache = hub.expand_path(args.cache_dir, Path.cwd(), "--cache-dir") if args.cache_dir else None
    lock = Path(args.lock)
    if not args.dry_run:
        hub.read_lock(lock)  # an unreadable lock ends the run before anything is downloaded
    wants, notes = hub.plan(args.policy, args.checkpoint or [], cache)
    for note in notes:
        print(note)
    if not wants:
        print("nothing to fetch from the hub")
        return 0
    entries = hub.fetch(wants, dry_run=args.dry_run, log=print)
    if args.dry_run:
        print(f"dry run: nothing downloaded, {lock} not written")
        return 0
    doc = hub.write_lock(lock, entries)
    print(f"lock: {lock} ({len(entries)} fetched, {len(doc['models'])} entries)")
    for e in entries:
        if e["kind"] == "checkpoint":
            ref = e["repo"] if e["requested_revision"] == "main" else f"{e['repo']}@{e['requested_revision']}"
            print(f"offline: --checkpoint {ref} (or {e['repo']}@{e['resolved_commit']})")
    return 0


def register(sub) -> None:
    """Adds ``gate models`` and ``gate models fetch``."""
    models = sub.add_parser("models", help="hub models for offline runners: fetch what a policy names")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    f = actions.add_parser(
        "fetch",
        help="download a policy's detector weights and --checkpoint repos into the hub cache, and lock them",
        description="On a connected machine: fetches what a policy names, at pinned revisions, so the runner "
        "works offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--policy", metavar="P", help="a policy (or a base such as policies/sd-base.yaml)")
    f.add_argument(
        "--checkpoint", action="append", metavar="HUB_ID[@REVISION]",
        help="a diffusers SD repo, e.g. CompVis/stable-diffusion-v1-4@main (repeatable)",
    )  # fmt: skip
    f.add_argument(
        "--cache-dir", metavar="DIR",
        help="the hub cache to fill (default: $HF_HUB_CACHE, i.e. $HF_HOME/hub); a detector's cache_dir wins",
    )  # fmt: skip
    f.add_argument("--lock", default="gate-models.lock.json", metavar="FILE", help="the lock file to write")
    f.add_argument("--dry-run", action="store_true", help="list what would be fetched; downloads nothing")
    f.set_defaults(func=cmd_models_fetch)
