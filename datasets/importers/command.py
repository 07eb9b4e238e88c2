"""``lingxi import rasa DIR --out DOMAIN``: the command line of the importers."""

from __future__ import annotations

import sys
from pathlib import Path

from .report import ImportError_


def cmd_import_rasa(args) -> int:
    from .rasa import import_rasa

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: {out} is not empty (use --force to write into it)", file=sys.stderr)
        return 2
    try:
        result = import_rasa(args.project, out, name=args.name)
    except ImportError_ as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("import aborted; nothing was written", file=sys.stderr)
        return 2
    counts = result.report.counts()
    print(f"imported {result.intents} intents ({result.examples} examples, {result.heldout} held-out) -> {out}")
    print(f"{counts['mapped']} mapped, {counts['approximated']} approximated, {counts['dropped']} dropped: "
          f"see {out / 'import-report.md'}")
    if args.verbose:
        for note in result.report.notes:
            if note.kind != "mapped":
                print(f"{note.kind:<12} {note}")
    print(f"next: lingxi validate {out} && lingxi train --domain {out}")
    return 0


def add_import_parser(subparsers) -> None:
    p = subparsers.add_parser("import", help="bring a bot from another tool (Rasa) as a Lingxi domain folder")
    isub = p.add_subparsers(dest="tool", required=True)
    r = isub.add_parser("rasa", help="a Rasa project (1.x nlu.md/nlu.json/stories.md, 2.x/3.x YAML): intents, "
                        "entities, synonyms, lookups, retrieval intents, responses, simple rules/stories")
    r.add_argument("project", help="the Rasa project folder (with data/ and domain.yml)")
    r.add_argument("--out", required=True, help="the Lingxi domain folder to write (with import-report.md)")
    r.add_argument("--name", help="bot name (default: the project folder's name)")
    r.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    r.add_argument("--verbose", "-v", action="store_true", help="print every approximated or dropped construct")
    r.set_defaults(func=cmd_import_rasa)
