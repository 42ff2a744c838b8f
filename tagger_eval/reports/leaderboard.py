"""Per-tagger aggregates of a run and the leaderboard table printed at the end of the session."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tagger_eval.run.evaluation import PostResult


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class TaggerSummary:
    """Averages over the scored posts of one tagger.

    Error rates are pooled: wrong tags over predicted tags across all posts (so a post that predicted nothing does
    not count as 0 % error); the practical rate leaves ratings out of both; the rating error is the share of
    posts with a predicted rating whose rating is wrong (None for a tagger that predicts no ratings).
    """

    tagger: str
    threshold: float | None  # None: applied by the tagger's server
    character_threshold: float | None
    posts: int
    mean_score: float | None
    median_score: float | None
    mean_runtime_s: float | None
    error_rate: float | None
    practical_error_rate: float | None
    rating_error_rate: float | None
    passed: int
    failed: int
    skipped: int
    errors: int

    @classmethod
    def from_results(cls, tagger: str, results: list[PostResult]) -> TaggerSummary:
        scored = [result for result in results if result.status == "scored"]
        counts = [result.counts or {} for result in scored]
        scores = [result.score for result in scored]
        runtimes = [result.runtime_s for result in scored if result.runtime_s is not None]
        return cls(
            tagger=tagger,
            threshold=results[0].threshold,
            character_threshold=results[0].character_threshold,
            posts=len(scored),
            mean_score=statistics.fmean(scores) if scores else None,
            median_score=statistics.median(scores) if scores else None,
            mean_runtime_s=statistics.fmean(runtimes) if runtimes else None,
            error_rate=_ratio(sum(c["incorrect"] for c in counts), sum(c["predicted_size"] for c in counts)),
            practical_error_rate=_ratio(
                sum(c["practical_incorrect"] for c in counts), sum(c["practical_predicted"] for c in counts)
            ),
            rating_error_rate=_ratio(
                sum(c["rating_predicted"] and not c["rating_correct"] for c in counts),
                sum(c["rating_predicted"] for c in counts),
            ),
            passed=sum(result.passed for result in scored),
            failed=sum(not result.passed for result in scored),
            skipped=sum(result.status == "skipped" for result in results),
            errors=sum(result.status == "error" for result in results),
        )


def summarise(results: Iterable[PostResult]) -> list[TaggerSummary]:
    """One summary per tagger, best average score first (taggers with nothing scored last)."""
    by_tagger: dict[str, list[PostResult]] = {}
    for result in results:
        by_tagger.setdefault(result.tagger, []).append(result)
    summaries = [TaggerSummary.from_results(tagger, group) for tagger, group in by_tagger.items()]
    return sorted(summaries, key=lambda s: (s.mean_score is None, -(s.mean_score or 0.0), s.tagger))


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
    """`0.35`, `0.35/c0.85` with a character threshold of its own, or `server` when the server applied its own."""
    if summary.threshold is None:
        return "server"
    if summary.character_threshold is None or summary.character_threshold == summary.threshold:
        return f"{summary.threshold:.2f}"
    return f"{summary.threshold:.2f}/c{summary.character_threshold:.2f}"


def _cell(summary: TaggerSummary, attribute: str, template: str) -> str:
    if attribute == "threshold":
        return _threshold_cell(summary)
    value = getattr(summary, attribute)
    if value is None:
        return "-"
    return template.format(value * 1000 if attribute == "mean_runtime_s" else value)


def table_cells(summary: TaggerSummary) -> list[str]:
    """One leaderboard row as text, in COLUMNS order (the terminal table and the HTML report share it)."""
    return [_cell(summary, attribute, template) for _, attribute, template in COLUMNS]


def format_table(summaries: Iterable[TaggerSummary]) -> list[str]:
    rows = [[header for header, _, _ in COLUMNS]]
    rows += [table_cells(summary) for summary in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) if column == 0 else cell.rjust(width)
                 for column, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def summary_lines(
    results: Iterable[PostResult], dataset: str, scope: str, unavailable: Mapping[str, str],
    expand_implications: bool = False,
) -> list[str]:
    """The whole end-of-session report: context, the table, and the taggers `all` could not run."""
    implications = "; truth expanded with tag implications" if expand_implications else ""
    lines = [f"dataset: {dataset}", f"tag scope: {scope}{implications}"]
    summaries = summarise(results)
    lines += format_table(summaries) if summaries else ["no post was evaluated"]
    lines += [f"not run: {name}: {reason}" for name, reason in sorted(unavailable.items())]
    return lines
