"""A results document as one self-contained HTML page, next to its charts.

`write_report(document, out_dir)` writes the charts of `charts.CHARTS` the document needs into `out_dir` and
`index.html`: the run's context, the leaderboard, the charts, the `--tagger-metrics=full` numbers, each tagger's
identity and error explorer (`explorer_html`: its worst and best posts with thumbnails, its most missed and wrong
tags), the posts where two taggers disagree most, and the run's settings with the taggers that were not run. Charts
and thumbnails are embedded as data: URIs, so the folder (even the page alone) can be copied anywhere. The same
document and dataset always give the same bytes. An output path that is a file, or a write that fails, is a
`ReportError` that leaves no temporary file behind.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from tagger_eval.records import ResultsDocument, TaggerResults, TaggerSummary, document_order
from tagger_eval.reports import explorer_html
from tagger_eval.reports.charts import CHARTS, render_charts
from tagger_eval.reports.explorer import DatasetView, explore, locate_dataset, post_url_base
from tagger_eval.reports.leaderboard import COLUMNS, table_cells
from tagger_eval.reports.results import load, write_atomically

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; } h3 { font-size: 1.05em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.facts dt { font-weight: bold; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table.summary { border-collapse: collapse; font-size: 0.9em; }
table.summary th, table.summary td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
table.summary th { text-align: right; background: #f4f4f4; } table.summary th:first-child { text-align: left; }
table.summary td { text-align: right; font-variant-numeric: tabular-nums; }
table.summary td:first-child { text-align: left; overflow-wrap: anywhere; max-width: 28em; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; }
table.summary caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
""" + explorer_html.CSS
HEAD = (
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>tagger-eval report</title>",
    f"<style>{CSS}</style>",
    "</head>",
    "<body>",
    "<h1>tagger-eval report</h1>",
)
SERVER = "applied by the server"
CONTENTS = (("summary", "Summary"), ("charts", "Charts"), ("metrics", "Metrics"), ("taggers", "Taggers and their "
            "errors"), ("side-by-side", "Side by side"), ("run", "Run settings"))
# (header, path into one category's metrics): the P=R point (micro, and macro F1), AP, and the run's threshold.
METRIC_COLUMNS = (
    ("P=R thr", ("micro", "pr_threshold")), ("P=R", ("micro", "precision")), ("F1", ("micro", "f1")),
    ("F2", ("micro", "f2")), ("MCC", ("micro", "mcc")), ("macro thr", ("macro", "pr_threshold")),
    ("macro F1", ("macro", "f1")), ("AP macro", ("average_precision", "macro")),
    ("AP micro", ("average_precision", "micro")), ("P at run thr", ("at_threshold", "micro", "precision")),
    ("R at run thr", ("at_threshold", "micro", "recall")), ("F1 at run thr", ("at_threshold", "micro", "f1")),
    ("tags", ("at_threshold", "tags")), ("positives", ("at_threshold", "positives")),
)
NOT_METRIC_CATEGORIES = ("best_score_threshold", "soft_score")


def _text(value: Any) -> str:
    """Any JSON value as escaped text."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict | list):
        return html.escape(json.dumps(value, sort_keys=True, ensure_ascii=False))
    return html.escape(str(value))


def _facts(items: Iterable[tuple[str, str]]) -> list[str]:
    """A `<dl>` of already escaped (term, description) pairs."""
    return ['<dl class="facts">', *(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in items), "</dl>"]


def table_rows(document: ResultsDocument) -> list[list[str]]:
    """The leaderboard's cells, best tagger first, formatted exactly as the terminal table (unescaped)."""
    return [table_cells(TaggerSummary.from_dict({**document["taggers"][label]["summary"], "tagger": label}))
            for label in document_order(document)]


def _run_facts(document: ResultsDocument) -> list[tuple[str, str]]:
    """What was evaluated, on what, by which version: the page's first lines."""
    dataset, commit = document["dataset"], document["commit"]
    return [
        ("dataset", _text(dataset["path"])),
        ("posts", _text(dataset["posts"])),
        ("content sha256", f"<code>{_text(dataset['content_sha256'])}</code>"),
        *((f"dataset {_text(key)}", _text(value)) for key, value in dataset["metadata"].items()),
        ("tag scope", _text(document["settings"].get("tag_scope"))),
        ("created at", _text(document["created_at"])),
        ("tagger-eval", _text(document["tagger_eval_version"])),
        ("commit", "-" if not commit else
         f"<code>{_text(commit.get('id'))}</code>{' (uncommitted changes)' if commit.get('dirty') else ''}"),
    ]


def _summary_table(document: ResultsDocument, anchors: Mapping[str, str]) -> list[str]:
    """The leaderboard, each tagger linked to its section (`anchors`: label -> id, best first)."""
    if not anchors:
        return ["<p>No tagger was evaluated.</p>"]
    header = "".join(f'<th scope="col">{html.escape(header)}</th>' for header, _, _ in COLUMNS)
    lines = ['<table class="summary" id="leaderboard">', "<thead>", f"<tr>{header}</tr>", "</thead>", "<tbody>"]
    for anchor, row in zip(anchors.values(), table_rows(document), strict=True):
        first = f'<a href="#{anchor}">{html.escape(row[0])}</a>'
        lines.append(f"<tr><td>{first}</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in row[1:]) + "</tr>")
    return [*lines, "</tbody>", "</table>",
            '<p class="note">Best mean score first. Error rates are pooled over the scored posts; '
            "ms/image is the mean time of one <code>predict</code> call.</p>"]


def _tagger_section(label: str, entry: TaggerResults, anchor: str, explorer_lines: list[str]) -> list[str]:
    """One tagger's thresholds and identity, the target of its leaderboard link, then its error explorer."""
    threshold, character = entry["threshold"], entry["character_threshold"]
    settings = [("threshold", SERVER if threshold is None else _text(threshold)),
                ("character threshold", SERVER if threshold is None
                 else "the threshold" if character is None else _text(character)),
                ("score floor", _text(entry["score_floor"]))]
    identity = [(_text(key), _text(value)) for key, value in entry["identity"].items()]
    return [f'<section id="{anchor}" class="tagger" data-tagger="{html.escape(label)}">',
            f"<h3>{html.escape(label)}</h3>", *_facts(settings),
            *(_facts(identity) if identity else ['<p class="note">No identity recorded.</p>']),
            *explorer_lines, "</section>"]


def _chart_figures(document: ResultsDocument, images: Mapping[str, bytes]) -> list[str]:
    """Each chart embedded as a data: URI (the page needs no other file), its notes in full text below; a chart the
    document does not need says why instead."""
    lines = []
    for chart in CHARTS:
        if chart.filename not in images:
            lines.append(f'<p class="note">{html.escape(chart.title)}: not drawn, '
                         f"{html.escape(chart.skip(document) or 'not rendered')}.</p>")
            continue
        encoded = base64.b64encode(images[chart.filename]).decode("ascii")
        lines += ["<figure>", f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(chart.title)}">',
                  f"<figcaption>{html.escape(chart.title)} (<code>{html.escape(chart.filename)}</code>)"]
        lines += [f'<br><span class="note">{html.escape(note)}</span>' for note in chart.notes(document)]
        lines += ["</figcaption>", "</figure>"]
    return lines


def _number(value: Any, digits: int = 3) -> str:
    """A metric as the tables show it; anything that is not a number (an edited file) as `-`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _dig(value: Any, path: Sequence[str]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _table(caption: str, header: Sequence[str], rows: Iterable[Sequence[str]], css: str = "summary") -> list[str]:
    """A table of unescaped cells."""
    head = "".join(f'<th scope="col">{html.escape(cell)}</th>' for cell in header)
    body = ["<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows]
    return [f'<table class="{css}">', f"<caption>{html.escape(caption)}</caption>", f"<thead><tr>{head}</tr></thead>",
            "<tbody>", *body, "</tbody>", "</table>"]


def _metrics_tables(document: ResultsDocument) -> list[str]:
    """The `--tagger-metrics=full` numbers of every tagger that has them, per category, then each tagger's best
    threshold for the score and soft score."""
    order = [label for label in document_order(document) if isinstance(document["taggers"][label].get("metrics"), dict)]
    if not order:
        return ['<p class="note">This results file has no metrics beyond the score: run with '
                "<code>--tagger-metrics=full</code> to get precision, recall, F1 and average precision per "
                "category, the best threshold for the score and the soft score.</p>"]
    rows, extra = [], []
    for label in order:
        metrics = document["taggers"][label]["metrics"]
        for category, values in metrics.items():
            if category not in NOT_METRIC_CATEGORIES and isinstance(values, dict):
                rows.append([label, category, *(_number(_dig(values, path)) for _, path in METRIC_COLUMNS)])
        summary = document["taggers"][label]["summary"]
        extra.append([label, _number(document["taggers"][label]["threshold"]), _number(summary["mean_score"]),
                      *(_number(_dig(metrics, path)) for path in (("best_score_threshold", "threshold"),
                                                                  ("best_score_threshold", "mean_score"),
                                                                  ("soft_score", "mean"), ("soft_score", "median")))])
    return [*_table("Per category: P=R is the threshold where precision equals recall (micro: pooled over all tags; "
                    "macro: averaged per tag); AP is average precision; the last columns are at the run's threshold",
                    ["tagger", "category", *(header for header, _ in METRIC_COLUMNS)], rows),
            *_table("The best threshold for the score, and the soft score (wrong tags close to a missed true tag "
                    "cost less)", ["tagger", "run threshold", "mean score", "best threshold", "mean score there",
                                   "soft score", "soft median"], extra)]


def _not_run(document: ResultsDocument) -> list[str]:
    """The taggers the run could not evaluate: those the document lists as not run (a `not_run` object of name ->
    reason, or a list), and those without any scored post, with their statuses and reasons."""
    listed = cast(dict[str, Any], document).get("not_run")
    items: list[tuple[str, str]] = []
    if isinstance(listed, dict):
        items = [(str(name), _plain(reason)) for name, reason in listed.items()]
    elif isinstance(listed, list):
        for item in listed:
            if isinstance(item, dict):
                items.append((_plain(item.get("tagger", item.get("name", item.get("spec")))),
                              _plain(item.get("reason", item.get("error")))))
            else:
                items.append((_plain(item), ""))
    lines = ["<h3>Taggers not run</h3>"]
    if listed is None:
        lines.append('<p class="note">This results file does not record the taggers that were not run (with '
                     "<code>--tagger=all</code>, the terminal summary names them and why).</p>")
    elif not items:
        lines.append('<p class="note">None.</p>')
    else:
        lines += ["<ul>", *(f"<li><code>{html.escape(name)}</code>: {html.escape(reason)}</li>"
                            for name, reason in items), "</ul>"]
    empty = [label for label in document_order(document) if not document["taggers"][label]["summary"]["posts"]]
    if empty:
        lines += ["<h3>Taggers without a scored post</h3>", "<ul>"]
        for label in empty:
            posts = document["taggers"][label]["posts"].values()
            statuses = Counter(str(entry.get("status")) for entry in posts)
            reasons = list(dict.fromkeys(str(entry.get("reason")) for entry in posts if entry.get("reason")))[:3]
            lines.append(f"<li><code>{html.escape(label)}</code>: "
                         + html.escape(", ".join(f"{count} {status}" for status, count in sorted(statuses.items())))
                         + "".join(f"<br><span class=\"note\">{html.escape(reason)}</span>" for reason in reasons)
                         + "</li>")
        lines.append("</ul>")
    return lines


def _plain(value: Any) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _run_section(document: ResultsDocument) -> list[str]:
    settings = [(_text(key), _text(value)) for key, value in document["settings"].items()]
    machine = [(_text(key), _text(value)) for key, value in cast(dict[str, Any], document).get("machine", {}).items()]
    return ['<h2 id="run">Run settings</h2>', *_facts(settings), *(["<h3>Machine</h3>", *_facts(machine)]
                                                                 if machine else []), *_not_run(document)]


def render_html(document: ResultsDocument, images: Mapping[str, bytes], view: DatasetView | None = None,
                dataset_note: str = "the dataset was not looked for") -> str:
    """The page; `images` maps each chart's file name to its PNG bytes, `view` is the evaluated dataset when found
    (`explorer.locate_dataset`, which also gives `dataset_note`)."""
    anchors = {label: f"tagger-{index + 1}" for index, label in enumerate(document_order(document))}
    explorer = explore(document, view)
    url_base = post_url_base(document["dataset"]["metadata"])
    thumbs = explorer_html.Thumbnails(view.images if view is not None else None)
    errors = {entry.tagger: explorer_html.tagger_explorer(entry, thumbs, url_base) for entry in explorer.taggers}
    probabilities = any(mark.probability is not None for entry in explorer.taggers
                        for case in (*entry.worst, *entry.best) for mark in case.tags)
    sections = [line for label, anchor in anchors.items()
                for line in _tagger_section(label, document["taggers"][label], anchor, errors.get(label, []))]
    contents = "".join(f'<a href="#{anchor}">{html.escape(title)}</a>' for anchor, title in CONTENTS)
    lines = [*HEAD, *_facts(_run_facts(document)), f'<nav class="contents">{contents}</nav>',
             '<h2 id="summary">Summary</h2>', *_summary_table(document, anchors),
             '<h2 id="charts">Charts</h2>', *_chart_figures(document, images),
             '<h2 id="metrics">Metrics</h2>', *_metrics_tables(document),
             '<h2 id="taggers">Taggers and their errors</h2>', *explorer_html.legend(dataset_note, probabilities,
                                                                                      url_base),
             *sections, *explorer_html.pairs_section(explorer, thumbs, url_base), *_run_section(document),
             "</body>", "</html>", ""]
    return "\n".join(lines)


class ReportError(Exception):
    """The report cannot be written where asked: the output path is a file, or writing failed."""


def check_out_dir(out_dir: Path) -> None:
    """Before anything is rendered: the output must be a directory, or not exist yet."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"{out_dir} is a file, not a directory: give a directory for the charts and index.html "
                          "(it is created if missing)")


def write_report(document: ResultsDocument, out_dir: Path, dataset: Path | None = None,
                 near: Sequence[Path] = ()) -> list[Path]:
    """Write the charts and `index.html` into `out_dir` (created when missing); the paths, page last.

    The evaluated dataset (for thumbnails, hit tags and categories) is `dataset` when given, else the path the
    document records, tried as it is and under each folder of `near`; a report without it says so on the page.
    Everything is rendered before the first file is written, so a document that cannot be drawn writes nothing;
    each file is then written whole (`results.write_atomically`), and a failure leaves no temporary file."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    images = render_charts(document)
    view, note = locate_dataset(document, dataset, near)
    files = {**images, "index.html": render_html(document, images, view, note).encode("utf-8")}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(out_dir, files, prefix=".tagger-eval-report-")
    except OSError as error:
        raise ReportError(f"cannot write the report to {out_dir}: {error}") from error
    return [out_dir / name for name in files]


def report_from_file(results_path: Path, out_dir: Path, dataset: Path | None = None) -> list[Path]:
    """Load a results file (`results.load`, so a wrong file is a `ResultsError`) and write its report; a relative
    dataset path is also looked for next to the results file and in its parent (the rootdir of an autosave)."""
    results_path = Path(results_path)
    return write_report(load(results_path), out_dir, dataset, near=(results_path.parent, results_path.parent.parent))
