"""Per-tagger aggregates of a run and the leaderboard table printed at the end of the session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tagger_eval.records import PostResult, PostStatus, TaggerSummary, group_by_tagger, summarise
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
    expand_implications: bool = False, *, implied_tags: int | None = None, details: bool = True,
) -> list[str]:
    """The whole end-of-session report: context, the table, and the taggers `all` could not run.

    `implied_tags`: how many tags the dataset's implications expand, when the run expands them (0 says that nothing
    was expanded; None, not known). `details`: one `not run: NAME: REASON` line per tagger `all` left out, else one
    line naming them (`not_run_line`)."""
    lines = [f"dataset: {printable(dataset)}", f"tag scope: {scope}{_expansion(expand_implications, implied_tags)}"]
    results = list(results)
    summaries = summarise(results)
    table = format_table(summaries) if summaries else ["no post was evaluated"]
    lines += table
    if (stored := store_line(results)) is not None:
        lines.append(stored)
    if details:
        lines += [f"not run: {printable(name)}: {printable(reason)}" for name, reason in sorted(unavailable.items())]
    elif unavailable:
        lines.append(not_run_line(unavailable, width=max(NOT_RUN_WIDTH, *(len(line) for line in table))))
    return lines


def store_line(results: Iterable[PostResult]) -> str | None:
    """`from the prediction store: demo-pixel 96 of 96 posts (runtimes as measured when inferred)`: per tagger, how
    many of its scored posts were scored from stored outputs; None when none was."""
    counts = []
    for label, group in sorted(group_by_tagger(results).items()):
        scored = [result for result in group if result.status == PostStatus.SCORED]
        if stored := sum(result.from_store for result in scored):
            counts.append(f"{printable(label)} {stored} of {len(scored)} posts")
    if not counts:
        return None
    return f"from the prediction store: {', '.join(counts)} (runtimes as measured when inferred)"


def _expansion(expand_implications: bool, implied_tags: int | None) -> str:
    if not expand_implications:
        return ""
    if implied_tags == 0:
        return ("; --expand-implications: nothing expanded, the dataset has no active tag implications "
                "(`tagger-eval download --with-tag-relations` stores them)")
    return "; truth expanded with tag implications"


NOT_RUN_WIDTH = 80  # the least width of the one `not run` line; it is as wide as the leaderboard when that is wider


def not_run_line(unavailable: Mapping[str, str], width: int = NOT_RUN_WIDTH) -> str:
    """One line for the taggers `all` left out: how many, as many names as fit in `width`, where to read why.

    `not run: 18 taggers cannot run here (why: -v or tagger-eval list): camie-v2, deepdanbooru-v3, +16 more`"""
    names = [printable(name) for name in sorted(unavailable)]
    count = len(names)
    head = f"not run: {count} tagger{'s' if count != 1 else ''} cannot run here (why: -v or tagger-eval list): "
    shown = 1  # at least one name, however narrow the line
    while shown < count and len(_listed(head, names, shown + 1)) <= width:
        shown += 1
    return _listed(head, names, shown)


def _listed(head: str, names: list[str], shown: int) -> str:
    more = f", +{len(names) - shown} more" if shown < len(names) else ""
    return head + ", ".join(names[:shown]) + more
