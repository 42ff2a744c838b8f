"""`tagger-eval`: the commands that live outside a pytest run.

`compare` and `report` read saved results only: they import no tagger backend (nor onnxruntime or TensorFlow).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tagger_eval.config import AUTOSAVE_DIR, GATE_FIELDS, RUN_OPTIONS, GateConfig
from tagger_eval.option_types import tagger_threshold

if TYPE_CHECKING:
    from tagger_eval.taggers import TaggerEntry
from tagger_eval.data import demo_dataset as demo
from tagger_eval.data.danbooru import DEFAULT_BASE_URL, MAX_LIMIT
from tagger_eval.data.downloader import IMAGE_EXTENSIONS
from tagger_eval.tags import RATING_LETTERS


def _vocabulary_size(entry: TaggerEntry, runs_here: bool) -> str:
    """How many tags it can output, read from its tag file (never its weights): `open` for an open vocabulary, `-`
    when unknown until run (a directory or server argument, no reader, or not downloaded)."""
    if not runs_here or entry.needs_argument or entry.vocabulary is None:
        return "-"
    try:
        vocabulary = entry.vocabulary(None)
    except Exception:  # a damaged tag file: the run reports it in full; the listing goes on
        return "error"
    return "open" if vocabulary is None else f"{len(vocabulary):,}"


def list_taggers() -> int:
    """Every registered tagger, whether it can run here (and if not, why and how to fix it), and its tag count."""
    from tagger_eval import taggers

    try:
        registered = taggers.entries()
    except taggers.PluginError as error:  # a broken third-party tagger package: name it, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = []
    for entry in registered:
        reason = entry.unavailable_reason()
        rows.append((entry.usage, reason, _vocabulary_size(entry, reason is None), entry.description))
    width = max(len("tagger"), *(len(row[0]) for row in rows))
    print(f"{'tagger'.ljust(width)}  runs here  {'tags':>7}  description")
    for usage, reason, size, description in rows:
        print(f"{usage.ljust(width)}  {'yes' if reason is None else 'no ':9}  {size:>7}  {description}")
        if reason is not None:
            print(f"{'':{width}}  {'':9}  {'':7}  -> {reason}")
    return 0


def fetch(names: Sequence[str]) -> int:
    """Download the files of registered taggers (the only command that needs the network)."""
    from tagger_eval import taggers

    status = 0
    for spec in names:
        name, _, argument = spec.partition(":")
        try:
            entry = taggers.get_entry(name)
        except (taggers.UnknownTaggerError, taggers.PluginError) as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
            continue
        if entry.fetch is None:
            print(f"{name}: nothing to fetch ({entry.description})")
            continue
        if argument and not entry.accepts_argument:
            print(f"error: {name} takes no argument, got {spec!r}: run `tagger-eval fetch {name}`", file=sys.stderr)
            status = 2
            continue
        print(f"{name}: fetching {entry.description} ...", flush=True)
        try:
            where = entry.fetch(argument) if argument else entry.fetch()
        except KeyboardInterrupt:  # a release is swapped in whole or not at all; the hub resumes partial files
            print(f"\ninterrupted: {name} was not fetched; run the same command again", file=sys.stderr)
            return 130
        except Exception as error:  # each backend's fetch error carries its own message: one line, no traceback
            print(f"error: {name}: {' '.join(str(error).split())}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: fetched {where}")
    return status


def download(args: argparse.Namespace) -> int:
    """Build or extend a data.db from the Danbooru API (resumable: run the same command again). A bad option or a
    refused --out exits 2; a failure on the way exits 1, saying to run again only where that can help."""
    from tagger_eval.data.danbooru import Credentials, DanbooruClient, DanbooruError
    from tagger_eval.data.downloader import DatasetDownloader, DownloadError, DownloadPlan, option_list, plan_summary

    try:
        plan = DownloadPlan(
            per_rating=args.per_rating, page_skip=args.page_skip, ratings=option_list(args.ratings),
            tags=args.tags, extensions=option_list(args.extensions), limit=args.limit,
        )
        client = DanbooruClient(args.base_url, Credentials.from_environment(), rate=args.rate,
                                timeout=(10.0, args.timeout), retries=args.retries, deadline=args.deadline)
    except (ValueError, DanbooruError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    downloader = DatasetDownloader(args.out, client, plan)
    try:
        reports = downloader.run(progress=not args.no_progress)
        for line in plan_summary(reports):
            print(line)
        if args.with_tag_relations:
            counts = downloader.download_tag_relations()
            print("tag relations: " + ", ".join(f"{count} {table}" for table, count in counts.items()))
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue", file=sys.stderr)
        return 130
    except DownloadError as error:  # a refusal: the same command would be refused again
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DanbooruError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        if not isinstance(error, DanbooruError) or error.transient:
            print("what was stored is kept: run the same command again to continue", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"wrote {args.out}")
    return 0


def compare_runs(args: argparse.Namespace) -> int:
    """The per-tagger deltas of two results files; exit 1 when a tagger regressed or slowed (the pytest gate's rule),
    2 when the files cannot be compared (unreadable, another dataset, another tag scope unless allowed)."""
    from tagger_eval.reports.compare import gate_report
    from tagger_eval.reports.results import ResultsError, load

    try:
        report = gate_report(load(args.old), load(args.new), GateConfig.from_options(args, prefix=""), flags="--")
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report.lines:
        print("\n".join(report.lines))
    if report.refused is not None:
        print(f"error: {report.refused}", file=sys.stderr)
        return 2
    if report.failures:
        print("\n" + "\n".join(report.failures))
    return 1 if report.failures else 0


def merge_shards(args: argparse.Namespace) -> int:
    """The results of `--tagger-shard` runs as one run's; exit 2, writing nothing, when they are not shards of one
    evaluation, disagree about a post, or leave posts without a result (unless --allow-missing)."""
    from tagger_eval.reports.leaderboard import summary_lines
    from tagger_eval.reports.merge import merge_files
    from tagger_eval.reports.results import ResultsError, save

    try:
        merged = merge_files(args.results)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in merged.notes:
        print(f"note: {note}", file=sys.stderr)
    if merged.missing:
        print("posts without a result:\n" + "\n".join(f"  {line}" for line in merged.missing), file=sys.stderr)
        if not args.allow_missing:
            print(f"error: not merged: posts are missing (above); give every shard's results, or pass "
                  f"--allow-missing to write {args.out} without them", file=sys.stderr)
            return 2
    document = merged.document
    settings = document["settings"]
    print("\n".join(summary_lines(merged.results, document["dataset"]["path"], settings["tag_scope"],
                                 document.get("not_run", {}), bool(settings.get("expand_implications")),
                                 details=False)))
    try:
        save(document, args.out)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(args.results)} files, {len(document['taggers'])} taggers")
    return 0


def report(args: argparse.Namespace) -> int:
    """Charts and a page of a saved run; a wrong output path or results file is one line and exit 2, and the
    output path is checked before the results file is read or anything is drawn."""
    from tagger_eval.reports.html_report import ReportError, check_out_dir, report_from_file
    from tagger_eval.reports.results import ResultsError

    try:
        check_out_dir(args.out)
    except ReportError as error:
        print(f"error: --out: {error}", file=sys.stderr)
        return 2
    try:
        written = report_from_file(args.results, args.out, args.dataset)
    except (ResultsError, ReportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}: {', '.join(path.name for path in written)}")
    return 0


def rescore(args: argparse.Namespace) -> int:
    """The stored outputs scored at each --threshold, no model loaded; exit 2 when that cannot be done as asked (no
    store, a tagger it does not hold, a threshold below its floor, a dataset or option that cannot be used)."""
    from tagger_eval.config import ConfigError, PerTagger, RunConfig
    from tagger_eval.data.dataset import DatasetError
    from tagger_eval.run.prediction_store import DEFAULT_STORE, StoreError
    from tagger_eval.run.rescore import RescoreError, rescore_lines
    from tagger_eval.run.rescore import rescore as rescore_store
    from tagger_eval.taggers.base import TaggerError

    store = args.store or DEFAULT_STORE
    config = RunConfig(taggers=(), dataset=args.dataset, scope=args.tag_scope,
                       character_thresholds=PerTagger.from_values(args.character_threshold),
                       threshold_profiles=PerTagger.from_values(args.threshold_profile),
                       expand_implications=args.expand_implications)
    try:
        rescored = rescore_store(store, config, args.threshold, args.tagger)
    except (RescoreError, StoreError, ConfigError, DatasetError, TaggerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(rescore_lines(rescored, store, str(args.tag_scope))))
    return 0


def _grid_threshold(text: str) -> float:
    name, value = tagger_threshold(text)
    if name is not None:
        raise argparse.ArgumentTypeError(f"the grid applies to every tagger: give FLOAT, got {text!r}")
    return value


def _add_rescore_command(commands: argparse._SubParsersAction) -> None:
    again = commands.add_parser("rescore", help="score the prediction store's outputs at other thresholds and "
                                "settings, without loading any model")
    again.add_argument("--threshold", nargs="+", type=_grid_threshold, default=[], metavar="FLOAT",
                       help="thresholds to score every tagger at, one row each (default: each tagger's own)")
    again.add_argument("--tagger", action="append", default=[], metavar="NAME[,NAME...]",
                       help="only these taggers, by label or name (default: every tagger the store holds)")
    again.add_argument("--store", type=Path, default=None, metavar="PATH",
                       help=f"the prediction store (default: {AUTOSAVE_DIR}/predictions.sqlite)")
    options = {option.flag: option for option in RUN_OPTIONS}
    for flag in ("--dataset", "--character-threshold", "--threshold-profile", "--tag-scope", "--expand-implications"):
        options[flag].add_to(again.add_argument)
    again.set_defaults(run=rescore)


DEMO_OUT = Path("demo-dataset")  # make-demo's default target, in the current directory


def make_demo(out: Path) -> int:
    """Write a copy of the bundled demo where the user says: never into the installed package (site-packages, or the
    bundled copy itself), and into an existing directory only when it is empty or an earlier copy."""
    package = Path(__file__).resolve().parent
    target = out.resolve()
    if target == package or package in target.parents:
        print(f"error: --out: {out} is inside the tagger_eval package ({package}); make-demo writes a copy of the "
              f"bundled demo elsewhere (the bundled one is {demo.DEFAULT_DIR})", file=sys.stderr)
        return 2
    if target.exists() and not target.is_dir():
        print(f"error: --out: {out} exists and is not a directory", file=sys.stderr)
        return 2
    if target.is_dir() and any(target.iterdir()) and not demo.is_demo(target / "data.db"):
        print(f"error: --out: {out} is a directory that holds something other than a demo dataset; name a new or "
              "empty directory (or an earlier make-demo copy, which is replaced)", file=sys.stderr)
        return 2
    db_path = demo.generate(out)
    print(f"wrote {db_path} and {out / 'images'} ({demo.POSTS} posts); evaluate it with "
          f"`pytest --tagger=all --dataset={out}`")
    return 0


def _add_download_command(commands: argparse._SubParsersAction) -> None:
    from tagger_eval.data.danbooru import DEFAULT_DEADLINE

    get = commands.add_parser("download", help="download a stratified sample of Danbooru posts into a data.db",
                              description="Credentials, when needed, come from DANBOORU_LOGIN and DANBOORU_API_KEY.")
    get.add_argument("--out", type=Path, required=True, help="the data.db to write (images go beside it)")
    get.add_argument("--per-rating", type=int, required=True, help="posts to keep per rating")
    get.add_argument("--page-skip", type=int, default=150,
                     help="skip the newest N pages of 20 posts of each rating, not yet fully tagged (default: "
                          "%(default)s)")
    get.add_argument("--ratings", default=",".join(RATING_LETTERS), help="ratings to sample (default: %(default)s)")
    get.add_argument("--tags", default="", help="extra search tags that narrow every rating's search (default: none)")
    get.add_argument("--extensions", default=",".join(IMAGE_EXTENSIONS),
                     help="file types to keep; posts of other types (videos, ugoira zips) are skipped (default: "
                          "%(default)s)")
    get.add_argument("--base-url", default=DEFAULT_BASE_URL,
                     help="the Danbooru (or mirror) to use (default: %(default)s)")
    get.add_argument("--limit", type=int, default=MAX_LIMIT,
                     help=f"posts per API page, at most {MAX_LIMIT} (default: %(default)s)")
    get.add_argument("--rate", type=float, default=4.0,
                     help="at most this many requests per second (default: %(default)s)")
    get.add_argument("--timeout", type=float, default=60.0,
                     help="seconds a request may wait for the server to send anything (default: %(default)s)")
    get.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE,
                     help="seconds one attempt of a request may take, from connecting to the last byte of an image, "
                          "however slowly the server sends (default: %(default)s)")
    get.add_argument("--retries", type=int, default=5,
                     help="retries, with exponential backoff, of a request after a connection error, a timeout, 429 "
                          "or 5xx, and of a transfer that stalls or is cut short (default: %(default)s)")
    get.add_argument("--with-tag-relations", action="store_true",
                     help="also store the tag aliases, implications and tag post counts of the tags seen")
    get.add_argument("--no-progress", action="store_true", help="no progress bars")
    get.set_defaults(run=download)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagger-eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list registered taggers and whether each can run here").set_defaults(
        run=lambda args: list_taggers())
    fetch_parser = commands.add_parser("fetch", help="download the model files of registered taggers")
    fetch_parser.add_argument("names", nargs="+", metavar="NAME",
                              help="tagger names as `tagger-eval list` shows them; NAME:REVISION pins a hub revision")
    fetch_parser.set_defaults(run=lambda args: fetch(args.names))
    _add_download_command(commands)
    versus = commands.add_parser("compare", help="compare two results files; exits 1 when a tagger's score "
                                 "regressed or its runtime slowed")
    versus.add_argument("old", type=Path, help="the baseline results JSON")
    versus.add_argument("new", type=Path, help="the results JSON to check")
    for option in GATE_FIELDS.values():  # pytest's gate options without their `--tagger-` prefix
        option.add_to(versus.add_argument, option.flag.replace("--tagger-", "--", 1))
    versus.set_defaults(run=compare_runs)
    join = commands.add_parser("merge", help="merge the results of --tagger-shard runs into one run's results")
    join.add_argument("results", type=Path, nargs="+", metavar="RESULTS", help="the shards' results JSON files")
    join.add_argument("-o", "--out", type=Path, required=True, help="the merged results JSON to write")
    join.add_argument("--allow-missing", action="store_true",
                      help="write the merged results even when posts have no result (a shard not given or cut short)")
    join.set_defaults(run=merge_shards)
    _add_rescore_command(commands)
    charts = commands.add_parser("report", help="charts and an HTML page of a results file")
    charts.add_argument("results", type=Path, help="a results JSON")
    charts.add_argument("--out", type=Path, required=True, help="directory for the PNG charts and index.html")
    charts.add_argument("--dataset", type=Path, default=None,
                        help="the data.db the run evaluated, when it is no longer where the results say (thumbnails "
                             "and hit tags of the error explorer)")
    charts.set_defaults(run=report)
    make = commands.add_parser("make-demo", help="write a copy of the synthetic demo dataset (byte-identical to the "
                                                 "bundled one) into a directory")
    make.add_argument("--out", type=Path, default=DEMO_OUT,
                      help="target directory; never inside the package (default: ./%(default)s)")
    make.set_defaults(run=lambda args: make_demo(args.out))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
