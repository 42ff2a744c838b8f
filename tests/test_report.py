"""`tagger_eval.reports.charts` and `.html_report`: the charts' data, the PNG files and the self-contained HTML page,
on real documents."""

from __future__ import annotations

import base64
import io
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger_eval.cli import main as cli_main
from tagger_eval.config import parse_run_config
from tagger_eval.records import PostResult, document_order
from tagger_eval.reports import chart_data, charts
from tagger_eval.reports.chart_data import (
    error_rate_series,
    histogram_bins,
    histogram_counts,
    runtime_series,
    score_histograms,
)
from tagger_eval.reports.charts import chart_label, error_rates_figure, runtime_figure, scores_figure
from tagger_eval.reports.html_report import ReportError, report_from_file, table_rows, write_report
from tagger_eval.reports.leaderboard import COLUMNS, format_table, summarise
from tagger_eval.reports.results import ResultsError, build_document, dataset_identity, save
from tagger_eval.run.evaluation import Evaluation
from tagger_eval.scoring.post_score import score_post

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHARTS = ["scores.png", "scores-nonnegative.png", "error-rates.png", "score-vs-runtime.png"]
G, S, E = "rating:general", "rating:sensitive", "rating:explicit"
WEBUI = "webui:http://x/?a=<b>#m"
DATASET = {"path": "/data/<odd> & co/data.db", "posts": 4, "content_sha256": "ab" * 32,
           "metadata": {"source": "tests"}}


def scored(tagger: str, post: int, predicted: set[str], truth: set[str], runtime_s: float | None = 0.01,
           threshold: float | None = 0.5, character_threshold: float | None = None) -> PostResult:
    return PostResult(tagger, post, "scored", floor=0.0, threshold=threshold, character_threshold=character_threshold,
                      runtime_s=runtime_s, counts=score_post(predicted, truth).to_dict(),
                      missed_tags=sorted(truth - predicted), wrong_tags=sorted(predicted - truth))


def unscored(tagger: str, post: int, status: str) -> PostResult:
    return PostResult(tagger, post, status, floor=0.0, threshold=0.5, reason=f"{status} for a reason")


def make_document(results: Sequence[PostResult], identities: dict[str, dict[str, Any]] | None = None) -> dict:
    return json.loads(json.dumps(build_document(results, identities or {}, DATASET, "general")))  # as loaded


def hand_results() -> list[PostResult]:
    return [
        # mid: 1/3, 2/4 (wrong rating), 1/2 (no rating); a skip and an error; 10, 20, 30 ms
        scored("mid", 1, {"x", "z", G}, {"x", "y", G}, runtime_s=0.010),
        scored("mid", 2, {"x", "y", "w", E}, {"x", "y", "w", S}, runtime_s=0.020),
        scored("mid", 3, {"x"}, {"x", G}, runtime_s=0.030),
        unscored("mid", 4, "skipped"),
        unscored("mid", 5, "error"),
        scored("best", 1, {"x", G}, {"x", G}, runtime_s=0.5),
        scored("best", 2, {"y", S}, {"y", S}, runtime_s=0.7),
        unscored("nothing", 1, "skipped"),
        unscored("nothing", 2, "error"),
        # neg: -1.0, 0.0 and 0.5: one post below 0
        scored("neg", 1, {"q", "r", "s", G}, {"x", G}, runtime_s=0.002),
        scored("neg", 2, {"q", G}, {"x", G}),
        scored("neg", 3, {"x", "y", G}, {"x", "y", "w", G}),
        # never predicts a rating: no rating error rate
        scored("norating", 1, {"x"}, {"x", G}, threshold=0.35, character_threshold=0.85),
        scored("norating", 2, {"x", "y"}, {"x", "y", "z", G}, threshold=0.35, character_threshold=0.85),
        # a server that thresholds itself, with no runtime
        scored(WEBUI, 1, {"x", "q", G}, {"x", "y", G}, runtime_s=None, threshold=None),
        scored(WEBUI, 2, {"x", G}, {"x", "y", G}, runtime_s=None, threshold=None),
    ]


IDENTITIES = {WEBUI: {"implementation": "tagger_eval.taggers.servers.WebuiTagger", "url": "http://x/?a=<b>",
                      "model": "<m>"},
              "mid": {"implementation": "tests.Mid", "model_sha256": "cd" * 32}}


@pytest.fixture(scope="module")
def document() -> dict:
    return make_document(hand_results(), IDENTITIES)


@pytest.fixture(scope="module")
def written(document: dict, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_report(document, tmp_path_factory.mktemp("report") / "out")


def scores_of(document: dict, label: str) -> list[float]:
    return [post["score"] for post in document["taggers"][label]["posts"].values() if post["status"] == "scored"]


class Page(HTMLParser):
    """Parses the page strictly enough: every element closed in order, and collects images, the leaderboard's rows
    and headers, and text."""

    VOID = frozenset({"meta", "img", "br", "link", "hr", "input"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.headers: list[str] = []
        self.cell: list[str] | None = None
        self.in_body = False
        self.in_leaderboard = False
        self.text: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed elements: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "table":
            self.in_leaderboard = dict(attrs).get("id") == "leaderboard"
        if tag == "tbody":
            self.in_body = True
        if tag == "tr" and self.in_body and self.in_leaderboard:
            self.rows.append([])
        if tag in ("td", "th") and self.in_leaderboard:
            self.cell = []
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert tag not in self.VOID, f"</{tag}>"
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag == "td" and self.in_leaderboard:
            self.rows[-1].append("".join(self.cell or []))
        if tag == "th" and self.in_leaderboard:
            self.headers.append("".join(self.cell or []))
        if tag in ("td", "th"):
            self.cell = None
        if tag == "tbody":
            self.in_body = False
        if tag == "table":
            self.in_leaderboard = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.cell is not None:
            self.cell.append(data)


def check_png(path: Path, min_size: tuple[int, int] = (400, 300)) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        assert image.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))  # something was drawn
        return image.size


# histogram data


@pytest.mark.parametrize("scores", [
    [1.0] * 5,
    [0.0, 0.05, 0.1, 0.15, 0.3, 0.35, 0.95, 1.0],  # on the edges
    [-1.0, -0.25, 1 / 3, 2 / 3, 0.5, 0.5, 1.0],
    list(np.random.default_rng(7).uniform(-2.0, 1.0, 500)),
    [k / 7 for k in range(-7, 8)] + [k / 11 for k in range(-3, 12)],
])
def test_histogram_counts_equal_numpy(scores: list[float]) -> None:
    bins = histogram_bins(scores)
    counts = histogram_counts(scores, bins)
    assert counts == np.histogram(scores, bins=bins)[0].tolist()
    assert sum(counts) == len(scores)


def test_histogram_counts_drop_values_outside_the_bins_and_reject_bad_bins() -> None:
    bins = [0.0, 0.5, 1.0]
    assert histogram_counts([-0.1, 0.0, 0.5, 1.0, 1.1, float("nan")], bins) == [1, 2]
    assert histogram_counts([], bins) == [0, 0]
    for bad in ([0.0], [1.0, 0.0], [0.0, 0.0, 1.0]):
        with pytest.raises(ValueError, match="increasing"):
            histogram_counts([0.5], bad)


def test_histogram_bins_are_multiples_of_the_width_around_every_value() -> None:
    bins = histogram_bins([-0.27, 0.42, 1.0])
    assert bins[0] <= -0.27 and bins[-1] >= 1.0
    assert np.allclose(np.diff(bins), 0.05)
    assert np.allclose(np.array(bins) / 0.05, np.round(np.array(bins) / 0.05))
    assert bins[0] == pytest.approx(-0.3) and bins[-1] == 1.0  # 1.0 falls in the last bin, [0.95, 1.0], closed
    assert histogram_counts([0.95, 0.99, 1.0], bins)[-1] == 3
    assert histogram_bins([0.15, 0.3]) == [0.15, 0.2, 0.25, 0.3]
    assert histogram_bins([1.0]) == [0.95, 1.0] and histogram_counts([1.0] * 3, [0.95, 1.0]) == [3]
    assert histogram_bins([0.0], lower=0.0) == [0.0, 0.05]
    assert histogram_bins([0.5, 1.0], lower=0.0)[0] == 0.0
    assert len(histogram_bins([])) >= 2
    wide = histogram_bins([-60.0, 1.0])  # a tagger gone wild: wider bins, not thousands
    assert len(wide) - 1 <= chart_data.MAX_BINS and wide[0] <= -60.0 and wide[-1] >= 1.0
    wild = histogram_bins([-1e6, 1.0])
    assert len(wild) - 1 <= chart_data.MAX_BINS + 2 and wild[0] <= -1e6 and wild[-1] >= 1.0


def test_score_histograms_count_every_scored_post(document: dict) -> None:
    series = score_histograms(document)
    assert [h.tagger for h in series.histograms] == ["best", "norating", WEBUI, "mid", "neg"]
    assert series.left_out == ["nothing"]
    all_scores = [s for label in document["taggers"] for s in scores_of(document, label)]
    assert series.bins[0] <= min(all_scores) and series.bins[-1] >= max(all_scores)
    for histogram in series.histograms:
        scores = scores_of(document, histogram.tagger)
        assert histogram.counts == np.histogram(scores, bins=series.bins)[0].tolist()
        assert histogram.shown == sum(histogram.counts) == len(scores)
        assert histogram.below_zero == 0
        assert histogram.mean == histogram.mean_all == pytest.approx(statistics.fmean(scores))
        assert histogram.mean_all == pytest.approx(document["taggers"][histogram.tagger]["summary"]["mean_score"])


def test_nonnegative_histograms_leave_out_negative_scores(document: dict) -> None:
    series = score_histograms(document, nonnegative=True)
    assert series.bins[0] == 0.0
    for histogram in series.histograms:
        scores = scores_of(document, histogram.tagger)
        kept = [score for score in scores if score >= 0]
        assert sum(histogram.counts) == histogram.shown == len(kept)
        assert histogram.below_zero == len(scores) - len(kept)
        assert histogram.counts == np.histogram(kept, bins=series.bins)[0].tolist()
        assert histogram.mean == pytest.approx(statistics.fmean(kept))
    neg = {h.tagger: h for h in series.histograms}["neg"]
    assert (neg.shown, neg.below_zero) == (2, 1)
    assert neg.mean == pytest.approx(0.375) and neg.mean_all == pytest.approx(-0.25 / 3)  # -1, 0, 3/4


@pytest.mark.parametrize("nonnegative", [False, True])
def test_histogram_figure_draws_the_counts_and_the_means(document: dict, nonnegative: bool) -> None:
    series = score_histograms(document, nonnegative)
    figure = scores_figure(document, nonnegative)
    axes_list = figure.axes
    assert len(axes_list) == len(series.histograms)
    for axes, histogram in zip(axes_list, series.histograms, strict=True):
        assert [patch.get_height() for patch in axes.patches] == histogram.counts
        assert [patch.get_x() for patch in axes.patches] == pytest.approx(series.bins[:-1])
        lines = [line.get_xdata()[0] for line in axes.get_lines()]
        expected = [histogram.mean] + ([histogram.mean_all] if nonnegative and histogram.below_zero else [])
        assert lines == pytest.approx(expected)
        assert axes.get_title(loc="left").startswith(histogram.tagger.replace("$", r"\$"))
        if nonnegative and histogram.below_zero:
            assert f"{histogram.below_zero} below 0 left out" in axes.get_title(loc="left")
    assert "left out (no scored posts): nothing" in figure.get_suptitle()


# error rates


def test_error_rate_series_equal_the_summary(document: dict) -> None:
    series = error_rate_series(document)
    assert series.taggers == ["best", "norating", WEBUI, "mid", "neg"]
    assert series.left_out == ["nothing"]
    for field in ("error_rate", "practical_error_rate", "rating_error_rate"):
        assert series.rates[field] == [document["taggers"][t]["summary"][field] for t in series.taggers]
    assert series.rates["rating_error_rate"][series.taggers.index("norating")] is None
    mid = series.taggers.index("mid")
    assert series.rates["error_rate"][mid] == pytest.approx(2 / 8)  # z and the explicit rating, of 8 predicted
    assert series.rates["practical_error_rate"][mid] == pytest.approx(1 / 6)
    assert series.rates["rating_error_rate"][mid] == pytest.approx(1 / 2)


def test_error_rate_figure_draws_the_values_and_no_bar_for_none(document: dict) -> None:
    series = error_rate_series(document)
    figure = error_rates_figure(document)
    (axes,) = figure.axes
    bars = {patch.get_gid(): patch.get_width() for patch in axes.patches if patch.get_gid()}
    expected = {f"{field}:{index}": value for field, values in series.rates.items()
                for index, value in enumerate(values) if value is not None}
    assert bars == pytest.approx(expected)
    assert len(axes.patches) == len(expected)  # None is not a bar of width 0
    assert sum(text.get_text() == "n/a" for text in axes.texts) == 1
    assert [label.get_text() for label in axes.get_yticklabels()] == series.taggers
    assert "left out (no scored posts): nothing" in figure.get_suptitle()


# runtime


def test_runtime_series_plots_mean_score_against_milliseconds(document: dict) -> None:
    series = runtime_series(document)
    summaries = {label: entry["summary"] for label, entry in document["taggers"].items()}
    assert [point.tagger for point in series.points] == ["best", "norating", "mid", "neg"]
    for point in series.points:
        assert point.runtime_ms == pytest.approx(summaries[point.tagger]["mean_runtime_s"] * 1000)
        assert point.mean_score == summaries[point.tagger]["mean_score"]
    assert series.left_out == [(WEBUI, "no runtime recorded"), ("nothing", "no scored posts")]
    assert series.log_x  # 0.6 s against 6 ms
    figure = runtime_figure(document)
    (axes,) = figure.axes
    assert axes.get_xscale() == "log"
    assert [text.get_text() for text in axes.texts] == [chart_label(point.tagger) for point in series.points]
    plotted = [float(value) for c in axes.collections for value in c.get_offsets()[0]]
    expected = [value for point in series.points for value in (point.runtime_ms, point.mean_score)]
    assert plotted == pytest.approx(expected)
    assert "left out (no runtime recorded): webui:http://x/?a=<b>#m" in figure.get_suptitle()
    close = make_document([scored("a", 1, {"x"}, {"x"}, runtime_s=0.01), scored("b", 1, {"x"}, {"x"}, runtime_s=0.09)])
    assert not runtime_series(close).log_x
    assert runtime_figure(close).axes[0].get_xscale() == "linear"


# order and labels


def test_taggers_best_first_and_nothing_scored_last(document: dict) -> None:
    assert list(document["taggers"]) == sorted(document["taggers"])  # the document itself is alphabetical
    assert document_order(document) == ["best", "norating", WEBUI, "mid", "neg", "nothing"]
    assert document_order(document) == [summary.tagger for summary in summarise(hand_results())]


def test_chart_labels_lose_their_middle_to_an_ellipsis_and_keep_dollars_literal() -> None:
    assert chart_label("short") == "short"
    long = "wd14-onnx:/very/long/path/to/some/model/directory/v3"
    assert chart_label(long) == long[:15] + "\u2026" + long[-24:] and len(chart_label(long)) == 40
    assert chart_label(long, width=10) == "wd1\u2026ory/v3"
    assert chart_label("x" * 40) == "x" * 40
    assert chart_label("a$b$c") == r"a\$b\$c"


# the files


def test_write_report_writes_four_valid_pngs_and_the_page(written: list[Path]) -> None:
    assert [path.name for path in written] == [*CHARTS, "index.html"]
    assert len({path.parent for path in written}) == 1
    for path in written[:-1]:
        check_png(path)


def test_the_page_is_self_contained_and_embeds_exactly_the_pngs(written: list[Path]) -> None:
    text = (written[0].parent / "index.html").read_text(encoding="utf-8")
    page = Page(text)
    assert [image["src"][: len("data:image/png;base64,")] for image in page.images] == \
        ["data:image/png;base64,"] * len(CHARTS)
    decoded = [base64.b64decode(image["src"].split(",", 1)[1], validate=True) for image in page.images]
    assert decoded == [(written[0].parent / name).read_bytes() for name in CHARTS]
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert "url(" not in text and "@import" not in text and 'src="http' not in text and 'href="http' not in text


def test_the_page_has_the_leaderboard_in_order_with_the_terminal_cells(document: dict, written: list[Path]) -> None:
    page = Page((written[0].parent / "index.html").read_text(encoding="utf-8"))
    assert page.headers == [header for header, _, _ in COLUMNS]
    assert [row[0] for row in page.rows] == ["best", "norating", WEBUI, "mid", "neg", "nothing"]
    rows = {row[0]: dict(zip(page.headers, row, strict=True)) for row in page.rows}
    mid = document["taggers"]["mid"]["summary"]
    assert rows["mid"]["mean score"] == f"{mid['mean_score']:.3f}" == "0.444"
    assert rows["mid"]["median"] == "0.500"
    assert rows["mid"]["ms/image"] == "20.0"
    assert (rows["mid"]["wrong tags"], rows["mid"]["practical"], rows["mid"]["rating err"]) == \
        ("25.0%", "16.7%", "50.0%")
    assert (rows["mid"]["pass"], rows["mid"]["fail"], rows["mid"]["skip"], rows["mid"]["errors"]) == \
        ("3", "0", "1", "1")
    assert rows["best"]["threshold"] == "0.50"
    assert rows["norating"]["threshold"] == "0.35/c0.85"
    assert rows["norating"]["rating err"] == "n/a"
    assert rows[WEBUI]["threshold"] == "server" and rows[WEBUI]["ms/image"] == "-"
    assert rows["nothing"]["posts"] == "0" and rows["nothing"]["mean score"] == "-"
    assert page.rows == table_rows(document)
    # the same cells as the terminal leaderboard (no label here has a space)
    assert [line.split() for line in format_table(summarise(hand_results()))[2:]] == page.rows


def test_the_page_escapes_every_string_and_shows_the_context(document: dict, written: list[Path]) -> None:
    text = (written[0].parent / "index.html").read_text(encoding="utf-8")
    assert "<b>" not in text and "<m>" not in text and "<odd>" not in text
    assert "webui:http://x/?a=&lt;b&gt;#m" in text
    page = Page(text)
    content = "".join(page.text)
    for expected in (WEBUI, "http://x/?a=<b>", "<m>", "tagger_eval.taggers.servers.WebuiTagger", "cd" * 32,
                     DATASET["path"], "ab" * 32, "general", document["created_at"], "tests"):
        assert expected in content
    assert "left out (no scored posts): nothing" in content
    assert "n/a (nothing to count) for norating" in content
    assert f"left out (no runtime recorded): {WEBUI}" in content
    assert "posts below 0 left out: neg (1)" in content
    assert "applied by the server" in content


def test_rendering_twice_gives_identical_bytes(document: dict, written: list[Path], tmp_path: Path) -> None:
    again = write_report(document, tmp_path / "again")
    for first, second in zip(written, again, strict=True):
        assert first.name == second.name
        assert first.read_bytes() == second.read_bytes(), first.name


def test_writing_a_report_leaves_matplotlib_and_pyplot_alone(tmp_path: Path) -> None:
    """Run in a fresh interpreter: pyplot is never imported and the backend setting stays as it was.

    (The raw rcParams value is read: `matplotlib.get_backend()` itself imports pyplot to resolve it.)
    """
    script = (
        "import json, sys, matplotlib; from pathlib import Path; "
        "backend = dict.__getitem__(matplotlib.rcParams, 'backend'); "
        "from tagger_eval.reports.html_report import write_report; "
        f"write_report(json.loads(Path(sys.argv[1]).read_text()), Path({str(tmp_path / 'out')!r})); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == backend, 'backend changed'"
    )
    source = tmp_path / "results.json"
    source.write_text(json.dumps(make_document([scored("a", 1, {"x"}, {"x", "y"})])))
    subprocess.run([sys.executable, "-c", script, str(source)], check=True, timeout=60)
    assert (tmp_path / "out" / "index.html").is_file()


# edge cases


def test_one_tagger(tmp_path: Path) -> None:
    document = make_document([scored("solo", 1, {"x", G}, {"x", G}), scored("solo", 2, {"q", G}, {"x", G})])
    written = write_report(document, tmp_path)
    sizes = [check_png(path) for path in written[:-1]]
    assert all(width >= 400 for width, _ in sizes)
    assert Page(written[-1].read_text(encoding="utf-8")).rows[0][:4] == ["solo", "0.50", "2", "0.500"]
    assert len(scores_figure(document).axes) == 1


def test_a_tagger_with_no_scored_posts_is_in_the_table_and_out_of_the_charts(tmp_path: Path) -> None:
    document = make_document([scored("ok", 1, {"x"}, {"x"}), unscored("broken", 1, "error"),
                              unscored("broken", 2, "skipped")])
    written = write_report(document, tmp_path)
    page = Page(written[-1].read_text(encoding="utf-8"))
    assert [row[0] for row in page.rows] == ["ok", "broken"]
    assert page.rows[1][-4:] == ["0", "0", "1", "1"]
    assert [h.tagger for h in score_histograms(document).histograms] == ["ok"]
    assert error_rate_series(document).taggers == ["ok"]
    assert runtime_series(document).left_out == [("broken", "no scored posts")]
    assert "left out (no scored posts): broken" in scores_figure(document).get_suptitle()


def test_nothing_scored_at_all_still_writes_every_file(tmp_path: Path) -> None:
    document = make_document([unscored("a", 1, "skipped"), unscored("b", 1, "error")])
    written = write_report(document, tmp_path)
    # no score below 0: the chart of scores >= 0 would repeat the first
    assert [path.name for path in written] == [name for name in CHARTS if name != "scores-nonnegative.png"] + \
        ["index.html"]
    for path in written[:-1]:
        check_png(path, min_size=(400, 100))
    assert len(Page(written[-1].read_text(encoding="utf-8")).rows) == 2


def test_many_taggers_with_long_labels_grow_the_figures_and_keep_full_labels_in_the_page(tmp_path: Path) -> None:
    labels = [f"wd14-onnx:/models/a-rather-long-directory-name/for-model-number-{i:02d}/$HOME$" for i in range(12)]
    results = [scored(label, post, {"x", "y", G} if (i + post) % 3 else {"x", "q", E}, {"x", "y", G},
                      runtime_s=0.001 * (i + 1))
               for i, label in enumerate(labels) for post in range(1, 4)]
    document = make_document(results)
    written = write_report(document, tmp_path / "many")
    one = write_report(make_document([r for r in results if r.tagger == labels[0]]), tmp_path / "one")
    for many_png, one_png in zip(written[:-1], one[:-1], strict=True):
        (_, height), (_, one_height) = check_png(many_png), check_png(one_png)
        if many_png.name != "score-vs-runtime.png":
            assert height > 2 * one_height, many_png.name
    assert len(scores_figure(document).axes) == 12
    ticks = [label.get_text() for label in error_rates_figure(document).axes[0].get_yticklabels()]
    assert all(len(tick.replace(r"\$", "$")) == charts.LABEL_WIDTH and "\u2026" in tick for tick in ticks)
    assert len(set(ticks)) == 12  # still tell the taggers apart
    figure = runtime_figure(document)  # ranks at the points, a key below: long labels side by side would collide
    assert [text.get_text() for text in figure.axes[0].texts] == [str(rank) for rank in range(1, 13)]
    key = [text.get_text() for text in figure.legends[0].get_texts()]
    assert key == [f"{rank}  {chart_label(label)}" for rank, label in enumerate(document_order(document), 1)]
    page = Page(written[-1].read_text(encoding="utf-8"))
    assert sorted(row[0] for row in page.rows) == sorted(labels)
    assert all(label in "".join(page.text) for label in labels)


# a real run


def test_report_of_a_real_demo_evaluation_from_its_file(demo_subset: Callable[..., Path], tmp_path: Path) -> None:
    session = Evaluation(parse_run_config(["--tagger=control,demo-pixel,demo-histogram",
                                            f"--dataset={demo_subset(8)}"]))
    try:
        runs = [session.load(spec) for spec in session.specs]
        results = [run.evaluate(session.dataset, post) for run in runs for post in session.dataset.post_ids()]
        identities = {run.label: run.tagger.identity() for run in runs}
        document = build_document(results, identities, dataset_identity(session.dataset), session.config.scope)
    finally:
        session.close()
    path = save(document, tmp_path / "results.json")
    written = report_from_file(path, tmp_path / "report")
    for png in written[:-1]:
        check_png(png)
    page = Page(written[-1].read_text(encoding="utf-8"))
    assert page.rows == [line.split() for line in format_table(summarise(results))[2:]]
    assert page.rows[0][:4] == ["control", "0.50", "8", "1.000"]
    content = "".join(page.text)
    assert document["dataset"]["content_sha256"] in content
    assert "tagger_eval.taggers.demo.PixelTagger" in content
    histograms = score_histograms(document).histograms
    assert {h.tagger: sum(h.counts) for h in histograms} == {"control": 8, "demo-pixel": 8, "demo-histogram": 8}
    # the plugin reports from the document in memory: the same bytes as from its JSON file
    direct = write_report(document, tmp_path / "direct")
    assert [path.read_bytes() for path in direct] == [path.read_bytes() for path in written]


def test_report_from_file_refuses_what_is_not_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"benchmarks": []}')
    with pytest.raises(ResultsError, match="not a tagger-eval results file"):
        report_from_file(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# where the report goes, and what a failure leaves behind


def test_report_onto_an_existing_file_is_refused_before_anything_is_read(tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# mine\n")
    # The results file does not even exist: the output path is checked first.
    assert cli_main(["report", str(tmp_path / "missing.json"), "--out", str(readme)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"error: --out: {readme} is a file, not a directory: give a directory for the "
                                 "charts and index.html (it is created if missing)\n")
    assert readme.read_text() == "# mine\n" and [path.name for path in tmp_path.iterdir()] == ["README.md"]


def test_a_report_below_a_file_is_one_error_line(document: dict, tmp_path: Path, capsys) -> None:
    results = save(document, tmp_path / "run.json")
    out = tmp_path / "run.json" / "report"
    assert cli_main(["report", str(results), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the report to {out}: ") and err.count("\n") == 1
    assert [path.name for path in tmp_path.iterdir()] == ["run.json"]


def test_a_failed_write_leaves_no_temporary_file(document: dict, tmp_path: Path) -> None:
    (tmp_path / "index.html").mkdir()  # the page cannot replace a directory
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ReportError, match=f"cannot write the report to {tmp_path}: .*[Ii]s a directory"):
        write_report(document, tmp_path)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]
    assert (tmp_path / "index.html").is_dir() and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_document_that_cannot_be_drawn_writes_nothing(document: dict, tmp_path: Path) -> None:
    """Validated files cannot get here (`load` checks every field); a document built in memory can."""
    broken = json.loads(json.dumps(document))
    del broken["taggers"]["best"]["summary"]["mean_score"]
    with pytest.raises(KeyError):
        write_report(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("where", "value", "problem"), [
    (("taggers", "mid", "posts", "2", "score"), float("nan"), "taggers.mid.posts.2.score: expected a number in "
                                                              "[-1,000,000, 1], got NaN"),
    (("taggers",), [], "taggers: expected an object (tagger label -> its results), got a list"),
    (("taggers", "best", "summary", "mean_score"), 1e308, "taggers.best.summary.mean_score: expected a number in "),
])
def test_the_report_command_refuses_a_broken_results_file(document: dict, tmp_path: Path, capsys,
                                                          where: tuple[str, ...], value: Any, problem: str) -> None:
    broken = json.loads(json.dumps(document))
    *parents, last = where
    container = broken
    for key in parents:
        container = container[key]
    container[last] = value
    results = save(broken, tmp_path / "run.json")
    assert cli_main(["report", str(results), "--out", str(tmp_path / "report")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {results} is not a valid results file: {problem}")
    assert not (tmp_path / "report").exists()
