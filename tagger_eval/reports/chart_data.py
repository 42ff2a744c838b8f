"""The data behind each chart of a report: small pure functions over a results document, checked without pixels.

`histogram_bins` and `histogram_counts` bin the scores (the last bin closed, so a perfect 1.0 falls in the bin that
ends at 1.0), `score_histograms` gives every tagger's counts on one shared set of bins, `error_rate_series` the
summary's pooled error rates, `runtime_series` mean score against milliseconds per image, leaving out taggers that
take almost no time (the control tagger returns the truth in microseconds and would squash every model into one
corner of the axis).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tagger_eval.records import ResultsDocument, document_order, scored_posts

BIN_WIDTH = 0.05
MAX_BINS = 120
# A tagger faster than this per image is no model (the control tagger): it is left out of the runtime chart.
MIN_RUNTIME_MS = 0.1
RateField = Literal["error_rate", "practical_error_rate", "rating_error_rate"]
# (summary field, chart legend): the leaderboard's order.
ERROR_RATES: tuple[tuple[RateField, str], ...] = (
    ("error_rate", "wrong tags"),
    ("practical_error_rate", "practical error (ratings left out)"),
    ("rating_error_rate", "rating errors"),
)
NO_SCORED_POSTS = "no scored posts"
NO_RUNTIME = "no runtime recorded"


def histogram_bins(values: Iterable[float], width: float = BIN_WIDTH, lower: float | None = None) -> list[float]:
    """Bin edges on multiples of `width` around every value (and `lower` when given); wider when the range is huge.

    The highest value lies in the last bin, which `histogram_counts` closes: a perfect 1.0 is counted in
    [0.95, 1.0], not in a bin [1.0, 1.05) of its own. At least one bin, so one value or none still has an axis.
    """
    finite = [float(value) for value in values if math.isfinite(value)]
    if lower is not None:
        finite.append(lower)
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):  # keep the bins readable for a tagger gone wild
        if (high - low) / (width * step) <= MAX_BINS:
            width = width * step
            break
    else:
        width = (high - low) / MAX_BINS
    first = math.floor(low / width + 1e-9)
    last = math.ceil(high / width - 1e-9)
    if last <= first:  # every value on one edge: the bin ending there (every post 1.0), or starting at 0
        first, last = (last - 1, last) if high > 0 else (first, first + 1)
    edges = [round(index * width, 10) for index in range(first, last + 1)]
    while edges[0] > low:
        edges.insert(0, round(edges[0] - width, 10))
    while edges[-1] < high:
        edges.append(round(edges[-1] + width, 10))
    return edges


def histogram_counts(scores: Iterable[float], bins: Sequence[float]) -> list[int]:
    """Posts per bin: `[bins[i], bins[i+1])`, the last bin closed (as `numpy.histogram`); values outside dropped."""
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two increasing edges, got {list(bins)}")
    values = np.asarray(list(scores), dtype=float)
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    index = np.minimum(np.searchsorted(edges, inside, side="right") - 1, len(edges) - 2)
    return [int(count) for count in np.bincount(index, minlength=len(edges) - 1)]


@dataclass(frozen=True)
class Histogram:
    tagger: str
    counts: list[int]
    shown: int  # posts in the bars
    below_zero: int  # scored posts left out for a score below 0 (the non-negative chart only)
    mean: float | None  # of the scores shown
    mean_all: float  # of every scored post (the summary's mean score)


@dataclass(frozen=True)
class HistogramSeries:
    bins: list[float]
    histograms: list[Histogram]  # best first
    left_out: list[str]  # taggers without scored posts


def score_histograms(document: ResultsDocument, nonnegative: bool = False) -> HistogramSeries:
    """What `scores.png` (or, with `nonnegative`, `scores-nonnegative.png`) draws: one shared set of bins."""
    shown: dict[str, list[float]] = {}
    everything: dict[str, list[float]] = {}
    left_out = []
    for label in document_order(document):
        scores = list(scored_posts(document["taggers"][label]).values())
        if not scores:
            left_out.append(label)
            continue
        everything[label] = scores
        shown[label] = [score for score in scores if score >= 0] if nonnegative else scores
    bins = histogram_bins([score for scores in shown.values() for score in scores],
                          lower=0.0 if nonnegative else None)
    histograms = [
        Histogram(
            tagger=label,
            counts=histogram_counts(scores, bins),
            shown=len(scores),
            below_zero=len(everything[label]) - len(scores),
            mean=float(np.mean(scores)) if scores else None,
            mean_all=float(np.mean(everything[label])),
        )
        for label, scores in shown.items()
    ]
    return HistogramSeries(bins=bins, histograms=histograms, left_out=left_out)


def posts_below_zero(document: ResultsDocument) -> int:
    """Scored posts below 0 over every tagger: with none, the chart of scores >= 0 would repeat the first one."""
    return sum(score < 0 for tagger in document["taggers"].values() for score in scored_posts(tagger).values())


@dataclass(frozen=True)
class ErrorRateSeries:
    taggers: list[str]  # best first
    rates: dict[str, list[float | None]]  # summary field -> one value per tagger; None: no denominator
    left_out: list[str]  # taggers without scored posts


def error_rate_series(document: ResultsDocument) -> ErrorRateSeries:
    """What `error-rates.png` draws: the summary's rates as they are (fractions), None kept as None."""
    summaries = {label: document["taggers"][label]["summary"] for label in document_order(document)}
    taggers = [label for label, summary in summaries.items() if summary["posts"]]
    rates: dict[str, list[float | None]] = {name: [summaries[label][name] for label in taggers]
                                            for name, _ in ERROR_RATES}
    left_out = [label for label in summaries if label not in taggers]
    return ErrorRateSeries(taggers=taggers, rates=rates, left_out=left_out)


@dataclass(frozen=True)
class RuntimePoint:
    tagger: str
    runtime_ms: float
    mean_score: float


@dataclass(frozen=True)
class RuntimeSeries:
    points: list[RuntimePoint]  # best first
    left_out: list[tuple[str, str]]  # (tagger, why)
    log_x: bool  # the runtimes span more than a factor of 10
    too_fast: list[RuntimePoint] = field(default_factory=list)  # under MIN_RUNTIME_MS: not drawn

    def fast_note(self, label: Callable[[str], str] = str) -> str | None:
        """The sentence naming the taggers left out for their speed, with their runtimes."""
        if not self.too_fast:
            return None
        names = ", ".join(f"{label(point.tagger)} ({point.runtime_ms:.2g} ms, mean score {point.mean_score:.3f})"
                          for point in self.too_fast)
        return f"left out (under {MIN_RUNTIME_MS:g} ms per image, which would squash the axis): {names}"


def runtime_series(document: ResultsDocument) -> RuntimeSeries:
    """What `score-vs-runtime.png` draws: mean score against the mean milliseconds per image."""
    points, left_out, too_fast = [], [], []
    for label in document_order(document):
        summary = document["taggers"][label]["summary"]
        mean_score, runtime_s = summary["mean_score"], summary["mean_runtime_s"]
        if mean_score is None:
            left_out.append((label, NO_SCORED_POSTS))
        elif runtime_s is None:
            left_out.append((label, NO_RUNTIME))
        elif runtime_s * 1000 < MIN_RUNTIME_MS:
            too_fast.append(RuntimePoint(label, runtime_s * 1000, mean_score))
        else:
            points.append(RuntimePoint(label, runtime_s * 1000, mean_score))
    runtimes = [point.runtime_ms for point in points]
    log_x = bool(runtimes) and min(runtimes) > 0 and max(runtimes) > 10 * min(runtimes)
    return RuntimeSeries(points=points, left_out=left_out, log_x=log_x, too_fast=too_fast)
