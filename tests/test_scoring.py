"""The seed score `(|P ∩ T| - |P \\ T|) / |T|` and the per-post counts behind the summary."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tagger_eval.scoring.post_score import PostScore, score, score_post

# Tag names: short Danbooru-like names over a small alphabet (so predicted and truth overlap often), plus ratings.
RATINGS = ["rating:general", "rating:sensitive", "rating:questionable", "rating:explicit"]
plain_tags = st.text(alphabet="abcdefgh_", min_size=1, max_size=4)
tag_names = st.one_of(plain_tags, st.sampled_from(RATINGS))
tag_sets = st.frozensets(tag_names, max_size=12)
nonempty_tag_sets = st.frozensets(tag_names, min_size=1, max_size=12)


def reference_score(predicted: list[str], truth: list[str]) -> Fraction:
    """An independent loop-based reading of the formula, exact (Fraction), over lists that may repeat tags."""
    truth_unique: list[str] = []
    for tag in truth:
        if tag not in truth_unique:
            truth_unique.append(tag)
    seen: list[str] = []
    correct = incorrect = 0
    for tag in predicted:
        if tag in seen:
            continue
        seen.append(tag)
        if tag in truth_unique:
            correct += 1
        else:
            incorrect += 1
    return Fraction(correct - incorrect, len(truth_unique))


# --- hand-worked examples -------------------------------------------------------------------------------------


def test_worked_example_one_wrong_two_right_of_four():
    # P ∩ T = {a, b} (2), P \ T = {x} (1), |T| = 4 -> (2 - 1) / 4
    assert score({"a", "b", "x"}, {"a", "b", "c", "d"}) == 0.25


def test_worked_example_more_wrong_than_right_is_negative():
    # P ∩ T = {a} (1), P \ T = {x, y, z} (3), |T| = 2 -> (1 - 3) / 2
    assert score(["a", "x", "y", "z"], ["a", "b"]) == -1.0


def test_worked_example_perfect_and_superset():
    assert score(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    # every truth tag plus one extra: (3 - 1) / 3
    assert score(["a", "b", "c", "extra"], ["a", "b", "c"]) == pytest.approx(2 / 3, rel=1e-15)


def test_worked_example_empty_prediction_scores_zero():
    assert score([], ["a", "b", "c"]) == 0.0


def test_worked_example_duplicates_count_once():
    # as sets: P = {a, x}, T = {a, b} -> (1 - 1) / 2 = 0, not (2 - 2) / 3 or similar
    assert score(["a", "a", "x", "x"], ["a", "b", "b"]) == 0.0
    # P = {a}, T = {a, b}: 1/2, whatever the repetition
    assert score(["a", "a", "a"], ["b", "a", "b"]) == 0.5


def test_rating_is_an_ordinary_tag_in_the_score():
    # a wrong rating costs 1/|T| like any wrong tag: (1 - 1) / 2
    assert score(["a", "rating:explicit"], ["a", "rating:general"]) == 0.0
    # the right rating earns like any right tag: (2 - 0) / 2
    assert score(["a", "rating:general"], ["a", "rating:general"]) == 1.0


@pytest.mark.parametrize("predicted", [[], ["a"], ["rating:general"]])
def test_empty_truth_raises(predicted):
    with pytest.raises(ValueError, match="empty truth"):
        score(predicted, [])


def test_score_post_empty_truth_raises():
    with pytest.raises(ValueError, match="empty truth"):
        score_post(["a"], set())


def test_score_post_worked_counts_with_wrong_rating():
    predicted = ["long_hair", "smile", "hat", "rating:explicit"]
    truth = ["long_hair", "smile", "solo", "1girl", "rating:general"]
    # correct: long_hair, smile (2); incorrect: hat, rating:explicit (2); missed: solo, 1girl, rating:general (3)
    result = score_post(predicted, truth)
    assert result == PostScore(
        score=(2 - 2) / 5,
        correct=2,
        incorrect=2,
        missed=3,
        truth_size=5,
        predicted_size=4,
        rating_predicted=True,
        rating_correct=False,
        practical_incorrect=1,  # hat only: the wrong rating is left out
        practical_predicted=3,  # long_hair, smile, hat
    )


def test_score_post_worked_counts_with_right_rating():
    predicted = ["long_hair", "hat", "skirt", "rating:general"]
    truth = ["long_hair", "solo", "rating:general"]
    # correct: long_hair, rating:general (2); incorrect: hat, skirt (2); missed: solo (1); (2 - 2) / 3 = 0
    result = score_post(predicted, truth)
    assert result.score == 0.0
    assert (result.correct, result.incorrect, result.missed) == (2, 2, 1)
    assert (result.truth_size, result.predicted_size) == (3, 4)
    assert result.rating_predicted is True
    assert result.rating_correct is True
    assert result.practical_incorrect == 2
    assert result.practical_predicted == 3


def test_score_post_no_rating_predicted():
    result = score_post(["a", "x", "x"], ["a", "b", "rating:sensitive"])
    # (1 - 1) / 3; the missed rating is a plain miss, not a rating error
    assert result.score == 0.0
    assert (result.correct, result.incorrect, result.missed) == (1, 1, 2)
    assert result.predicted_size == 2
    assert result.rating_predicted is False
    assert result.rating_correct is False
    assert result.practical_incorrect == 1
    assert result.practical_predicted == 2


def test_score_post_two_ratings_one_right():
    # a prediction with two ratings, one of them right: rating_correct, but the wrong one is still incorrect
    result = score_post(["rating:general", "rating:explicit"], ["rating:general", "a"])
    assert result.score == 0.0  # (1 - 1) / 2
    assert result.rating_predicted is True
    assert result.rating_correct is True
    assert result.incorrect == 1
    assert result.practical_incorrect == 0
    assert result.practical_predicted == 0


def test_score_post_to_dict_has_every_field():
    result = score_post(["a", "rating:general"], ["a", "b", "rating:general"])
    assert result.to_dict() == {
        "score": 2 / 3,
        "correct": 2,
        "incorrect": 0,
        "missed": 1,
        "truth_size": 3,
        "predicted_size": 2,
        "rating_predicted": True,
        "rating_correct": True,
        "practical_incorrect": 0,
        "practical_predicted": 1,
    }


# --- properties -----------------------------------------------------------------------------------------------


@given(nonempty_tag_sets)
def test_perfect_prediction_scores_exactly_one(truth):
    assert score(truth, truth) == 1.0


@given(tag_sets, nonempty_tag_sets)
def test_score_bounds(predicted, truth):
    value = score(predicted, truth)
    assert value <= 1.0
    assert value >= -len(predicted) / len(truth)
    # the upper bound is reached only by the perfect prediction
    assert (value == 1.0) == (predicted == truth)


@given(nonempty_tag_sets)
def test_empty_prediction_scores_zero(truth):
    assert score(set(), truth) == 0.0
    assert score([], list(truth)) == 0.0


@given(tag_sets, nonempty_tag_sets, st.data())
def test_adding_a_true_tag_never_lowers_the_score(predicted, truth, data):
    unpredicted_truth = sorted(truth - predicted)
    assume(unpredicted_truth)
    tag = data.draw(st.sampled_from(unpredicted_truth))
    before, after = score(predicted, truth), score(predicted | {tag}, truth)
    assert after >= before
    # and by exactly 1/|T|
    assert math.isclose(after - before, 1 / len(truth), rel_tol=1e-9)
    assert reference_score(sorted(predicted | {tag}), sorted(truth)) - reference_score(
        sorted(predicted), sorted(truth)
    ) == Fraction(1, len(truth))


@given(tag_sets, nonempty_tag_sets, tag_names)
def test_adding_a_false_tag_lowers_the_score_by_one_over_truth(predicted, truth, tag):
    assume(tag not in truth and tag not in predicted)
    before, after = score(predicted, truth), score(predicted | {tag}, truth)
    assert after < before
    assert math.isclose(before - after, 1 / len(truth), rel_tol=1e-9, abs_tol=1e-12)
    exact_drop = reference_score(sorted(predicted), sorted(truth)) - reference_score(
        sorted(predicted | {tag}), sorted(truth)
    )
    assert exact_drop == Fraction(1, len(truth))


@given(tag_sets, nonempty_tag_sets)
def test_matches_loop_reference(predicted, truth):
    expected = reference_score(sorted(predicted), sorted(truth))
    assert math.isclose(score(predicted, truth), float(expected), rel_tol=1e-12, abs_tol=1e-15)


@given(st.lists(tag_names, max_size=15), st.lists(tag_names, min_size=1, max_size=15))
def test_matches_loop_reference_on_lists_with_duplicates(predicted, truth):
    expected = reference_score(predicted, truth)
    assert math.isclose(score(predicted, truth), float(expected), rel_tol=1e-12, abs_tol=1e-15)


@given(tag_sets, nonempty_tag_sets, st.randoms(use_true_random=False), st.data())
def test_order_and_duplicates_do_not_matter(predicted, truth, rnd, data):
    extra_p = data.draw(st.lists(st.sampled_from(sorted(predicted)), max_size=5)) if predicted else []
    extra_t = data.draw(st.lists(st.sampled_from(sorted(truth)), max_size=5))
    predicted_list = sorted(predicted) + extra_p
    truth_list = sorted(truth) + extra_t
    rnd.shuffle(predicted_list)
    rnd.shuffle(truth_list)
    assert score(predicted_list, truth_list) == score(predicted, truth)
    assert score_post(predicted_list, truth_list) == score_post(predicted, truth)


@given(tag_sets, nonempty_tag_sets)
def test_score_post_counts_are_consistent_and_split_out_ratings(predicted, truth):
    result = score_post(predicted, truth)
    assert result.score == score(predicted, truth)
    assert result.truth_size == len(truth)
    assert result.predicted_size == len(predicted)
    assert result.correct + result.missed == result.truth_size
    assert result.correct + result.incorrect == result.predicted_size
    assert result.score == (result.correct - result.incorrect) / result.truth_size
    assert 0 <= result.practical_incorrect <= result.incorrect
    assert 0 <= result.practical_predicted <= result.predicted_size
    assert result.practical_incorrect <= result.practical_predicted
    # ratings, counted apart (an independent reading of the `rating:` prefix)
    predicted_ratings = {tag for tag in predicted if tag.startswith("rating:")}
    wrong = predicted - truth
    assert result.rating_predicted == bool(predicted_ratings)
    assert result.rating_correct == bool(predicted_ratings & truth)
    assert result.practical_predicted == len(predicted) - len(predicted_ratings)
    assert result.practical_incorrect == len(wrong) - len(wrong & predicted_ratings)
