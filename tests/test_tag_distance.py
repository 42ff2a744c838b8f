"""The tag-distance ("soft") score and the co-occurrence similarity behind it (`tagger_eval.scoring.tag_distance`)."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tagger_eval.data.dataset import Dataset
from tagger_eval.run.evaluation import DEFAULT_DATASET, PostResult
from tagger_eval.scoring.post_score import score
from tagger_eval.scoring.tag_distance import (
    Similarity,
    TagSimilarity,
    soft_score,
    soft_score_from_errors,
    soft_scores,
)
from tagger_eval.tags import is_rating

MATCHINGS = ["max", "one-to-one"]


class TableSimilarity:
    """A hand-written similarity: listed unordered pairs, 0 for every other pair, 1 for a tag and itself."""

    def __init__(self, table: dict[frozenset[str], float] | None = None) -> None:
        self.table = dict(table or {})

    def similarity(self, a: str, b: str) -> float:
        return 1.0 if a == b else self.table.get(frozenset((a, b)), 0.0)


def table(**pairs: float) -> TableSimilarity:
    """`table(a__b=0.5)` is sim(a, b) = 0.5 (tag names here have no double underscores)."""
    return TableSimilarity({frozenset(name.split("__")): value for name, value in pairs.items()})


class ScalarOnly:
    """Hides `TagSimilarity.matrix`, so `soft_score` has to call `similarity` pair by pair."""

    def __init__(self, inner: TagSimilarity) -> None:
        self.inner = inner

    def similarity(self, a: str, b: str) -> float:
        return self.inner.similarity(a, b)


# --- hand-worked soft scores ---------------------------------------------------------------------------------------


def test_worked_example_near_miss_earns_more_than_an_unrelated_tag():
    truth = {"long_hair", "smile", "rating:general"}
    predicted = {"very_long_hair", "smile", "hat", "rating:general"}
    similarity = table(very_long_hair__long_hair=0.5, hat__long_hair=0.125, hat__smile=0.75)
    # P ∩ T = {smile, rating:general} (2); wrong = {very_long_hair, hat}; missed = {long_hair}.
    # s(very_long_hair) = sim(., long_hair) = 0.5; s(hat) = sim(hat, long_hair) = 0.125: smile was predicted, so
    # hat's 0.75 to smile does not count. Penalty (1 - 0.5) + (1 - 0.125) = 1.375 -> (2 - 1.375) / 3 = 0.625 / 3.
    assert soft_score(predicted, truth, similarity) == 0.625 / 3
    # the seed: (2 - 2) / 3 = 0
    assert score(predicted, truth) == 0.0
    # one-to-one: long_hair gives its credit to one wrong tag only, the best pairing very_long_hair (0.5);
    # hat is unmatched: (2 - 0.5 - 1) / 3 = 0.5 / 3
    assert soft_score(predicted, truth, similarity, matching="one-to-one") == 0.5 / 3


def test_worked_example_near_duplicate_of_a_predicted_tag_earns_nothing():
    # every true tag predicted: no missed tag to lean on, very_long_hair is a plain wrong tag: (2 - 1) / 2
    similarity = table(very_long_hair__long_hair=1.0)
    predicted, truth = {"long_hair", "very_long_hair", "smile"}, {"long_hair", "smile"}
    assert soft_score(predicted, truth, similarity) == 0.5 == score(predicted, truth)


def test_worked_example_credit_from_the_closest_missed_tag():
    # T = {a, b, c}, P = {a, x}: missed {b, c}; s(x) = max(0.25, 0.75) = 0.75 -> (1 - 0.25) / 3 = 0.25
    similarity = table(x__b=0.25, x__c=0.75)
    assert soft_score(["a", "x"], ["a", "b", "c"], similarity) == 0.25


def test_worked_example_wrong_rating_gets_no_credit():
    # the similarity claims the two ratings are close; the score ignores it: (1 - 1) / 2 = 0, as the seed says
    similarity = table(**{"rating:sensitive__rating:general": 0.875, "a__rating:general": 0.5})
    assert soft_score(["a", "rating:sensitive"], ["a", "rating:general"], similarity) == 0.0
    # and a missed rating gives no credit to a wrong plain tag: (1 - 1) / 2
    assert soft_score(["a", "x"], ["a", "rating:general"], table(**{"x__rating:general": 1.0})) == 0.0


def test_max_rule_lets_several_wrong_tags_share_one_donor_and_one_to_one_does_not():
    similarity = table(x__a=0.75, y__a=0.75)
    # max: both x and y lean on the missed a: (0 - 0.25 - 0.25) / 1 = -0.5
    assert soft_score({"x", "y"}, {"a"}, similarity) == -0.5
    # predicting a as well takes the donor away: (1 - 1 - 1) / 1 = -1, LOWER than without the correct tag
    assert soft_score({"a", "x", "y"}, {"a"}, similarity) == -1.0
    # one-to-one: a credits one of them: (0 - 0.25 - 1) / 1 = -1.25, and adding a correct tag does not hurt: -1
    assert soft_score({"x", "y"}, {"a"}, similarity, matching="one-to-one") == -1.25
    assert soft_score({"a", "x", "y"}, {"a"}, similarity, matching="one-to-one") == -1.0


def test_one_to_one_finds_the_best_pairing_not_the_greedy_one():
    # greedy (x takes its best, a) would leave y with nothing: 0.875 + 0; the best pairing is x-b, y-a: 0.75 + 0.75
    similarity = table(x__a=0.875, x__b=0.75, y__a=0.75)
    # (0 - 0.25 - 0.25) / 2
    assert soft_score({"x", "y"}, {"a", "b"}, similarity, matching="one-to-one") == -0.25
    # more wrong tags than missed ones (the matcher works on the transposed table): x-a, y unmatched, z unmatched
    similarity = table(x__a=0.5, y__a=0.25)
    assert soft_score({"x", "y", "z"}, {"a"}, similarity, matching="one-to-one") == (0 - 0.5 - 1 - 1) / 1


@pytest.mark.parametrize("predicted", [[], ["a"], ["rating:general"]])
def test_empty_truth_raises(predicted):
    with pytest.raises(ValueError, match="empty truth"):
        soft_score(predicted, [], TableSimilarity())


@pytest.mark.parametrize("value", [-0.125, 1.5, math.nan])
def test_similarity_outside_unit_interval_is_refused(value):
    with pytest.raises(ValueError, match="outside"):
        soft_score(["x"], ["a"], table(x__a=value))


def test_unknown_matching_is_refused():
    with pytest.raises(ValueError, match="matching"):
        soft_score(["x"], ["a"], TableSimilarity(), matching="greedy")


def test_similarity_protocol_is_the_extension_point():
    assert isinstance(TableSimilarity(), Similarity)
    assert isinstance(TagSimilarity.from_posts([["a", "b"]]), Similarity)


# --- properties of the soft score ----------------------------------------------------------------------------------

TAGS = ["a", "b", "c", "d", "e", "f", "rating:general", "rating:sensitive"]
tag_sets = st.frozensets(st.sampled_from(TAGS), max_size=6)
nonempty_tag_sets = st.frozensets(st.sampled_from(TAGS), min_size=1, max_size=6)
# Dyadic values (k/16): every sum and difference below is exact in floats, so properties can be checked with ==.
dyadic = st.integers(0, 16).map(lambda k: k / 16)
pairs = st.tuples(st.sampled_from(TAGS), st.sampled_from(TAGS)).filter(lambda pair: pair[0] != pair[1]).map(frozenset)
similarity_tables = st.dictionaries(pairs, dyadic, max_size=20).map(TableSimilarity)
matchings = st.sampled_from(MATCHINGS)


def reference_soft_score(predicted, truth, similarity, matching) -> Fraction:
    """An independent, exact reading of the formula; one-to-one by trying every matching (memoised over subsets)."""
    wrong = [p for p in predicted if p not in truth]
    missed = [t for t in truth if t not in predicted]

    def s(p: str, t: str) -> Fraction:
        return Fraction(0) if is_rating(p) or is_rating(t) else Fraction(similarity.similarity(p, t))

    if matching == "max":
        credit = sum((max((s(p, t) for t in missed), default=Fraction(0)) for p in wrong), Fraction(0))
    else:
        @cache
        def best(k: int, used: frozenset[int]) -> Fraction:
            if k == len(wrong):
                return Fraction(0)
            options = [best(k + 1, used)]  # wrong[k] unmatched
            options += [s(wrong[k], missed[j]) + best(k + 1, used | {j}) for j in range(len(missed)) if j not in used]
            return max(options)

        credit = best(0, frozenset())
    correct = len(set(predicted) & set(truth))
    return (correct - (len(wrong) - credit)) / len(truth)


@given(tag_sets, nonempty_tag_sets, similarity_tables, matchings)
def test_matches_the_reference(predicted, truth, similarity, matching):
    # with dyadic similarities everything is exact up to the final division by |T|, rounded once on both sides
    assert soft_score(predicted, truth, similarity, matching=matching) == float(reference_soft_score(
        predicted, truth, similarity, matching))


@given(tag_sets, nonempty_tag_sets, matchings)
def test_equals_the_seed_score_when_every_similarity_is_zero(predicted, truth, matching):
    assert soft_score(predicted, truth, TableSimilarity(), matching=matching) == score(predicted, truth)


@given(tag_sets, nonempty_tag_sets, similarity_tables, matchings)
def test_between_the_seed_score_and_one(predicted, truth, similarity, matching):
    soft = soft_score(predicted, truth, similarity, matching=matching)
    assert score(predicted, truth) <= soft <= 1.0
    assert soft >= -len(predicted) / len(truth)


@given(nonempty_tag_sets, similarity_tables, matchings)
def test_control_scores_exactly_one(truth, similarity, matching):
    assert soft_score(truth, truth, similarity, matching=matching) == 1.0


@given(st.lists(st.sampled_from(TAGS), max_size=8), st.lists(st.sampled_from(TAGS), min_size=1, max_size=8),
       similarity_tables, matchings, st.randoms(use_true_random=False))
def test_order_and_duplicates_do_not_matter(predicted, truth, similarity, matching, rng):
    shuffled_predicted = predicted + predicted[: rng.randint(0, len(predicted))]
    shuffled_truth = truth + truth[: rng.randint(0, len(truth))]
    rng.shuffle(shuffled_predicted)
    rng.shuffle(shuffled_truth)
    assert soft_score(shuffled_predicted, shuffled_truth, similarity, matching=matching) == soft_score(
        set(predicted), set(truth), similarity, matching=matching)


@given(tag_sets, nonempty_tag_sets, similarity_tables, pairs, dyadic, matchings)
def test_monotone_in_the_similarity(predicted, truth, similarity, pair, raised, matching):
    before = soft_score(predicted, truth, similarity, matching=matching)
    higher = TableSimilarity(similarity.table)
    higher.table[pair] = max(raised, similarity.table.get(pair, 0.0))
    assert soft_score(predicted, truth, higher, matching=matching) >= before


@given(tag_sets, nonempty_tag_sets, similarity_tables, st.sampled_from(TAGS), matchings)
def test_adding_a_wrong_tag_never_raises_the_score(predicted, truth, similarity, extra, matching):
    assume(extra not in truth)
    assert soft_score(predicted | {extra}, truth, similarity, matching=matching) <= soft_score(
        predicted, truth, similarity, matching=matching)


@given(tag_sets, nonempty_tag_sets, similarity_tables)
def test_one_to_one_never_above_max_and_adding_a_true_tag_never_lowers_it(predicted, truth, similarity):
    strict = soft_score(predicted, truth, similarity, matching="one-to-one")
    assert score(predicted, truth) <= strict <= soft_score(predicted, truth, similarity)
    for extra in truth - predicted:
        assert soft_score(predicted | {extra}, truth, similarity, matching="one-to-one") >= strict


@given(tag_sets, nonempty_tag_sets, similarity_tables, matchings)
def test_rating_tags_never_earn_or_give_credit(predicted, truth, similarity, matching):
    without_ratings = TableSimilarity({pair: value for pair, value in similarity.table.items()
                                       if not any(is_rating(tag) for tag in pair)})
    assert soft_score(predicted, truth, similarity, matching=matching) == soft_score(
        predicted, truth, without_ratings, matching=matching)


@given(tag_sets, nonempty_tag_sets, similarity_tables, matchings)
def test_from_errors_and_from_results_agree_with_soft_score(predicted, truth, similarity, matching):
    expected = soft_score(predicted, truth, similarity, matching=matching)
    wrong, missed = sorted(predicted - truth), sorted(truth - predicted)
    correct = len(predicted & truth)
    assert soft_score_from_errors(correct, len(truth), wrong, missed, similarity, matching=matching) == expected
    result = PostResult(tagger="t", post=1, status="scored", floor=0.0, threshold=0.5,
                        counts={"correct": correct, "truth_size": len(truth)}, missed_tags=missed, wrong_tags=wrong)
    skipped = PostResult(tagger="t", post=2, status="skipped", floor=0.0, threshold=0.5, reason="no image")
    entry = {"status": "scored", "correct": correct, "truth_size": len(truth), "missed_tags": missed,
             "wrong_tags": wrong}
    assert soft_scores([result, skipped, entry], similarity, matching=matching) == [expected, expected]


# --- the co-occurrence similarity ----------------------------------------------------------------------------------

PLAIN = ["a", "b", "c", "d", "e", "f", "g"]
post_lists = st.lists(st.lists(st.sampled_from([*PLAIN, "rating:general", "rating:explicit"]), max_size=7),
                      max_size=25)


def brute_force_similarity(posts, a, b, min_count, measure):
    """Counts by scanning every post, straight from the definitions in `TagSimilarity`'s docstring."""
    if a == b:
        return 1.0
    if is_rating(a) or is_rating(b):
        return 0.0
    count_a = sum(1 for post in posts if a in post)
    count_b = sum(1 for post in posts if b in post)
    both = sum(1 for post in posts if a in post and b in post)
    if count_a < min_count or count_b < min_count:
        return 0.0
    if measure == "cosine":
        return both / math.sqrt(count_a * count_b)
    return both / (count_a + count_b - both)


@given(post_lists, st.integers(1, 3), st.sampled_from(["cosine", "jaccard"]))
def test_similarity_matches_brute_force_counting(posts, min_count, measure):
    similarity = TagSimilarity.from_posts(posts, min_count=min_count, measure=measure)
    names = [*PLAIN, "rating:general", "rating:explicit", "unseen"]
    for a, b in itertools.product(names, repeat=2):
        expected = brute_force_similarity(posts, a, b, min_count, measure)
        assert similarity.similarity(a, b) == pytest.approx(expected, rel=1e-12, abs=0)
        assert similarity.similarity(a, b) == similarity.similarity(b, a)
        assert 0.0 <= similarity.similarity(a, b) <= 1.0
        if not is_rating(a) and not is_rating(b):
            assert similarity.cooccurrence(a, b) == sum(1 for post in posts if a in post and b in post)
    # the vectorised table is the scalar similarity, value for value
    expected_matrix = [[similarity.similarity(a, b) for b in names] for a in names]
    assert similarity.matrix(names, names).tolist() == expected_matrix


@given(post_lists, st.integers(1, 3))
def test_one_only_for_tags_that_always_appear_together(posts, min_count):
    similarity = TagSimilarity.from_posts(posts, min_count=min_count)
    for a, b in itertools.combinations(PLAIN, 2):
        always_together = all((a in post) == (b in post) for post in posts)
        seen_enough = sum(1 for post in posts if a in post) >= min_count
        assert (similarity.similarity(a, b) == 1.0) == (always_together and seen_enough)


def test_min_count_silences_rare_tags():
    posts = [["a", "b"], ["a", "c"], ["a", "c"]]
    assert TagSimilarity.from_posts(posts, min_count=1).similarity("a", "b") == 1 / math.sqrt(3)
    assert TagSimilarity.from_posts(posts, min_count=2).similarity("a", "b") == 0.0  # b is on one post only
    assert TagSimilarity.from_posts(posts, min_count=2).similarity("a", "c") == 2 / math.sqrt(6)
    assert TagSimilarity.from_posts(posts, min_count=2, measure="jaccard").similarity("a", "c") == 2 / 3


def test_a_tag_is_fully_similar_to_itself_even_unseen():
    similarity = TagSimilarity.from_posts([])
    assert similarity.similarity("anything", "anything") == 1.0
    assert similarity.similarity("rating:general", "rating:general") == 1.0
    assert similarity.similarity("a", "b") == 0.0
    assert similarity.matrix(["a", "b"], ["b"]).tolist() == [[0.0], [1.0]]


def test_rating_tags_are_similar_to_nothing_else():
    posts = [["rating:general", "a"], ["rating:general", "a"], ["rating:explicit", "b"]] * 3
    similarity = TagSimilarity.from_posts(posts, min_count=1)
    assert similarity.count("rating:general") == 6
    assert similarity.similarity("rating:general", "a") == 0.0  # always together, still 0
    assert similarity.cooccurrence("rating:general", "a") == 0  # ratings form no pairs at all
    assert similarity.matrix(["rating:general"], ["a", "b"]).tolist() == [[0.0, 0.0]]


def test_a_string_is_not_a_tag_set():
    with pytest.raises(TypeError, match="collection of tag names"):
        TagSimilarity.from_posts(["long_hair"])


@pytest.mark.parametrize(("kwargs", "match"), [({"min_count": 0}, "min_count"), ({"measure": "pmi"}, "measure")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TagSimilarity.from_posts([["a", "b"]], **kwargs)


@given(st.lists(st.lists(st.sampled_from(PLAIN), max_size=7), max_size=30), st.integers(1, 40))
def test_chunked_pair_counting_gives_the_same_counts(posts, reduce_at):
    whole = TagSimilarity.from_posts(posts, min_count=1)
    original = TagSimilarity._REDUCE_AT
    TagSimilarity._REDUCE_AT = reduce_at  # tiny chunks: many partial reductions merged at the end
    try:
        chunked = TagSimilarity.from_posts(posts, min_count=1)
    finally:
        TagSimilarity._REDUCE_AT = original
    assert chunked.matrix(PLAIN, PLAIN).tolist() == whole.matrix(PLAIN, PLAIN).tolist()


@given(post_lists, tag_sets, nonempty_tag_sets, matchings)
def test_soft_score_with_the_vectorised_table_equals_pair_by_pair(posts, predicted, truth, matching):
    similarity = TagSimilarity.from_posts(posts, min_count=1)
    assert soft_score(predicted, truth, similarity, matching=matching) == soft_score(
        predicted, truth, ScalarOnly(similarity), matching=matching)


# --- on the bundled demo dataset -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_posts() -> list[frozenset[str]]:
    with Dataset(DEFAULT_DATASET) as dataset:
        return [post.truth for post in dataset]


@pytest.fixture(scope="module")
def demo_similarity() -> TagSimilarity:
    with Dataset(DEFAULT_DATASET) as dataset:
        return TagSimilarity.from_dataset(dataset)


@pytest.mark.parametrize(("character", "shape"), [("sunny_(tagger-eval)", "yellow_circle"),
                                                  ("ruby_star_(tagger-eval)", "red_star"),
                                                  ("emerald_(tagger-eval)", "green_triangle")])
def test_demo_characters_are_fully_similar_to_their_shape(demo_similarity, demo_posts, character, shape):
    # in the demo a character tag is exactly its colour_shape pair, so the two always appear together
    assert all((character in post) == (shape in post) for post in demo_posts)
    assert demo_similarity.similarity(character, shape) == 1.0
    others = sorted(demo_similarity.tags - {character})
    similarities = demo_similarity.matrix([character], others)[0]
    fully_similar = [tag for tag, value in zip(others, similarities, strict=True) if value == 1.0]
    assert fully_similar == [shape]


def test_demo_never_cooccurring_tags_are_not_similar(demo_similarity, demo_posts):
    tags = sorted(demo_similarity.tags)
    never = [(a, b) for a, b in itertools.combinations(tags, 2)
             if not any(a in post and b in post for post in demo_posts)]
    assert ("red_border", "yellow_border") in never  # one frame per post
    assert all(demo_similarity.similarity(a, b) == 0.0 for a, b in never)
    # and every pair agrees with counting over the posts
    matrix = demo_similarity.matrix(tags, tags)
    for (i, a), (j, b) in itertools.product(enumerate(tags), repeat=2):
        assert matrix[i, j] == pytest.approx(brute_force_similarity(demo_posts, a, b, 2, "cosine"), rel=1e-12)


def test_demo_rating_and_its_frame_always_together_but_not_similar(demo_similarity, demo_posts):
    assert all(("rating:sensitive" in post) == ("yellow_border" in post) for post in demo_posts)
    assert demo_similarity.similarity("rating:sensitive", "yellow_border") == 0.0


def test_demo_soft_score_gives_a_near_miss_partial_credit(demo_similarity):
    # a tagger that saw a yellow circle but named the shape instead of the character: the wrong yellow_circle earns
    # credit 1 (always together with sunny) and so costs nothing, but sunny is still missed: (2 - 0) / 3
    truth = {"sunny_(tagger-eval)", "circle", "rating:general"}
    assert soft_score({"yellow_circle", "circle", "rating:general"}, truth, demo_similarity) == 2 / 3
    # a red triangle never shares a post with sunny: a full wrong tag, as in the seed: (2 - 1) / 3
    assert soft_score({"red_triangle", "circle", "rating:general"}, truth, demo_similarity) == 1 / 3
    # a square shares 5 posts with sunny (c(square) = 49, c(sunny) = 15): s = 5 / sqrt(49 * 15) ~ 0.18
    assert demo_similarity.cooccurrence("square", "sunny_(tagger-eval)") == 5
    assert soft_score({"square", "circle", "rating:general"}, truth, demo_similarity) == pytest.approx(
        (2 - (1 - 5 / math.sqrt(49 * 15))) / 3, rel=1e-12)


# --- scale (a sanity check, not a timing assertion) ----------------------------------------------------------------


def test_thirty_thousand_posts_of_thirty_tags():
    """Danbooru-sized input: 30,000 posts x ~30 tags of a Zipf-like 5,000-tag vocabulary (13 million pairs).

    Counted values are checked against brute force on a sample of pairs; how long it takes is not asserted
    (about a second here), but a quadratic or pure-Python pair loop would make this test take minutes.
    """
    rng = np.random.default_rng(2021)
    vocabulary = np.array([f"tag{i}" for i in range(5000)])
    weights = 1 / np.arange(1, 5001)
    draws = rng.choice(5000, size=(30000, 34), p=weights / weights.sum())  # ~30 distinct per post after dedup
    ratings = rng.choice(["rating:general", "rating:sensitive"], size=30000)
    posts = [{*vocabulary[row].tolist(), rating} for row, rating in zip(draws, ratings, strict=True)]
    similarity = TagSimilarity.from_posts(posts)
    assert similarity.posts == 30000
    sample = random.Random(0)
    names = sorted(similarity.tags - {"rating:general", "rating:sensitive"})
    for a, b in [("tag0", "tag1"), ("tag0", "tag4999"), *(sample.sample(names, 2) for _ in range(20))]:
        assert similarity.similarity(a, b) == pytest.approx(brute_force_similarity(posts, a, b, 2, "cosine"),
                                                            rel=1e-12)
    scores = [soft_score(post - {"tag0"} | {"tag1"}, post, similarity) for post in posts[:2000]]
    assert all(-1 <= value <= 1 for value in scores)
