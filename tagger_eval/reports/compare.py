"""Two runs side by side, and the regression gate CI fails on.

A tagger regresses when, over the posts both runs scored, its mean score fell by more than the tolerance, or when
more than `max_worse` of those posts got a lower score. Posts scored in only one run, and taggers of the baseline
that this run did not select, are listed, never dropped silently; runs on different ground truth are not compared.
A NaN or infinite score in either run fails the comparison: no mean or count can say it did not regress.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from tagger_eval.config import GateConfig
from tagger_eval.records import DatasetIdentity, ResultsDocument, scored_posts
from tagger_eval.reports.results import ResultsError
from tagger_eval.reports.text_table import format_table, number
from tagger_eval.tags import printable

LISTED_POSTS = 10  # posts named in a message; the rest are counted


@dataclass
class TaggerComparison:
    tagger: str
    baseline_mean: float | None = None  # over the posts both runs scored
    new_mean: float | None = None
    compared: int = 0
    worse: list[tuple[int, float, float]] = field(default_factory=list)  # (post, baseline score, new score)
    better: int = 0
    only_baseline: list[int] = field(default_factory=list)
    only_new: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why it regressed; empty when it did not
    missing: bool = False  # in the baseline, not selected in this run: reported, not a regression

    @property
    def delta(self) -> float | None:
        if self.baseline_mean is None or self.new_mean is None:
            return None
        return self.new_mean - self.baseline_mean

    @property
    def regressed(self) -> bool:
        return bool(self.problems)


def check_same_dataset(baseline: DatasetIdentity, new: DatasetIdentity) -> None:
    old_hash, new_hash = baseline["content_sha256"], new["content_sha256"]
    if old_hash != new_hash:
        raise ResultsError(
            f"the baseline was made on another dataset ({printable(baseline['path'])}, {baseline['posts']} posts, "
            f"content {printable(old_hash[:12])}) than this run ({printable(new['path'])}, {new['posts']} posts, "
            f"content {printable(new_hash[:12])}): "
            "scores on different ground truth cannot be compared"
        )


def compare(baseline: ResultsDocument, new: ResultsDocument, gate: GateConfig | None = None) -> list[TaggerComparison]:
    """One comparison per tagger of either run, in the new run's order, then taggers only the baseline had."""
    gate = gate or GateConfig()
    tolerance, max_worse = gate.tolerance, gate.max_worse
    check_same_dataset(baseline["dataset"], new["dataset"])
    old_taggers, new_taggers = baseline["taggers"], new["taggers"]
    rows = []
    for label in [*new_taggers, *(label for label in old_taggers if label not in new_taggers)]:
        row = TaggerComparison(label)
        rows.append(row)
        if label not in old_taggers:
            continue  # new in this run: nothing to regress from
        if label not in new_taggers:
            row.missing = True
            continue
        old, now = scored_posts(old_taggers[label]), scored_posts(new_taggers[label])
        shared = sorted(old.keys() & now.keys())
        row.only_baseline, row.only_new = sorted(old.keys() - now.keys()), sorted(now.keys() - old.keys())
        row.compared = len(shared)
        row.problems += _non_finite(old, "the baseline") + _non_finite(now, "this run")
        if not shared:
            row.problems.append("no post scored in both runs")
        if row.problems:
            continue
        row.baseline_mean = statistics.fmean(old[post] for post in shared)
        row.new_mean = statistics.fmean(now[post] for post in shared)
        row.worse = [(post, old[post], now[post]) for post in shared if now[post] < old[post]]
        row.better = sum(now[post] > old[post] for post in shared)
        if row.new_mean - row.baseline_mean < -tolerance:
            row.problems.append(f"mean score fell from {row.baseline_mean:.4f} to {row.new_mean:.4f} "
                                f"({row.delta:+.4f}, tolerance {tolerance})")
        if len(row.worse) > max_worse * len(shared):
            row.problems.append(f"{len(row.worse)} of {len(shared)} posts scored lower "
                                f"(more than {max_worse:.0%} allowed)")
    return rows


def _non_finite(scores: dict[int, float], run: str) -> list[str]:
    """A NaN or infinite score never passes the gate: the run that has one is broken, whatever the mean says."""
    bad = [f"post {post} ({score})" for post, score in sorted(scores.items()) if not math.isfinite(score)]
    return [f"non-finite scores in {run}, which cannot be compared: {_listed(bad)}"] if bad else []


def _listed(items: list[str]) -> str:
    """The first LISTED_POSTS items, then how many more."""
    more = f" and {len(items) - LISTED_POSTS} more" if len(items) > LISTED_POSTS else ""
    return ", ".join(items[:LISTED_POSTS]) + more


def failure_messages(rows: list[TaggerComparison]) -> list[str]:
    """One paragraph per regressed tagger: what fell, by how much, and which posts got worse."""
    messages = []
    for row in rows:
        if not row.regressed:
            continue
        lines = [f"{printable(row.tagger)} regressed: " + "; ".join(row.problems)]
        if row.worse:
            worst_first = sorted(row.worse, key=lambda w: w[2] - w[1])
            lines.append("  worse: " + _listed([f"post {post} {old:.3f} -> {new:.3f}"
                                                for post, old, new in worst_first]))
        messages.append("\n".join(lines))
    return messages


def format_comparison(rows: list[TaggerComparison]) -> list[str]:
    """The per-tagger deltas as a table, then the posts only one run scored; labels escaped (`printable`)."""
    header = ("tagger", "baseline", "new", "delta", "posts", "worse", "better", "verdict")
    cells = []
    for row in rows:
        if row.regressed:
            verdict = "REGRESSED"
        elif row.missing:
            verdict = "not run"
        else:
            verdict = "new" if row.baseline_mean is None else "ok"
        cells.append((printable(row.tagger), number(row.baseline_mean, "{:.4f}"), number(row.new_mean, "{:.4f}"),
                      number(row.delta, "{:+.4f}"), str(row.compared), str(len(row.worse)), str(row.better), verdict))
    lines = format_table(header, cells)
    for row in rows:
        for which, posts in (("only in the baseline", row.only_baseline), ("only in this run", row.only_new)):
            if posts:
                shown = ", ".join(map(str, posts[:LISTED_POSTS])) + (" ..." if len(posts) > LISTED_POSTS else "")
                lines.append(f"{printable(row.tagger)}: {len(posts)} posts scored {which}: {shown}")
    return lines
