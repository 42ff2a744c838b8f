"""`tagger_eval.config` (options), `tagger_eval.run.evaluation` (settings, per-post evaluation) and
`tagger_eval.reports.leaderboard` (the leaderboard)."""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from builders import build_dataset
from PIL import Image

from tagger_eval.config import ConfigError, PerTagger, parse_run_config
from tagger_eval.data import demo_dataset as demo
from tagger_eval.data.dataset import Dataset, DatasetError
from tagger_eval.data.demo_dataset import DEFAULT_DATASET
from tagger_eval.option_types import tagger_float
from tagger_eval.records import PostResult
from tagger_eval.reports.leaderboard import format_table, summarise, summary_lines
from tagger_eval.run.evaluation import Evaluation, PostSkipped, TaggerRun, TaggerSettings
from tagger_eval.scoring.post_score import score_post
from tagger_eval.taggers import Sample, Tagger, TaggerSpec, UnknownTaggerError, entries


def write_dataset(root: Path, posts: Sequence[tuple[int, str, str]], images: Sequence[int]) -> Path:
    """Only the posts in `images` get a PNG."""
    return build_dataset(root, posts, {post_id: Image.new("RGB", (32, 32), (250, 250, 250)) for post_id in images})


class FixedTagger(Tagger):
    """Outputs the same probabilities for every image, and can only output the tags of `vocabulary`."""

    name = "fixed"

    def __init__(self, output: Mapping[str, float], vocabulary: Mapping[str, int] | None) -> None:
        self.output = dict(output)
        self._vocabulary = vocabulary
        self.calls = 0

    def vocabulary(self) -> Mapping[str, int] | None:
        return self._vocabulary

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        self.calls += len(samples)
        assert all(sample.image.size == (32, 32) for sample in samples)
        return [dict(self.output) for _ in samples]


def fixed_run(output: Mapping[str, float], vocabulary: Mapping[str, int] | None, scope: str,
              threshold: float = 0.5, floor: float = 0.0) -> TaggerRun:
    return TaggerRun(TaggerSettings(TaggerSpec("fixed"), threshold, floor, scope), FixedTagger(output, vocabulary))


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds", [(1, "g", "some_tag other_tag"), (2, "s", "unrelated"),
                                           (3, "q", "some_tag")], images=[1, 2])


@pytest.fixture
def small_dataset(small_db: Path):
    with Dataset(small_db) as dataset:
        yield dataset


OPTION_FLAGS = {"threshold_options": "--threshold", "floor_options": "--score-floor", "scope": "--tag-scope",
                "dataset_path": "--dataset"}


def open_evaluation(taggers: str, **options: str | Path | list[str]) -> Evaluation:
    """An `Evaluation` configured as `pytest --tagger=TAGGERS --threshold=...` would configure it."""
    argv = [f"--tagger={taggers}"]
    for name, value in options.items():
        values = value if isinstance(value, list) else [value]
        argv += [f"{OPTION_FLAGS[name]}={item}" for item in values]
    return Evaluation(parse_run_config(argv))


def session(taggers: str, **options: str | Path | list[str]) -> Evaluation:
    opened = open_evaluation(taggers, **options)
    opened.close()  # the tests below only read settings; the dataset file has been checked by now
    return opened


# Per-tagger option values


def per_tagger(values: list[str]) -> PerTagger:
    return PerTagger.from_values(tagger_float(value) for value in values)


def test_per_tagger_values_global_and_per_tagger() -> None:
    assert per_tagger(["0.4", "demo-pixel=0.6"]) == PerTagger(0.4, {"demo-pixel": 0.6})


def test_per_tagger_values_last_value_wins() -> None:
    assert per_tagger(["0.1", "0.2", "a=1", "a=-3"]) == PerTagger(0.2, {"a": -3.0})


def test_per_tagger_values_without_values() -> None:
    assert per_tagger([]) == PerTagger(None, {})


@pytest.mark.parametrize("value", ["x=abc", "abc", "demo-pixel="])
def test_per_tagger_values_reject_non_numbers_naming_the_option(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"--score-floor: expected FLOAT or NAME=FLOAT, got '{value}'"):
        parse_run_config(["--tagger=control", "--score-floor=0.5", f"--score-floor={value}"])


# Evaluation settings


def test_per_tagger_setting_beats_global_beats_tagger_default() -> None:
    evaluation = session("control,demo-pixel,demo-lowres",
                         threshold_options=["0.3", "demo-pixel=0.7"], floor_options=["demo-lowres=0.1"])
    settings = {spec.name: evaluation.load(spec).settings for spec in evaluation.specs}
    assert {name: s.threshold for name, s in settings.items()} == {
        "control": 0.3, "demo-pixel": 0.7, "demo-lowres": 0.3}
    # No global floor: the others keep their tagger's default.
    assert {name: s.score_floor for name, s in settings.items()} == {
        "control": 1.0, "demo-pixel": 0.2, "demo-lowres": 0.1}
    assert all(s.scope == "all" for s in settings.values())
    assert settings["demo-pixel"].spec == TaggerSpec("demo-pixel")


def test_global_floor_overrides_every_default() -> None:
    evaluation = session("control,demo-histogram", floor_options=["-2", "control=0.5"])
    settings = {spec.name: evaluation.load(spec).settings for spec in evaluation.specs}
    assert settings["control"].score_floor == 0.5
    assert settings["demo-histogram"].score_floor == -2.0
    assert settings["demo-histogram"].threshold == 0.5  # the tagger's default, no --threshold given


def test_tagger_defaults_when_no_option_is_given() -> None:
    evaluation = session("demo-pixel")
    run = evaluation.load(evaluation.specs[0])
    assert (run.settings.threshold, run.settings.score_floor) == (0.5, 0.2)
    assert run.label == "demo-pixel"
    assert evaluation.dataset_path == DEFAULT_DATASET


@pytest.mark.parametrize("option", ["threshold_options", "floor_options"])
def test_per_tagger_option_for_an_unselected_tagger_is_an_error(option: str) -> None:
    with pytest.raises(ValueError, match=r"'demo-pixel' is not a selected tagger \(control\)"):
        session("control", **{option: ["demo-pixel=0.5"]})


@pytest.mark.parametrize("threshold", ["1.0", "1.5", "-0.1", "demo-pixel=1", "nan"])
def test_threshold_outside_zero_to_one_is_an_error(threshold: str) -> None:
    with pytest.raises(ValueError, match=r"--threshold: a threshold must be in \[0, 1\)"):
        session("demo-pixel", threshold_options=[threshold])


def test_threshold_zero_is_allowed() -> None:
    evaluation = session("demo-pixel", threshold_options=["0"])
    assert evaluation.load(evaluation.specs[0]).settings.threshold == 0.0


def test_unknown_tag_scope_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown scope 'everything'; expected one of all, general, "):
        session("control", scope="everything")


def test_unknown_tagger_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTaggerError, match="unknown tagger 'no-such-tagger'") as error:
        session("control,no-such-tagger")
    for name in ("control", "demo-pixel", "demo-lowres", "demo-histogram"):
        assert name in str(error.value)
    assert isinstance(error.value, ValueError)


def test_all_selects_control_and_the_demo_taggers() -> None:
    evaluation = session("all")
    names = [spec.name for spec in evaluation.specs]
    assert {"control", "demo-pixel", "demo-lowres", "demo-histogram"} <= set(names)
    assert len(names) == len(set(names))
    runnable = {entry.name for entry in entries() if not entry.needs_argument and entry.unavailable_reason() is None}
    assert set(names) == runnable


def test_a_missing_dataset_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset not found"):
        open_evaluation("control", dataset_path=tmp_path / "missing" / "data.db")


def test_a_session_reads_the_dataset_it_is_given(small_db: Path) -> None:
    evaluation = open_evaluation("control", dataset_path=str(small_db))
    try:
        assert evaluation.dataset.post_ids() == [1, 2, 3]
    finally:
        evaluation.close()


# TaggerRun.evaluate


def test_a_post_without_its_image_is_skipped_naming_the_path(small_db: Path) -> None:
    evaluation = open_evaluation("control", dataset_path=small_db)
    try:
        run = evaluation.load(evaluation.specs[0])
        with pytest.raises(PostSkipped, match="image file missing") as skipped:
            run.evaluate(evaluation.dataset, 3)
        assert str(small_db.parent / "images" / "3.png") in str(skipped.value)
        assert run.evaluate(evaluation.dataset, 1).score == 1.0
    finally:
        evaluation.close()


def test_a_post_with_no_truth_tags_in_scope_is_skipped(small_dataset: Dataset) -> None:
    run = fixed_run({"some_tag": 0.9}, vocabulary={"some_tag": 0}, scope="vocabulary")
    with pytest.raises(PostSkipped, match=r"post 2 has no truth tags in tag scope 'vocabulary'"):
        run.evaluate(small_dataset, 2)
    assert run.tagger.calls == 0


def test_vocabulary_scope_filters_the_prediction_too(small_dataset: Dataset) -> None:
    # Tags outside the tagger's vocabulary count neither as truth nor as prediction under `vocabulary`.
    run = fixed_run({"some_tag": 0.9, "invented": 0.9, "rating:explicit": 0.9}, {"some_tag": 0}, "vocabulary")
    result = run.evaluate(small_dataset, 1)
    assert result.score == 1.0
    assert (result.missed_tags, result.wrong_tags) == ([], [])
    assert result.counts["predicted_size"] == 1


def test_scope_all_counts_every_tag(small_dataset: Dataset) -> None:
    run = fixed_run({"Some Tag": 0.9, "invented": 0.9, "other_tag": 0.2, "rating:general": 0.1}, None, "all",
                    floor=0.5)
    result = run.evaluate(small_dataset, 1)
    # truth: some_tag, other_tag, rating:general; predicted: some_tag, invented, rating:general
    assert result.status == "scored"
    assert result.score == pytest.approx((2 - 1) / 3)
    assert result.missed_tags == ["other_tag"]
    assert result.wrong_tags == ["invented"]
    assert result.runtime_s is not None and result.runtime_s >= 0
    assert (result.tagger, result.post, result.threshold, result.floor) == ("fixed", 1, 0.5, 0.5)
    assert not result.passed


def test_failure_message_lists_missed_and_wrong_tags(small_dataset: Dataset) -> None:
    run = fixed_run({"wrong_a": 0.9, "wrong_b": 0.8, "rating:sensitive": 0.9}, None, "all", floor=0.0)
    result = run.evaluate(small_dataset, 1)
    assert not result.passed
    assert result.failure_message() == (
        "fixed scored -1.000 on post 1, below the floor 0.000\n"
        "  missed (3): other_tag rating:general some_tag\n"
        "  wrong (3): rating:sensitive wrong_a wrong_b"
    )


def test_failure_message_marks_empty_lists() -> None:
    result = PostResult("t", 5, "scored", floor=0.9, threshold=0.5, counts={"score": 0.5},
                        missed_tags=["a", "b"])
    assert "t scored 0.500 on post 5, below the floor 0.900" in result.failure_message()
    assert "missed (2): a b" in result.failure_message()
    assert "wrong (0): -" in result.failure_message()


def test_run_inference_wraps_the_model_call(small_dataset: Dataset) -> None:
    run = fixed_run({"some_tag": 0.9}, None, "all")
    wrapped = []

    def run_inference(infer):
        wrapped.append(True)
        return infer()

    run.evaluate(small_dataset, 1, run_inference=run_inference)
    assert wrapped == [True]
    assert run.tagger.calls == 1


def test_a_higher_threshold_predicts_fewer_tags() -> None:
    low = open_evaluation("demo-pixel", threshold_options=["0.3"])
    high = open_evaluation("demo-pixel", threshold_options=["0.95"])
    try:
        post_ids = low.dataset.post_ids()[:16]
        low_run, high_run = low.load(low.specs[0]), high.load(high.specs[0])
        low_sizes = [low_run.evaluate(low.dataset, post_id).counts["predicted_size"] for post_id in post_ids]
        high_sizes = [high_run.evaluate(high.dataset, post_id).counts["predicted_size"] for post_id in post_ids]
    finally:
        low.close()
        high.close()
    assert all(h <= lo for h, lo in zip(high_sizes, low_sizes, strict=True))
    assert sum(high_sizes) < sum(low_sizes)
    assert min(high_sizes) >= 1  # a rating is predicted whatever the threshold


def test_unscored_keeps_the_settings_and_the_reason(small_dataset: Dataset) -> None:
    run = fixed_run({}, None, "all", threshold=0.25, floor=0.75)
    record = run.unscored(9, "skipped", "no image")
    assert (record.tagger, record.post, record.status, record.reason) == ("fixed", 9, "skipped", "no image")
    assert (record.threshold, record.floor, record.counts) == (0.25, 0.75, None)
    assert not record.passed


def test_post_result_round_trips_through_a_dict(small_dataset: Dataset) -> None:
    result = fixed_run({"some_tag": 0.9}, None, "all").evaluate(small_dataset, 1)
    assert PostResult.from_dict(result.to_dict()) == result


# summary


def scored(tagger: str, post: int, predicted: set[str], truth: set[str], floor: float = 0.0,
           runtime_s: float | None = 0.01, threshold: float = 0.5) -> PostResult:
    counts = score_post(predicted, truth).to_dict()
    return PostResult(tagger, post, "scored", floor=floor, threshold=threshold, runtime_s=runtime_s, counts=counts,
                      missed_tags=sorted(truth - predicted), wrong_tags=sorted(predicted - truth))


def unscored(tagger: str, post: int, status: str) -> PostResult:
    return PostResult(tagger, post, status, floor=0.0, threshold=0.5, reason=status)


@pytest.fixture
def results() -> list[PostResult]:
    g, s, e = "rating:general", "rating:sensitive", "rating:explicit"
    return [
        # "mid": three scored posts, one skipped, one error.
        # post 1: 2 correct, 1 wrong (z), right rating -> score 1/3, 3 predicted, 2 non-rating predicted
        scored("mid", 1, {"x", "z", g}, {"x", "y", g}, floor=0.4, runtime_s=0.010),
        # post 2: 3 correct, 1 wrong (the rating) -> score 2/4, 4 predicted, 3 non-rating, 0 non-rating wrong
        scored("mid", 2, {"x", "y", "w", e}, {"x", "y", "w", s}, floor=0.4, runtime_s=0.020),
        # post 3: no rating predicted -> score 1/2, 1 predicted; it is left out of the rating error rate
        scored("mid", 3, {"x"}, {"x", g}, floor=0.4, runtime_s=0.030),
        unscored("mid", 4, "skipped"),
        unscored("mid", 5, "error"),
        scored("best", 1, {"x", g}, {"x", g}),
        unscored("nothing", 1, "skipped"),
        scored("worst", 1, {"q", g}, {"x", g}),
        scored("worst", 2, {"q", "r", s}, {"x", "y", g}),
    ]


def test_summary_of_one_tagger(results: list[PostResult]) -> None:
    summary = {s.tagger: s for s in summarise(results)}["mid"]
    assert summary.posts == 3
    assert summary.threshold == 0.5
    scores = [1 / 3, 2 / 4, 1 / 2]
    assert summary.mean_score == pytest.approx(statistics.fmean(scores))
    assert summary.mean_score == pytest.approx(4 / 9)
    assert summary.median_score == pytest.approx(0.5)
    assert summary.mean_runtime_s == pytest.approx(0.02)
    # Pooled: (1 + 1 + 0) wrong of (3 + 4 + 1) predicted, not the mean of the per-post rates.
    assert summary.error_rate == pytest.approx(2 / 8)
    # Ratings left out: (1 + 0 + 0) wrong of (2 + 3 + 1) predicted.
    assert summary.practical_error_rate == pytest.approx(1 / 6)
    # Only posts 1 and 2 predicted a rating; post 2's is wrong.
    assert summary.rating_error_rate == pytest.approx(1 / 2)
    assert (summary.passed, summary.failed, summary.skipped, summary.errors) == (2, 1, 1, 1)


def test_summary_of_taggers_with_few_posts(results: list[PostResult]) -> None:
    summaries = {s.tagger: s for s in summarise(results)}
    best, worst, nothing = summaries["best"], summaries["worst"], summaries["nothing"]
    assert (best.mean_score, best.error_rate, best.rating_error_rate, best.passed) == (1.0, 0.0, 0.0, 1)
    # worst: scores (1-1)/2 = 0 and (0-3)/3 = -1; wrong tags 1 + 3 of 2 + 3 predicted; 1 of 2 ratings wrong.
    assert worst.mean_score == pytest.approx(-0.5)
    assert worst.median_score == pytest.approx(-0.5)
    assert worst.error_rate == pytest.approx(4 / 5)
    assert worst.practical_error_rate == pytest.approx(3 / 3)
    assert worst.rating_error_rate == pytest.approx(1 / 2)
    assert (worst.passed, worst.failed) == (1, 1)
    assert nothing.posts == 0
    assert (nothing.mean_score, nothing.median_score, nothing.error_rate, nothing.rating_error_rate) == (
        None, None, None, None)
    assert (nothing.skipped, nothing.passed, nothing.failed) == (1, 0, 0)


def test_a_tagger_that_predicts_no_rating_has_no_rating_error_rate() -> None:
    summary = summarise([scored("t", 1, {"x"}, {"x", "rating:general"})])[0]
    assert summary.rating_error_rate is None
    assert summary.practical_error_rate == 0.0


def test_summaries_are_sorted_best_first_and_unscored_last(results: list[PostResult]) -> None:
    assert [s.tagger for s in summarise(results)] == ["best", "mid", "worst", "nothing"]
    assert [s.tagger for s in summarise(reversed(results))] == ["best", "mid", "worst", "nothing"]


def test_ties_are_broken_by_name() -> None:
    tied = [scored("b", 1, {"x"}, {"x"}), scored("a", 1, {"x"}, {"x"}), unscored("d", 1, "error"),
            unscored("c", 1, "skipped")]
    assert [s.tagger for s in summarise(tied)] == ["a", "b", "c", "d"]


def test_format_table(results: list[PostResult]) -> None:
    lines = format_table(summarise(results))
    assert len(lines) == 2 + 4
    header = lines[0].split()
    assert header[0] == "tagger"
    for column in ("threshold", "posts", "mean", "median", "ms/image", "wrong", "practical", "rating", "pass",
                   "fail", "skip", "errors"):
        assert column in header
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert [line.split()[0] for line in lines[2:]] == ["best", "mid", "worst", "nothing"]
    mid = lines[3].split()
    # tagger threshold posts mean median ms/image wrong practical rating pass fail skip errors
    assert mid == ["mid", "0.50", "3", "0.444", "0.500", "20.0", "25.0%", "16.7%", "50.0%", "2", "1", "1", "1"]
    assert lines[5].split() == ["nothing", "0.50", "0", "-", "-", "-", "-", "-", "n/a", "0", "0", "1", "0"]
    widths = {len(line) for line in lines[:2]}
    assert len(widths) == 1  # the separator is as wide as the header


def test_summary_lines(results: list[PostResult]) -> None:
    lines = summary_lines(results, "data.db", "general", {"wd14": "onnxruntime is not installed"})
    assert lines[:2] == ["dataset: data.db", "tag scope: general"]
    assert lines[-1] == "not run: wd14: onnxruntime is not installed"
    assert len(lines) == 2 + 2 + 4 + 1
    assert summary_lines([], "data.db", "all", {})[2:] == ["no post was evaluated"]


def test_the_demo_vocabulary_is_what_demo_taggers_report() -> None:
    evaluation = session("demo-pixel")
    assert evaluation.load(evaluation.specs[0]).vocabulary == demo.vocabulary()


def test_the_dataset_category_decides_when_the_tagger_files_a_tag_elsewhere(tmp_path: Path) -> None:
    """A tag the dataset calls copyright but the tagger calls general is out of `general` scope on both sides."""
    db_path = write_dataset(tmp_path / "ds", [(1, "g", "smile")], images=[1])
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE posts SET tag_string_copyright = 'vocaloid' WHERE id = 1")
    connection.close()
    run = fixed_run({"smile": 0.9, "vocaloid": 0.9, "rating:general": 0.9},
                    {"smile": 0, "vocaloid": 0, "rating:general": 9}, scope="general")
    with Dataset(db_path) as dataset:
        result = run.evaluate(dataset, 1)
    assert result.score == 1.0
    assert result.wrong_tags == []


def test_a_nan_probability_is_an_error_not_a_silent_miss(small_dataset: Dataset) -> None:
    run = fixed_run({"some_tag": float("nan")}, None, scope="all")
    with pytest.raises(ValueError, match="NaN as the probability of 'some_tag'"):
        run.evaluate(small_dataset, 1)


def test_predictions_under_an_old_tag_name_follow_the_dataset_aliases(tmp_path: Path) -> None:
    db_path = write_dataset(tmp_path / "ds", [(1, "g", "animal_ears")], images=[1])
    with sqlite3.connect(db_path) as connection:
        connection.executemany("INSERT INTO tag_aliases VALUES (?, ?, ?)", [
            ("Animal Ear", "animal_ears", "active"),  # names are normalised
            ("cat_ear", "cat_ears", "deleted"),  # inactive aliases are ignored
        ])
    connection.close()
    opened = open_evaluation("control", dataset_path=db_path)
    try:
        assert opened.tag_aliases == {"animal_ear": "animal_ears"}
        run = TaggerRun(TaggerSettings(TaggerSpec("fixed"), 0.5, 0.0, "vocabulary"),
                        FixedTagger({"animal_ear": 0.9, "rating:general": 0.9}, {"animal_ear": 0, "rating:general": 9}),
                        opened.tag_aliases)
        result = run.evaluate(opened.dataset, 1)
        assert result.score == 1.0 and result.wrong_tags == [] and result.missed_tags == []
        assert run.vocabulary == {"animal_ears": 0, "rating:general": 9}
        without = TaggerRun(TaggerSettings(TaggerSpec("fixed"), 0.5, 0.0, "all"),
                            FixedTagger({"animal_ear": 0.9, "rating:general": 0.9}, None))
        assert without.evaluate(opened.dataset, 1).wrong_tags == ["animal_ear"]
    finally:
        opened.close()


def test_a_bad_post_read_ahead_is_reported_by_its_own_evaluation_only(tmp_path: Path) -> None:
    db_path = write_dataset(tmp_path / "ds", [(1, "g", "some_tag"), (2, "s", "some_tag"), (3, "q", "some_tag"),
                                              (4, "e", "")], images=[1, 2, 3, 4])
    with sqlite3.connect(db_path) as connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute("UPDATE posts SET rating = 'x' WHERE id = 2")
    connection.close()
    tagger = FixedTagger({"some_tag": 0.9}, None)
    run = TaggerRun(TaggerSettings(TaggerSpec("fixed"), 0.5, 0.0, "all"), tagger, batch_size=4, order=[1, 2, 3, 4])
    try:
        with Dataset(db_path) as dataset:
            assert run.evaluate(dataset, 1).score == pytest.approx(0.5)  # read 2, 3 and 4 ahead
            assert tagger.calls == 2  # posts 1 and 3: post 2 cannot be read, post 4 has nothing to score
            with pytest.raises(PostSkipped, match=r"post 2 has an invalid rating: unknown Danbooru rating 'x'"):
                run.evaluate(dataset, 2)
            assert run.evaluate(dataset, 3).score == pytest.approx(0.5)
            with pytest.raises(PostSkipped, match=r"post 4 has no tags besides its rating: a rating alone is not "):
                run.evaluate(dataset, 4)
            assert tagger.calls == 2
    finally:
        run.close()


def test_an_empty_dataset_cannot_be_evaluated(tmp_path: Path) -> None:
    db_path = write_dataset(tmp_path / "ds", [], images=[])
    with pytest.raises(DatasetError, match=r"has no posts, so there is nothing to evaluate"):
        open_evaluation("control", dataset_path=db_path)


def test_an_evaluation_of_a_directory_reads_its_data_db(small_db: Path) -> None:
    evaluation = open_evaluation("control", dataset_path=small_db.parent)
    try:
        assert evaluation.dataset_path == small_db
        assert evaluation.identity["path"] == str(small_db) and evaluation.identity["posts"] == 3
    finally:
        evaluation.close()
