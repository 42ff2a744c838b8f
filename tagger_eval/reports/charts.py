"""The charts of a results document as matplotlib figures and PNG bytes (their data: `chart_data`).

- `scores.png`: per-tagger histograms of the score of every scored post, on one shared x range, the mean marked,
  the count written above any bar too short to see;
- `scores-nonnegative.png`: the same for the scores >= 0 only (as the seed's author plotted them), drawn only when
  some post scored below 0 (otherwise it would repeat `scores.png`);
- `error-rates.png`: the three pooled error rates of the summary per tagger (wrong tags, practical, rating);
- `score-vs-runtime.png`: mean score against mean inference time per image, without taggers under 0.1 ms.

Matplotlib is used through `Figure` and the Agg canvas only (no pyplot, no backend switch), so charts can be drawn
from inside a pytest process. The same document always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from tagger_eval.records import ResultsDocument
from tagger_eval.reports.chart_data import (
    ERROR_RATES,
    NO_SCORED_POSTS,
    error_rate_series,
    posts_below_zero,
    runtime_series,
    score_histograms,
)

if TYPE_CHECKING:
    from matplotlib.typing import ColorType, RcKeyType

# Chart labels longer than this lose their middle to an ellipsis; the HTML always has the full text.
LABEL_WIDTH = 40
DPI = 100
# More points than this are labelled with their rank and a key: long labels next to each other collide.
DIRECT_LABELS = 6
FIGURE_WIDTH = 8.5  # inches
# A histogram bar lower than this share of its axis gets its count written above it (one post among 90 is a
# bar under a pixel high).
SMALL_BAR = 0.06
# Explicit settings, so a user's matplotlibrc changes as little as possible and nothing varies between runs.
STYLE: dict[RcKeyType, Any] = {
    "font.size": 9, "axes.titlesize": 9, "svg.hashsalt": "tagger-eval", "svg.fonttype": "path"
}
# PNG metadata: no Software key (it would carry the matplotlib version) and no time.
PNG_METADATA = {"Software": None}


# Labels


def chart_label(label: str, width: int = LABEL_WIDTH) -> str:
    """The label as a chart shows it: at most `width` characters, `$` kept literal.

    A longer label loses its middle to an ellipsis: its start says which backend, its end which model (a model
    directory, a webui `#MODEL`), so labels of one backend stay apart.
    """
    if len(label) > width:
        head = (width - 1) * 2 // 5
        label = label[:head] + "\u2026" + label[len(label) - (width - 1 - head):]
    return label.replace("$", r"\$")  # matplotlib would read text between two `$` as mathtext


# Figures


def _left_out_notes(left_out: Iterable[tuple[str, str]], label: Callable[[str], str]) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for tagger, reason in left_out:
        by_reason.setdefault(reason, []).append(label(tagger))
    return [f"left out ({reason}): {', '.join(taggers)}" for reason, taggers in by_reason.items()]


def _figure(height: float) -> Figure:
    figure = Figure(figsize=(FIGURE_WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(figure: Figure, title: str, notes: Sequence[str]) -> None:
    lines = [title, *(line for note in notes for line in textwrap.wrap(note, 110))]
    figure.suptitle("\n".join(lines), fontsize=10)


def _empty(figure: Figure, message: str) -> None:
    axes = figure.add_subplot()
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def _colours(count: int) -> list[ColorType]:
    palette = matplotlib.color_sequences["tab10" if count <= 10 else "tab20"]
    return [palette[index % len(palette)] for index in range(count)]


def scores_figure(document: ResultsDocument, nonnegative: bool = False) -> Figure:
    series = score_histograms(document, nonnegative)
    which = "scores >= 0 only" if nonnegative else "all scored posts"
    notes = _left_out_notes(((tagger, NO_SCORED_POSTS) for tagger in series.left_out), chart_label)
    count = len(series.histograms)
    figure = _figure(max(3.5, 1.3 + 1.7 * count))
    _title(figure, f"Score per post ({which}; bins of {series.bins[1] - series.bins[0]:g})", notes)
    if not count:
        _empty(figure, "no tagger has a scored post")
        return figure
    axes_list = figure.subplots(count, 1, sharex=True, squeeze=False)[:, 0]
    widths = np.diff(series.bins)
    for axes, histogram, colour in zip(axes_list, series.histograms, _colours(count), strict=True):
        axes.bar(series.bins[:-1], histogram.counts, width=widths, align="edge", color=colour,
                 edgecolor="white", linewidth=0.5)
        # The means go in the title: a legend would hide bars.
        if not nonnegative:
            title = f"{histogram.shown} posts, mean {histogram.mean_all:.3f} (line)"
        elif not histogram.below_zero:
            title = f"{histogram.shown} posts, none below 0, mean {histogram.mean_all:.3f} (line)"
        else:
            shown = "nothing shown" if histogram.mean is None else f"mean of shown {histogram.mean:.3f} (line)"
            title = (f"{histogram.shown} posts shown, {histogram.below_zero} below 0 left out; {shown}, "
                     f"mean of all {histogram.mean_all:.3f} (dashed)")
        axes.set_title(f"{chart_label(histogram.tagger)}: {title}", loc="left")
        if histogram.mean is not None:
            axes.axvline(histogram.mean, color="black", linewidth=1.2)
        if nonnegative and histogram.below_zero:
            axes.axvline(histogram.mean_all, color="black", linewidth=1.2, linestyle="--")
        axes.set_ylabel("posts")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        top = max(max(histogram.counts), 1) * 1.1
        axes.set_ylim(0, top)
        for left, width, posts in zip(series.bins, widths, histogram.counts, strict=False):
            if 0 < posts < SMALL_BAR * top:  # a bar too short to see: its count says it is there
                axes.text(left + width / 2, posts + top * 0.01, str(posts), ha="center", va="bottom", fontsize=7,
                          gid="small-count")
    axes_list[-1].set_xlim(series.bins[0], series.bins[-1])
    axes_list[-1].set_xlabel("score")
    return figure


def error_rates_figure(document: ResultsDocument) -> Figure:
    """Grouped horizontal bars, best tagger at the top; a missing rate is written `n/a`, never drawn as 0."""
    series = error_rate_series(document)
    notes = _left_out_notes(((tagger, NO_SCORED_POSTS) for tagger in series.left_out), chart_label)
    missing = any(value is None for values in series.rates.values() for value in values)
    if missing:
        notes.append("n/a: nothing to count (no predicted tag, or no predicted rating)")
    count = len(series.taggers)
    figure = _figure(max(3.5, 1.6 + 0.85 * count))
    _title(figure, "Error rates (pooled over the scored posts)", notes)
    if not count:
        _empty(figure, "no tagger has a scored post")
        return figure
    axes = figure.add_subplot()
    values = [value for rates in series.rates.values() for value in rates if value is not None]
    right = max(max(values, default=0.0), 0.01) * 1.22
    height = 0.26
    colours = _colours(len(ERROR_RATES))
    for row, ((field, _), colour) in enumerate(zip(ERROR_RATES, colours, strict=True)):
        offset = (row - 1) * height
        for index, value in enumerate(series.rates[field]):
            y = index + offset
            if value is None:
                axes.text(right * 0.01, y, "n/a", va="center", fontsize=8, style="italic", color="dimgray")
                continue
            (bar,) = axes.barh(y, value, height=height * 0.95, color=colour)
            bar.set_gid(f"{field}:{index}")
            axes.text(value + right * 0.01, y, f"{value:.1%}", va="center", fontsize=7)
    handles = [Patch(color=colour, label=legend) for (_, legend), colour in zip(ERROR_RATES, colours, strict=True)]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    axes.set_yticks(range(count), [chart_label(tagger) for tagger in series.taggers])
    axes.set_ylim(count - 0.5, -0.5)  # best first, at the top
    axes.set_xlim(0, right)
    axes.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    axes.set_xlabel("share")
    return figure


def runtime_figure(document: ResultsDocument) -> Figure:
    """Each point labelled with its tagger; with many taggers, with its rank and a key below (labels would collide)."""
    series = runtime_series(document)
    notes = _runtime_notes(document, chart_label)
    keyed = len(series.points) > DIRECT_LABELS
    figure = _figure(5.5 + (0.2 * math.ceil(len(series.points) / 2) if keyed else 0))
    _title(figure, "Mean score against mean inference time", notes)
    if not series.points:
        _empty(figure, "no tagger has both a scored post and a runtime")
        return figure
    axes = figure.add_subplot()
    for rank, (point, colour) in enumerate(zip(series.points, _colours(len(series.points)), strict=True), 1):
        axes.scatter([point.runtime_ms], [point.mean_score], color=[colour], s=36, zorder=3,
                     label=f"{rank}  {chart_label(point.tagger)}")
        text = str(rank) if keyed else chart_label(point.tagger)
        annotation = axes.annotate(text, (point.runtime_ms, point.mean_score), xytext=(5, 4),
                                   textcoords="offset points", fontsize=8)
        annotation.set_in_layout(False)  # room is made with the x limits, not by shrinking the axes
    if keyed:
        figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False, title="key (best first)",
                      title_fontsize=8)
    axes.margins(x=0.2, y=0.12)
    if series.log_x:
        axes.set_xscale("log")
    else:  # from 0, with room on the right for the labels
        axes.set_xlim(0, max(point.runtime_ms for point in series.points) * (1.15 if keyed else 1.35) or 1.0)
    axes.set_xlabel("ms per image (mean" + (", log scale)" if series.log_x else ")"))
    axes.set_ylabel("mean score")
    axes.grid(True, alpha=0.3)
    return figure


@dataclass(frozen=True)
class Chart:
    filename: str
    title: str
    build: Callable[[ResultsDocument], Figure]
    notes: Callable[[ResultsDocument], list[str]]  # in full text, for the page
    # Why the chart is not drawn for this document (None: it is): it would show nothing the others do not.
    skip: Callable[[ResultsDocument], str | None] = lambda document: None


def _runtime_notes(document: ResultsDocument, label: Callable[[str], str] = str) -> list[str]:
    series = runtime_series(document)
    fast = series.fast_note(label)
    return [*_left_out_notes(series.left_out, label), *([fast] if fast else [])]


def _skip_nonnegative(document: ResultsDocument) -> str | None:
    return None if posts_below_zero(document) else "no post scored below 0, so it would repeat the chart above"


def _histogram_notes(document: ResultsDocument) -> list[str]:
    return _left_out_notes(((tagger, NO_SCORED_POSTS) for tagger in score_histograms(document).left_out), str)


def _nonnegative_notes(document: ResultsDocument) -> list[str]:
    below = [f"{h.tagger} ({h.below_zero})" for h in score_histograms(document, nonnegative=True).histograms
             if h.below_zero]
    return [*_histogram_notes(document), f"posts below 0 left out: {', '.join(below) if below else 'none'}"]


def _error_notes(document: ResultsDocument) -> list[str]:
    series = error_rate_series(document)
    notes = _left_out_notes(((tagger, NO_SCORED_POSTS) for tagger in series.left_out), str)
    for field, legend in ERROR_RATES:
        missing = [tagger for tagger, value in zip(series.taggers, series.rates[field], strict=True) if value is None]
        if missing:
            notes.append(f"{legend}: n/a (nothing to count) for {', '.join(missing)}")
    return notes


CHARTS = (
    Chart("scores.png", "Score per post, all scored posts", scores_figure, _histogram_notes),
    Chart("scores-nonnegative.png", "Score per post, scores >= 0 only",
          lambda document: scores_figure(document, nonnegative=True), _nonnegative_notes, _skip_nonnegative),
    Chart("error-rates.png", "Error rates", error_rates_figure, _error_notes),
    Chart("score-vs-runtime.png", "Mean score against ms per image", runtime_figure, _runtime_notes),
)


def render_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, with no metadata that would differ between machines or runs."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_figure(buffer, format="png", dpi=DPI, metadata=PNG_METADATA)
    return buffer.getvalue()


def render_charts(document: ResultsDocument) -> dict[str, bytes]:
    """The charts of `CHARTS` this document needs (`Chart.skip`), as PNG bytes by file name, drawn under `STYLE`
    so that runs and machines agree."""
    with matplotlib.rc_context(STYLE):
        return {chart.filename: render_png(chart.build(document)) for chart in CHARTS
                if chart.skip(document) is None}
