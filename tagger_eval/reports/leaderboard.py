"""Per-tagger aggregates of a run and the leaderboard table printed at the end of the session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tagger_eval.records import PostResult, TaggerSummary, summarise
from tagger_eval.reports.text_table import format_table as render_table
from tagger_eval.tags import printable

COLUMNS = (
    ("tagger", "tagger", "{}"),
    ("threshold", "threshold", "{}"),
    ("posts", "posts", "{}"),
    ("mean score", "mean_score", "{:.3f}"),
    ("median", "median_score", "{:.3f}"),
    ("ms/image", "mean_runtime_s", "{:.1f}"),
    ("wrong tags", "error_rate", "{:.1%}"),
    ("practical", "practical_error_rate", "{:.1%}"),
    ("rating err", "rating_error_rate", "{:.1%}"),
    ("pass", "passed", "{}"),
    ("fail", "failed", "{}"),
    ("skip", "skipped", "{}"),
    ("errors", "errors", "{}"),
)


def _threshold_cell(summary: TaggerSummary) -> str:
    """`0.35`, `0.35/c0.85` with a character threshold of its own, `0.61 micro-opt` from the authors' named
    profile, or `server` when the server applied its own."""
    if summary.threshold is None:
        return "server"
    profile = f" {summary.threshold_profile}" if summary.threshold_profile else ""
    if summary.character_threshold is None or summary.character_threshold == summary.threshold:
        return f"{summary.threshold:.2f}{profile}"
    return f"{summary.threshold:.2f}/c{summary.character_threshold:.2f}{profile}"


def _cell(summary: TaggerSummary, attribute: str, template: str) -> str:
    if attribute == "threshold":
        return _threshold_cell(summary)
    value = getattr(summary, attribute)
    if value is None:
        return "n/a" if attribute == "rating_error_rate" else "-"  # a tagger without a rating output
    return template.format(value * 1000 if attribute == "mean_runtime_s" else value)


def table_cells(summary: TaggerSummary) -> list[str]:
    """One leaderboard row as text, in COLUMNS order (the terminal table and the HTML report share it); a label's
    control and bidi characters escaped."""
    return [printable(_cell(summary, attribute, template)) for _, attribute, template in COLUMNS]


def format_table(summaries: Iterable[TaggerSummary]) -> list[str]:
    return render_table([header for header, _, _ in COLUMNS], [table_cells(summary) for summary in summaries])


def summary_lines(
    results: Iterable[PostResult], dataset: str, scope: str, unavailable: Mapping[str, str],
    expand_implications: bool = False,
) -> list[str]:
    """The whole end-of-session report: context, the table, and the taggers `all` could not run."""
    implications = "; truth expanded with tag implications" if expand_implications else ""
    lines = [f"dataset: {printable(dataset)}", f"tag scope: {scope}{implications}"]
    summaries = summarise(results)
    lines += format_table(summaries) if summaries else ["no post was evaluated"]
    lines += [f"not run: {printable(name)}: {printable(reason)}" for name, reason in sorted(unavailable.items())]
    return lines
