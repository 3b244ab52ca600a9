"""``gate policy diff OLD NEW``: is a policy change loosening the gate?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """\
OLD and NEW are policy files or REF:path (a git ref, a colon, a path from the repository's root,
e.g. origin/main:policies/sd14-nudity.yaml); a policy read from a ref has its include: files read
from the same commit. Every change is one line: LOOSENS (the gate can pass a model it failed
before: a max_* threshold raised, a min_* lowered, a rule, concept or prompt removed, fewer
samples, inconclusive fail -> pass, any detector or sampler change but batch_size, a new seed),
TIGHTENS (the opposite moves) or neutral (names, batch_size, order, comments).

exit codes: 0 nothing loosens; 4 something loosens (EXIT_LOOSENS); 2 bad input (an unreadable
policy, a bad ref)."""


def _markdown(old: str, new: str, changes: list, summary: str) -> str:
    lines = [f"### Policy diff: `{old}` → `{new}`", ""]
    for ch in changes:
        label = {"loosens": "**LOOSENS**", "tightens": "TIGHTENS", "neutral": "neutral"}[ch.kind]
        lines.append(f"- {label} {ch.text.replace('`', '')}")
    lines += [""] * bool(changes) + [f"**{summary}**" if any(ch.kind == "loosens" for ch in changes) else summary]
    return "\n".join(lines)


def cmd_policy_diff(args: argparse.Namespace) -> int:
    from gate.policy_diff import EXIT_LOOSENS, LOOSENS, diff_policies, load_policy_ref, summary

    repo = Path(args.repo) if args.repo else None
    old, new = load_policy_ref(args.old, repo), load_policy_ref(args.new, repo)
    changes = diff_policies(old, new)
    loosens = any(ch.kind == LOOSENS for ch in changes)
    if args.json:
        doc = {"old": args.old, "new": args.new, "changes": [ch.to_dict() for ch in changes], "loosens": loosens}
        print(json.dumps(doc, indent=2))
    elif args.markdown:
        print(_markdown(args.old, args.new, changes, summary(changes)))
    else:
        for ch in changes:
            print(ch.line())
        print(summary(changes))
    return EXIT_LOOSENS if loosens else 0


def register(sub) -> None:
    """Adds ``gate policy diff``."""
    pol = sub.add_parser("policy", help="policy changes: does a pull request loosen the gate?")
    actions = pol.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = actions.add_parser(
        "diff",
        help="classify every change between two policies as loosening, tightening or neutral (exit 4 if one loosens)",
        description="Compares two policies (includes merged) and classifies every change.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("old", metavar="OLD", help="the policy before: a file or REF:path")
    d.add_argument("new", metavar="NEW", help="the policy after: a file or REF:path")
    d.add_argument("--repo", metavar="DIR", help="the git repository REF:path is read from (default: the current one)")
    fmt = d.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON object (changes, loosens) instead of lines")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown list (for $GITHUB_STEP_SUMMARY)")
    d.set_defaults(func=cmd_policy_diff)
