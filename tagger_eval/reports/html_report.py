"""A results document as one self-contained HTML page, next to its charts.

`write_report(document, out_dir)` writes the four charts of `charts.CHARTS` into `out_dir` and `index.html`: the
run's context, the leaderboard, each tagger's identity and the charts, embedded as data: URIs. The same document
always gives the same bytes. An output path that is a file, or a write that fails, is a `ReportError` that leaves no
temporary file behind.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tagger_eval.records import ResultsDocument, TaggerResults, TaggerSummary, document_order
from tagger_eval.reports.charts import CHARTS, render_charts
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
"""
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
    lines = ['<table class="summary">', "<thead>", f"<tr>{header}</tr>", "</thead>", "<tbody>"]
    for anchor, row in zip(anchors.values(), table_rows(document), strict=True):
        first = f'<a href="#{anchor}">{html.escape(row[0])}</a>'
        lines.append(f"<tr><td>{first}</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in row[1:]) + "</tr>")
    return [*lines, "</tbody>", "</table>",
            '<p class="note">Best mean score first. Error rates are pooled over the scored posts; '
            "ms/image is the mean time of one <code>predict</code> call.</p>"]


def _tagger_section(label: str, entry: TaggerResults, anchor: str) -> list[str]:
    """One tagger's thresholds and identity, the target of its leaderboard link."""
    threshold, character = entry["threshold"], entry["character_threshold"]
    settings = [("threshold", SERVER if threshold is None else _text(threshold)),
                ("character threshold", SERVER if threshold is None
                 else "the threshold" if character is None else _text(character)),
                ("score floor", _text(entry["score_floor"]))]
    identity = [(_text(key), _text(value)) for key, value in entry["identity"].items()]
    return [f'<section id="{anchor}">', f"<h3>{html.escape(label)}</h3>", *_facts(settings),
            *(_facts(identity) if identity else ['<p class="note">No identity recorded.</p>']), "</section>"]


def _chart_figures(document: ResultsDocument, images: Mapping[str, bytes]) -> list[str]:
    """Each chart embedded as a data: URI (the page needs no other file), its notes in full text below."""
    lines = []
    for chart in CHARTS:
        encoded = base64.b64encode(images[chart.filename]).decode("ascii")
        lines += ["<figure>", f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(chart.title)}">',
                  f"<figcaption>{html.escape(chart.title)} (<code>{html.escape(chart.filename)}</code>)"]
        lines += [f'<br><span class="note">{html.escape(note)}</span>' for note in chart.notes(document)]
        lines += ["</figcaption>", "</figure>"]
    return lines


def render_html(document: ResultsDocument, images: Mapping[str, bytes]) -> str:
    """The page; `images` maps each chart's file name to its PNG bytes."""
    anchors = {label: f"tagger-{index + 1}" for index, label in enumerate(document_order(document))}
    sections = [line for label, anchor in anchors.items()
                for line in _tagger_section(label, document["taggers"][label], anchor)]
    lines = [*HEAD, *_facts(_run_facts(document)), "<h2>Summary</h2>", *_summary_table(document, anchors),
             "<h2>Taggers</h2>", *sections, "<h2>Charts</h2>", *_chart_figures(document, images),
             "</body>", "</html>", ""]
    return "\n".join(lines)


class ReportError(Exception):
    """The report cannot be written where asked: the output path is a file, or writing failed."""


def check_out_dir(out_dir: Path) -> None:
    """Before anything is rendered: the output must be a directory, or not exist yet."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"{out_dir} is a file, not a directory: give a directory for the charts and index.html "
                          "(it is created if missing)")


def write_report(document: ResultsDocument, out_dir: Path) -> list[Path]:
    """Write the four charts and `index.html` into `out_dir` (created when missing); the paths, page last.

    Everything is rendered before the first file is written, so a document that cannot be drawn writes nothing;
    each file is then written whole (`results.write_atomically`), and a failure leaves no temporary file."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    images = render_charts(document)
    files = {**images, "index.html": render_html(document, images).encode("utf-8")}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(out_dir, files, prefix=".tagger-eval-report-")
    except OSError as error:
        raise ReportError(f"cannot write the report to {out_dir}: {error}") from error
    return [out_dir / name for name in files]


def report_from_file(results_path: Path, out_dir: Path) -> list[Path]:
    """Load a results file (`results.load`, so a wrong file is a `ResultsError`) and write its report."""
    return write_report(load(Path(results_path)), out_dir)
