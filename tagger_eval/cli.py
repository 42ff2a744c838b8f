"""`tagger-eval`: the commands that live outside a pytest run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tagger_eval import demo, taggers


def list_taggers() -> int:
    """Every registered tagger, whether it can run here, and if not, why and how to fix it."""
    rows = []
    for entry in taggers.entries():
        rows.append((entry.usage, entry.unavailable_reason(), entry.description))
    width = max(len("tagger"), *(len(usage) for usage, _, _ in rows))
    print(f"{'tagger'.ljust(width)}  runs here  description")
    for usage, reason, description in rows:
        print(f"{usage.ljust(width)}  {'yes' if reason is None else 'no ':9}  {description}")
        if reason is not None:
            print(f"{'':{width}}  {'':9}  -> {reason}")
    return 0


def fetch(names: Sequence[str]) -> int:
    """Download the files of registered taggers (the only command that needs the network)."""
    status = 0
    for spec in names:
        name, _, argument = spec.partition(":")
        try:
            entry = taggers.get_entry(name)
        except taggers.UnknownTaggerError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
            continue
        if entry.fetch is None:
            print(f"{name}: nothing to fetch ({entry.description})")
            continue
        print(f"{name}: fetching {entry.description} ...", flush=True)
        try:
            where = entry.fetch(argument) if argument and entry.accepts_argument else entry.fetch()
        except Exception as error:  # each backend's fetch error carries its own message
            print(f"error: {name}: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: fetched {where}")
    return status


def make_demo(out: Path) -> int:
    db_path = demo.generate(out)
    print(f"wrote {db_path} and {out / 'images'} ({demo.POSTS} posts)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tagger-eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list registered taggers and whether each can run here")
    fetch_parser = commands.add_parser("fetch", help="download the model files of registered taggers")
    fetch_parser.add_argument("names", nargs="+", metavar="NAME",
                              help="tagger names as `tagger-eval list` shows them; NAME:REVISION pins a hub revision")
    make = commands.add_parser("make-demo", help="regenerate the synthetic demo dataset (byte-identical)")
    make.add_argument("--out", type=Path, default=demo.DEFAULT_DIR, help="target directory (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "list":
        return list_taggers()
    if args.command == "fetch":
        return fetch(args.names)
    return make_demo(args.out)


if __name__ == "__main__":
    sys.exit(main())
