"""`tagger-eval`: the commands that live outside a pytest run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tagger_eval import demo, taggers


def list_taggers() -> int:
    rows = []
    for entry in taggers.entries():
        reason = entry.unavailable_reason()
        usage = f"{entry.name}:ARG" if entry.needs_argument else entry.name
        rows.append((usage, "yes" if reason is None else f"no: {reason}", entry.description))
    widths = [max(len(row[i]) for row in [("tagger", "runs here", ""), *rows]) for i in range(2)]
    print(f"{'tagger'.ljust(widths[0])}  {'runs here'.ljust(widths[1])}  description")
    for usage, available, description in rows:
        print(f"{usage.ljust(widths[0])}  {available.ljust(widths[1])}  {description}")
    return 0


def make_demo(out: Path) -> int:
    db_path = demo.generate(out)
    print(f"wrote {db_path} and {out / 'images'} ({demo.POSTS} posts)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tagger-eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list registered taggers and whether each can run here")
    make = commands.add_parser("make-demo", help="regenerate the synthetic demo dataset (byte-identical)")
    make.add_argument("--out", type=Path, default=demo.DEFAULT_DIR, help="target directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_taggers()
    return make_demo(args.out)


if __name__ == "__main__":
    sys.exit(main())
