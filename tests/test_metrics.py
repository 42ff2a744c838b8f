"""`scoring.threshold_metrics`: hand-worked examples, a slow loop-based reference, scikit-learn, and properties."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tagger_eval.scoring import threshold_metrics as metrics
from tagger_eval.scoring.post_score import score
from tagger_eval.scoring.sparse_ranking import match_truth
from tagger_eval.scoring.threshold_metrics import (
    PredictionSet,
    average_precision,
    best_score_threshold,
    pr_breakeven,
    scores_at,
    subset_mask,
    tagger_metrics,
)
from tagger_eval.tags import CHARACTER, GENERAL, RATING

# The references see degenerate cases on purpose (one label only, no positive): sklearn warns, the tests assert.
pytestmark = pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")

NAMES = ("precision", "recall", "f1", "f2", "mcc", "accuracy")
UNSTORED = np.nan  # in the dense test matrices: a probability below the storage floor (counts as 0)


def make_set(
    prob: np.ndarray,
    truth: np.ndarray,
    categories=None,
    names=None,
    frequency_rank=None,
    seed: int | None = 0,
) -> PredictionSet:
    """A PredictionSet from a dense probability matrix (NaN = not stored) and a dense truth matrix.

    The sparse entries are shuffled (seed) so that nothing relies on their order.
    """
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    n_posts, n_tags = prob.shape
    if categories is None:
        categories = [GENERAL] * n_tags
    if names is None:
        names = tuple(f"rating:r{j}" if categories[j] == RATING else f"tag{j}" for j in range(n_tags))
    pred_post, pred_tag = np.nonzero(~np.isnan(prob))
    true_post, true_tag = np.nonzero(truth)
    rng = np.random.default_rng(seed)
    order = rng.permutation(pred_post.size) if seed is not None else np.arange(pred_post.size)
    true_order = rng.permutation(true_post.size) if seed is not None else np.arange(true_post.size)
    return PredictionSet(
        n_posts=n_posts,
        tags=tuple(names),
        categories=np.asarray(categories),
        pred_post=pred_post[order].astype(np.int32),
        pred_tag=pred_tag[order].astype(np.int32),
        pred_prob=prob[pred_post[order], pred_tag[order]].astype(np.float32),
        true_post=true_post[true_order].astype(np.int32),
        true_tag=true_tag[true_order].astype(np.int32),
        frequency_rank=None if frequency_rank is None else np.asarray(frequency_rank),
    )


def dense(ps: PredictionSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities with 0 for unstored, stored mask, truth) as dense matrices, float64 of the float32 values."""
    prob = np.zeros((ps.n_posts, len(ps.tags)))
    stored = np.zeros(prob.shape, dtype=bool)
    truth = np.zeros(prob.shape, dtype=bool)
    prob[ps.pred_post, ps.pred_tag] = ps.pred_prob.astype(np.float64)
    stored[ps.pred_post, ps.pred_tag] = True
    truth[ps.true_post, ps.true_tag] = True
    return prob, stored, truth


# --- the slow reference: plain Python loops over dense matrices -----------------------------------------------------


def ref_rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    def div(a: float, b: float) -> float:
        return a / b if b else 0.0

    marginals = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return {
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "f2": div(5 * tp, 5 * tp + 4 * fn + fp),
        "mcc": (tp * tn - fp * fn) / math.sqrt(marginals) if marginals else 0.0,
        "accuracy": div(tp + tn, tp + fp + fn + tn),
    }


def ref_counts(prob, truth, threshold: float, column: int) -> tuple[int, int, int, int]:
    tp = fp = fn = tn = 0
    for row in range(prob.shape[0]):
        predicted = prob[row][column] > threshold
        actual = bool(truth[row][column])
        if predicted and actual:
            tp += 1
        elif predicted:
            fp += 1
        elif actual:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def ref_scores_at(ps: PredictionSet, threshold: float, mask) -> dict:
    prob, _, truth = dense(ps)
    columns = [j for j in range(len(ps.tags)) if mask[j]]
    pooled = [0, 0, 0, 0]
    per_tag = []
    for j in columns:
        counts = ref_counts(prob, truth, threshold, j)
        pooled = [a + b for a, b in zip(pooled, counts, strict=True)]
        if counts[0] + counts[2] > 0:
            per_tag.append(ref_rates(*counts))
    return {
        "micro": ref_rates(*pooled),
        "macro": {name: sum(r[name] for r in per_tag) / len(per_tag) if per_tag else 0.0 for name in NAMES},
        "tags": len(per_tag),
        "positives": sum(int(truth[i][j]) for i in range(ps.n_posts) for j in columns),
    }


def ref_average_precision_1d(scores: list[float], labels: list[bool]) -> float | None:
    """scikit-learn's definition: one step per distinct score, descending: sum of (R_n - R_{n-1}) * P_n."""
    positives = sum(labels)
    if positives == 0:
        return None
    total, previous_tp = 0.0, 0
    for cut in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= cut and y)
        selected = sum(1 for s in scores if s >= cut)
        total += (tp - previous_tp) / positives * (tp / selected)
        previous_tp = tp
    return total


def ref_average_precision(ps: PredictionSet, mask) -> dict:
    prob, _, truth = dense(ps)
    columns = [j for j in range(len(ps.tags)) if mask[j]]
    per_tag = []
    for j in columns:
        value = ref_average_precision_1d(
            [prob[i][j] for i in range(ps.n_posts)], [truth[i][j] for i in range(ps.n_posts)]
        )
        if value is not None:
            per_tag.append(value)
    pooled_scores = [prob[i][j] for j in columns for i in range(ps.n_posts)]
    pooled_labels = [bool(truth[i][j]) for j in columns for i in range(ps.n_posts)]
    return {
        "macro": sum(per_tag) / len(per_tag) if per_tag else None,
        "micro": ref_average_precision_1d(pooled_scores, pooled_labels),
    }


def ref_gap(ps: PredictionSet, threshold: float, mask, average: str) -> float:
    """Precision - recall with precision 1 where nothing is predicted (the breakeven search's documented rule)."""
    prob, _, truth = dense(ps)
    counts = [ref_counts(prob, truth, threshold, j) for j in range(len(ps.tags)) if mask[j]]

    def gap(tp, fp, fn):
        return (tp / (tp + fp) if tp + fp else 1.0) - (tp / (tp + fn) if tp + fn else 0.0)

    if average == "micro":
        return gap(sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts))
    gaps = [gap(tp, fp, fn) for tp, fp, fn, _ in counts if tp + fn > 0]
    return sum(gaps) / len(gaps) if gaps else 0.0


def ref_selected(ps: PredictionSet, threshold: float) -> list[set[str]]:
    """Per post: the non-rating tags above the threshold plus the most probable stored rating (first on a tie)."""
    prob, stored, _ = dense(ps)
    selected = []
    for i in range(ps.n_posts):
        tags, rating, rating_prob = set(), None, -1.0
        for j, name in enumerate(ps.tags):
            if name.startswith("rating:") or ps.categories[j] == RATING:
                if stored[i][j] and prob[i][j] > rating_prob:
                    rating, rating_prob = name, prob[i][j]
            elif prob[i][j] > threshold:
                tags.add(name)
        if rating is not None:
            tags.add(rating)
        selected.append(tags)
    return selected


def ref_truth_names(ps: PredictionSet, truth_sizes) -> list[set[str]]:
    """Each post's truth names, padded with tags outside the label space up to truth_sizes."""
    _, _, truth = dense(ps)
    names = []
    for i in range(ps.n_posts):
        inside = {ps.tags[j] for j in range(len(ps.tags)) if truth[i][j]}
        names.append(inside | {f"outside{k}" for k in range(int(truth_sizes[i]) - len(inside))})
    return names


def ref_mean_score(ps: PredictionSet, truth_sizes, threshold: float) -> float | None:
    truth = ref_truth_names(ps, truth_sizes)
    scores = [score(p, t) for p, t in zip(ref_selected(ps, threshold), truth, strict=True) if t]
    return sum(scores) / len(scores) if scores else None


# --- hand-worked example ------------------------------------------------------------------------------------------
#
# 4 posts x 3 tags (a, b general; c character). Probabilities ("-" = not stored = 0) and truth (*):
#
#            a       b       c
#   post 0   0.9*    0.2     -
#   post 1   0.6*    -       0.8*
#   post 2   0.3     0.7*    -
#   post 3   -*      0.4*    0.1
#
# At threshold 0.5 the predictions are {0: a}, {1: a, c}, {2: b}, {3: nothing}:
#   a: truth {0, 1, 3}, predicted {0, 1}  -> TP 2  FP 0  FN 1  TN 1
#   b: truth {2, 3},    predicted {2}     -> TP 1  FP 0  FN 1  TN 2
#   c: truth {1},       predicted {1}     -> TP 1  FP 0  FN 0  TN 3
#   micro: TP 4 FP 0 FN 2 TN 6 (12 pairs): P = 1, R = 4/6, F1 = 8/10, F2 = 20/28 = 5/7,
#          MCC = (4*6 - 0) / sqrt(4 * 6 * 6 * 8) = 24 / sqrt(1152) = 1/sqrt(2), accuracy = 10/12
#   per tag: a: P 1, R 2/3, F1 0.8, F2 10/14, MCC 2/sqrt(2*3*1*2) = 1/sqrt(3), acc 3/4
#            b: P 1, R 1/2, F1 2/3, F2 5/9,   MCC 2/sqrt(1*2*2*3) = 1/sqrt(3), acc 3/4
#            c: P 1, R 1,   F1 1,   F2 1,     MCC 3/sqrt(1*1*3*3) = 1,         acc 1
#   macro: P 1, R 13/18, F1 37/45, F2 (5/7 + 5/9 + 1)/3 = 143/189, MCC (2/sqrt(3) + 1)/3, acc 5/6
#
# At threshold 0.25 (also every t in [0.2, 0.3)): {0: a}, {1: a, c}, {2: a, b}, {3: b}:
#   a: TP 2 FP 1 FN 1 TN 0; b: TP 2 FP 0 FN 0 TN 2; c: TP 1 FP 0 FN 0 TN 3
#   micro: TP 5 FP 1 FN 1 TN 5: P = R = F1 = F2 = 5/6, MCC = (25 - 1)/sqrt(6^4) = 2/3: the P = R point.
#   Bisection from [0.01, 0.99]: at 0.01 P = 5/8 < R = 5/6; at 0.99 nothing is predicted (P counts as 1 > R = 0);
#   at 0.5 P = 1 > R = 2/3, so high = 0.5; at (0.01 + 0.5)/2 = 0.255 P == R exactly: 0.255 is returned.
#
# Average precision (unstored = 0, tied):
#   a: 0.9* 0.6* 0.3 0* -> (1 + 1 + 3/4) / 3 = 11/12;  b: 0.7* 0.4* 0.2 0 -> 1;  c: 0.8* 0.1 0 0 -> 1
#   macro = (11/12 + 1 + 1) / 3 = 35/36
#   micro: 0.9* 0.8* 0.7* 0.6* 0.4* 0.3 0.2 0.1, then 4 tied zeros with 1 positive (post 3, a):
#          (5 * 1 + 1 * 6/12) / 6 = 11/12
#
# Seed score, |T| = (1, 2, 1, 2); the weights by descending probability: 0.9 +1, 0.8 +1/2, 0.7 +1, 0.6 +1/2,
# 0.4 +1/2, 0.3 -1, 0.2 -1, 0.1 -1/2; the running sum peaks at 3.5 after 0.4, so the cut-off is "prob > 0.3"
# (the next lower probability) and the mean is 3.5 / 4 = 0.875 (scores 1, 1, 1, 1/2).

HAND_PROB = [[0.9, 0.2, UNSTORED], [0.6, UNSTORED, 0.8], [0.3, 0.7, UNSTORED], [UNSTORED, 0.4, 0.1]]
HAND_TRUTH = [[1, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 0]]
HAND_SIZES = np.array([1, 2, 1, 2])


@pytest.fixture
def hand() -> PredictionSet:
    return make_set(HAND_PROB, HAND_TRUTH, categories=[GENERAL, GENERAL, CHARACTER], names=("a", "b", "c"))


def test_hand_worked_scores_at_half(hand):
    result = scores_at(hand, 0.5, subset_mask(hand, "all"))
    assert result["tags"] == 3 and result["positives"] == 6
    assert result["micro"] == pytest.approx(
        {"precision": 1, "recall": 2 / 3, "f1": 0.8, "f2": 5 / 7, "mcc": 1 / math.sqrt(2), "accuracy": 10 / 12}
    )
    assert result["macro"] == pytest.approx(
        {
            "precision": 1,
            "recall": 13 / 18,
            "f1": 37 / 45,
            "f2": 143 / 189,
            "mcc": (2 / math.sqrt(3) + 1) / 3,
            "accuracy": 5 / 6,
        }
    )


def test_hand_worked_general_subset(hand):
    # tags a and b only: TP 3 FP 0 FN 2 TN 3 (8 pairs)
    result = scores_at(hand, 0.5, subset_mask(hand, "general"))
    assert result["tags"] == 2 and result["positives"] == 5
    assert result["micro"] == pytest.approx(
        {
            "precision": 1,
            "recall": 3 / 5,
            "f1": 6 / 8,
            "f2": 15 / 23,
            "mcc": 9 / math.sqrt(3 * 5 * 3 * 5),
            "accuracy": 6 / 8,
        }
    )
    assert scores_at(hand, 0.5, subset_mask(hand, "character"))["micro"]["f1"] == 1.0
    assert scores_at(hand, 0.5, subset_mask(hand, "rating")) == {
        "micro": dict.fromkeys(NAMES, 0.0),
        "macro": dict.fromkeys(NAMES, 0.0),
        "tags": 0,
        "positives": 0,
    }


def test_hand_worked_breakeven(hand):
    threshold, result = pr_breakeven(hand, subset_mask(hand, "all"))
    assert threshold == 0.255
    assert result["micro"] == pytest.approx(
        {"precision": 5 / 6, "recall": 5 / 6, "f1": 5 / 6, "f2": 5 / 6, "mcc": 2 / 3, "accuracy": 10 / 12}
    )
    assert result == scores_at(hand, 0.25, subset_mask(hand, "all"))


def test_hand_worked_average_precision(hand):
    result = average_precision(hand, subset_mask(hand, "all"))
    assert result == pytest.approx({"macro": 35 / 36, "micro": 11 / 12})
    assert average_precision(hand, subset_mask(hand, "rating")) == {"macro": None, "micro": None}


def test_hand_worked_best_score_threshold(hand):
    threshold, mean = best_score_threshold(hand, HAND_SIZES)
    assert threshold == float(np.float32(0.3))
    assert mean == pytest.approx(0.875)
    assert ref_mean_score(hand, HAND_SIZES, threshold) == pytest.approx(0.875)
    # candidates: 0.5 selects {a}, {a, c}, {b}, {} -> (1 + 1 + 1 + 0) / 4; 0.35 is the same set as 0.3
    assert best_score_threshold(hand, HAND_SIZES, np.array([0.5, 0.35, 0.05])) == (0.35, pytest.approx(0.875))
    assert best_score_threshold(hand, HAND_SIZES, np.array([0.5])) == (0.5, pytest.approx(0.75))


def test_hand_worked_tagger_metrics_is_json_and_consistent(hand):
    result = tagger_metrics(hand, HAND_SIZES, 0.5)
    assert json.loads(json.dumps(result)) == result
    # no rating positives; "rare" (rank >= 1000 by truth frequency) holds no tag of three
    assert set(result) == {"all", "general", "character", "best_score_threshold"}
    everything = result["all"]
    assert everything["micro"]["pr_threshold"] == 0.255
    assert everything["micro"]["f1"] == pytest.approx(5 / 6)
    assert everything["at_threshold"] == scores_at(hand, 0.5, subset_mask(hand, "all"))
    assert everything["average_precision"] == pytest.approx({"macro": 35 / 36, "micro": 11 / 12})
    threshold, scores = pr_breakeven(hand, subset_mask(hand, "all"), "macro")
    assert everything["macro"] == {"pr_threshold": threshold, **scores["macro"]}
    assert result["best_score_threshold"] == {"threshold": float(np.float32(0.3)), "mean_score": pytest.approx(0.875)}
    # with rare_rank 1, every tag but the most frequent in the truth (a, 3 positives)
    assert subset_mask(hand, "rare", rare_rank=1).tolist() == [False, True, True]
    assert set(tagger_metrics(hand, HAND_SIZES, 0.5, rare_rank=1)) == set(result) | {"rare"}


# --- subsets ------------------------------------------------------------------------------------------------------


def test_subset_masks_by_category_and_rating_names():
    categories = [GENERAL, CHARACTER, RATING, 1, GENERAL, 3]
    names = ("long_hair", "hatsune_miku", "rating:general", "some_artist", "rating:explicit", "vocaloid")
    ps = make_set(np.full((2, 6), UNSTORED), np.zeros((2, 6)), categories=categories, names=names)
    assert subset_mask(ps, "all").tolist() == [True] * 6
    # a rating: name counts as a rating whatever its category, and leaves general
    assert subset_mask(ps, "general").tolist() == [True, False, False, False, False, False]
    assert subset_mask(ps, "character").tolist() == [False, True, False, False, False, False]
    assert subset_mask(ps, "rating").tolist() == [False, False, True, False, True, False]
    assert subset_mask(ps, "artist").tolist() == [False, False, False, True, False, False]
    assert subset_mask(ps, "copyright").tolist() == [False, False, False, False, False, True]
    with pytest.raises(ValueError, match="unknown category"):
        subset_mask(ps, "species")


def test_output_categories_are_reported_only_for_a_tagger_that_outputs_them():
    """Artist truth is on every post; a tagger with no artist output gets no artist row, one that outputs artists
    does, computed like any category: here one artist stored at 0.9 and true on post 0 of two."""
    categories = [GENERAL, 1]
    names = ("long_hair", "some_artist")
    truth = np.array([[1, 1], [1, 0]])
    without = make_set(np.array([[0.8, UNSTORED], [0.7, UNSTORED]]), truth, categories=categories, names=names)
    assert "artist" not in tagger_metrics(without, np.array([2, 1]), 0.5)
    with_artist = make_set(np.array([[0.8, 0.9], [0.7, UNSTORED]]), truth, categories=categories, names=names)
    artist = tagger_metrics(with_artist, np.array([2, 1]), 0.5)["artist"]
    # at 0.5: post 0 TP, post 1 TN (unstored counts as 0): precision = recall = 1, AP = 1
    assert artist["at_threshold"]["micro"]["precision"] == 1.0 and artist["at_threshold"]["micro"]["recall"] == 1.0
    assert artist["average_precision"]["micro"] == pytest.approx(1.0)


def test_rare_uses_frequency_rank_when_known():
    ps = make_set(np.full((1, 4), UNSTORED), np.ones((1, 4)), frequency_rank=[3, 0, 2, 1])
    assert subset_mask(ps, "rare", rare_rank=2).tolist() == [True, False, True, False]


def ref_rare(ps: PredictionSet, rare_rank: int) -> list[bool]:
    counts = [0] * len(ps.tags)
    for tag in ps.true_tag:
        counts[int(tag)] += 1
    order = sorted(range(len(ps.tags)), key=lambda j: (-counts[j], j))
    rank = {j: r for r, j in enumerate(order)}
    return [rank[j] >= rare_rank for j in range(len(ps.tags))]


# --- validation -----------------------------------------------------------------------------------------------------


def test_invalid_inputs_are_refused(hand):
    mask = subset_mask(hand, "all")

    def with_(**changes) -> PredictionSet:
        return dataclasses.replace(hand, **changes)

    with pytest.raises(ValueError, match="twice"):
        scores_at(with_(true_post=np.r_[hand.true_post, 0], true_tag=np.r_[hand.true_tag, 0]), 0.5, mask)
    with pytest.raises(ValueError, match="twice"):
        scores_at(
            with_(
                pred_post=np.r_[hand.pred_post, 0],
                pred_tag=np.r_[hand.pred_tag, 0],
                pred_prob=np.r_[hand.pred_prob, 0.1],
            ),
            0.5,
            mask,
        )
    with pytest.raises(ValueError, match="outside"):
        scores_at(with_(pred_tag=hand.pred_tag + 1), 0.5, mask)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scores_at(with_(pred_prob=np.where(hand.pred_prob > 0.5, np.nan, hand.pred_prob)), 0.5, mask)
    with pytest.raises(ValueError, match="NaN"):
        scores_at(hand, float("nan"), mask)
    with pytest.raises(ValueError, match="shape"):
        scores_at(hand, 0.5, mask[:2])
    with pytest.raises(ValueError, match="average"):
        pr_breakeven(hand, mask, "weighted")
    with pytest.raises(ValueError, match="smaller"):
        best_score_threshold(hand, np.array([1, 1, 1, 1]))
    with pytest.raises(ValueError, match="candidates"):
        best_score_threshold(hand, HAND_SIZES, np.array([-0.1, 0.5]))


def test_match_truth_fallback_agrees_with_the_packed_sort():
    rng = np.random.default_rng(5)
    pred = rng.choice(10_000, 600, replace=False).astype(np.int64)
    true = rng.choice(10_000, 300, replace=False).astype(np.int64)
    expected = np.isin(pred, true)
    assert np.array_equal(match_truth(pred, true, 10_000), expected)
    assert np.array_equal(match_truth(pred, true, 2**62), expected)  # too wide to pack: argsort path
    with pytest.raises(ValueError, match="twice"):
        match_truth(np.r_[pred, pred[:1]], true, 2**62)


def test_empty_sets():
    ps = make_set(np.full((3, 2), UNSTORED), np.zeros((3, 2)))
    mask = subset_mask(ps, "all")
    assert scores_at(ps, 0.5, mask)["micro"] == {**dict.fromkeys(NAMES, 0.0), "accuracy": 1.0}
    assert average_precision(ps, mask) == {"macro": None, "micro": None}
    assert best_score_threshold(ps, np.zeros(3)) == (0.0, None)
    assert tagger_metrics(ps, np.zeros(3), 0.5) == {"best_score_threshold": {"threshold": 0.0, "mean_score": None}}


def test_negative_threshold_predicts_unstored_pairs_too(hand):
    result = scores_at(hand, -0.5, subset_mask(hand, "all"))
    assert result["micro"]["recall"] == 1.0 and result["micro"]["precision"] == 6 / 12
    assert result == approx_scores(ref_scores_at(hand, -0.5, subset_mask(hand, "all")))


# --- hypothesis: random sparse runs against the loop reference ----------------------------------------------------

PROBABILITIES = st.one_of(
    st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0]),  # ties, and the ends
    st.floats(0, 1, width=32),
)


@st.composite
def runs(draw, max_posts: int = 7, max_tags: int = 5) -> PredictionSet:
    n_posts = draw(st.integers(1, max_posts))
    n_tags = draw(st.integers(1, max_tags))
    cells = n_posts * n_tags
    categories = draw(
        st.lists(st.sampled_from([GENERAL, GENERAL, CHARACTER, RATING, 1]), min_size=n_tags, max_size=n_tags)
    )
    stored = draw(st.lists(st.booleans(), min_size=cells, max_size=cells))
    values = draw(st.lists(PROBABILITIES, min_size=cells, max_size=cells))
    truth = draw(st.lists(st.booleans(), min_size=cells, max_size=cells))
    prob = np.array([v if s else UNSTORED for v, s in zip(values, stored, strict=True)]).reshape(n_posts, n_tags)
    rank = draw(st.one_of(st.none(), st.permutations(range(n_tags))))
    return make_set(
        prob,
        np.array(truth).reshape(n_posts, n_tags),
        categories=categories,
        frequency_rank=rank,
        seed=draw(st.integers(0, 2**16)),
    )


THRESHOLDS = st.one_of(st.sampled_from([0.0, -0.0, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0]), st.floats(-0.5, 1.5))
SUBSETS = st.sampled_from(list(metrics.MetricCategory))


def approx_scores(expected: dict) -> dict:
    return {**expected, "micro": pytest.approx(expected["micro"]), "macro": pytest.approx(expected["macro"])}


@given(runs(), THRESHOLDS, SUBSETS, st.integers(0, 5))
def test_scores_at_matches_the_loop_reference(ps, threshold, category, rare_rank):
    mask = subset_mask(ps, category, rare_rank)
    if category == "rare":
        assert mask.tolist() == (
            ref_rare(ps, rare_rank) if ps.frequency_rank is None else list(ps.frequency_rank >= rare_rank)
        )
    assert scores_at(ps, threshold, mask) == approx_scores(ref_scores_at(ps, threshold, mask))


@given(runs(), THRESHOLDS, SUBSETS)
def test_scores_are_in_range(ps, threshold, category):
    result = scores_at(ps, threshold, subset_mask(ps, category, 2))
    for average in ("micro", "macro"):
        for name in ("precision", "recall", "f1", "f2", "accuracy"):
            assert 0.0 <= result[average][name] <= 1.0
        assert -1.0 - 1e-12 <= result[average]["mcc"] <= 1.0 + 1e-12


@given(runs(), SUBSETS)
def test_average_precision_matches_the_loop_reference(ps, category):
    mask = subset_mask(ps, category, 2)
    expected = ref_average_precision(ps, mask)
    result = average_precision(ps, mask)
    for average in ("macro", "micro"):
        if expected[average] is None:
            assert result[average] is None
        else:
            assert result[average] == pytest.approx(expected[average], rel=1e-12)


@given(runs(max_posts=5), st.floats(0.0, 1.0))
def test_mcc_is_symmetric_in_truth_and_predictions(ps, threshold):
    prob, _, truth = dense(ps)
    predicted = prob > threshold
    forward = make_set(np.where(predicted, 1.0, UNSTORED), truth)
    backward = make_set(np.where(truth, 1.0, UNSTORED), predicted)
    # the same sets as the original at the threshold
    assert scores_at(forward, 0.5, np.ones(len(ps.tags), bool))["micro"] == pytest.approx(
        scores_at(ps, threshold, np.ones(len(ps.tags), bool))["micro"]
    )
    for j in range(-1, len(ps.tags)):  # -1: every tag pooled; j: one tag
        mask = np.ones(len(ps.tags), bool) if j < 0 else np.arange(len(ps.tags)) == j
        a = scores_at(forward, 0.5, mask)["micro"]["mcc"]
        b = scores_at(backward, 0.5, mask)["micro"]["mcc"]
        assert a == pytest.approx(b, abs=1e-12)


@given(runs(), st.data())
def test_average_precision_of_a_perfect_ranking_is_one(ps, data):
    _, _, truth = dense(ps)
    assume(truth.any())
    # every positive stored above every negative (negatives stored or not, below 0.5)
    above = st.floats(0.5, 1.0, width=32, exclude_min=True)
    high = data.draw(st.lists(above, min_size=truth.size, max_size=truth.size))
    low = data.draw(
        st.lists(st.one_of(st.just(UNSTORED), st.floats(0, 0.5, width=32)), min_size=truth.size, max_size=truth.size)
    )
    prob = np.where(truth, np.reshape(high, truth.shape), np.reshape(low, truth.shape))
    perfect = make_set(prob, truth)
    assert average_precision(perfect, np.ones(len(ps.tags), bool)) == pytest.approx({"macro": 1.0, "micro": 1.0})


@given(
    runs(),
    SUBSETS,
    st.sampled_from(["micro", "macro"]),
    st.one_of(st.just((0.01, 0.99)), st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted)),
    st.sampled_from([1e-4, 1e-3, 0.05]),
)
def test_breakeven_brackets_the_crossing_or_takes_the_closer_end(ps, category, average, bounds, tolerance):
    low, high = bounds
    mask = subset_mask(ps, category, 2)
    threshold, result = pr_breakeven(ps, mask, average, low=low, high=high, tolerance=tolerance)
    assert low <= threshold <= high
    assert result == scores_at(ps, threshold, mask)
    gap_low, gap_high = ref_gap(ps, low, mask, average), ref_gap(ps, high, mask, average)
    if gap_low != 0 and gap_high != 0 and (gap_low > 0) == (gap_high > 0):
        # no crossing in the range: the end closer to equality (low on a tie)
        if abs(abs(gap_low) - abs(gap_high)) > 1e-12:
            assert threshold == (low if abs(gap_low) < abs(gap_high) else high)
        return
    if threshold in (low, high) and ref_gap(ps, threshold, mask, average) == pytest.approx(0, abs=1e-12):
        return
    # P - R is a step function of the threshold that changes only at stored probabilities: over the window of
    # +-tolerance around the answer it takes its value at the window's start and at each probability inside.
    prob, _, _ = dense(ps)
    start, end = max(low, threshold - tolerance), min(high, threshold + tolerance)
    points = [start, *sorted({float(p) for p in prob.ravel() if start < p <= end})]
    gaps = [ref_gap(ps, t, mask, average) for t in points]
    assert min(gaps) <= 1e-12 and max(gaps) >= -1e-12


@given(runs(max_posts=6, max_tags=5), st.data())
def test_best_score_threshold_is_the_brute_force_optimum(ps, data):
    _, _, truth = dense(ps)
    sizes = truth.sum(axis=1) + np.array(
        data.draw(st.lists(st.integers(0, 2), min_size=ps.n_posts, max_size=ps.n_posts))
    )
    threshold, mean = best_score_threshold(ps, sizes)
    expected = ref_mean_score(ps, sizes, threshold)
    if expected is None:
        assert mean is None
        return
    assert mean == pytest.approx(expected, abs=1e-12)
    # every threshold that selects a different set: each distinct probability, 0, 1 and the points between them
    prob, _, _ = dense(ps)
    distinct = sorted({0.0, 1.0, *(float(p) for p in prob.ravel())})
    candidates = distinct + [(a + b) / 2 for a, b in itertools.pairwise(distinct)]
    brute = {t: ref_mean_score(ps, sizes, t) for t in candidates}
    assert max(brute.values()) <= mean + 1e-12
    # the smallest best threshold: nothing below it scores as well
    assert all(value < mean - 1e-12 for t, value in brute.items() if t < threshold)
    # with explicit candidates: the smallest best among them
    chosen, chosen_mean = best_score_threshold(ps, sizes, np.array(candidates))
    best = max(brute.values())
    assert chosen == min(t for t, value in brute.items() if value >= best - 1e-12)
    assert chosen_mean == pytest.approx(best, abs=1e-12)


@given(runs(), THRESHOLDS)
def test_tagger_metrics_agrees_with_the_functions(ps, chosen):
    _, _, truth = dense(ps)
    sizes = truth.sum(axis=1)
    result = tagger_metrics(ps, sizes, chosen, rare_rank=2)
    assert json.loads(json.dumps(result)) == result
    stored = dense(ps)[1]
    for category in metrics.MetricCategory:
        mask = subset_mask(ps, category, 2)
        output_only = category in ("copyright", "artist", "meta", "year")  # reported only where the tagger outputs
        if not truth[:, mask].any() or (output_only and not stored[:, mask].any()):
            assert category not in result
            continue
        entry = result[category]
        for average in ("micro", "macro"):
            threshold, scores = pr_breakeven(ps, mask, average)
            assert entry[average] == {"pr_threshold": threshold, **scores[average]}
        assert entry["at_threshold"] == scores_at(ps, chosen, mask)
        assert entry["average_precision"] == average_precision(ps, mask)
    threshold, mean = best_score_threshold(ps, sizes)
    assert result["best_score_threshold"] == {"threshold": threshold, "mean_score": mean}


# --- scikit-learn as an independent reference (test-only dependency) -----------------------------------------------


def random_dense_set(seed: int, n_posts: int = 40, n_tags: int = 12, decimals: int | None = 2) -> PredictionSet:
    rng = np.random.default_rng(seed)
    truth = rng.random((n_posts, n_tags)) < rng.uniform(0.05, 0.5, n_tags)
    truth[:, 0] = False  # a tag without positives
    truth[:, 1] = True  # a tag that every post has
    scores = np.where(truth, rng.beta(3, 2, truth.shape), rng.beta(1, 4, truth.shape))
    if decimals is not None:
        scores = np.round(scores, decimals)  # ties
    stored = (scores >= 0.1) | (rng.random(truth.shape) < 0.3)
    scores[:, 2] = UNSTORED  # a tag never stored
    return make_set(np.where(stored, scores, UNSTORED), truth, seed=seed)


@pytest.mark.parametrize("seed", range(6))
def test_scores_at_match_scikit_learn(seed):
    skm = pytest.importorskip("sklearn.metrics")
    ps = random_dense_set(seed)
    prob, _, truth = dense(ps)
    functions = {
        "precision": lambda t, p: skm.precision_score(t, p, zero_division=0),
        "recall": lambda t, p: skm.recall_score(t, p, zero_division=0),
        "f1": lambda t, p: skm.f1_score(t, p, zero_division=0),
        "f2": lambda t, p: skm.fbeta_score(t, p, beta=2, zero_division=0),
        "mcc": skm.matthews_corrcoef,
        "accuracy": skm.accuracy_score,
    }
    columns = [j for j in range(truth.shape[1]) if truth[:, j].any()]
    for threshold in (0.0, 0.1, 0.35, 0.5, 0.93, 1.0):
        predicted = prob > threshold
        result = scores_at(ps, threshold, np.ones(len(ps.tags), bool))
        for name, function in functions.items():
            assert result["micro"][name] == pytest.approx(function(truth.ravel(), predicted.ravel()), abs=1e-12)
            macro = np.mean([function(truth[:, j], predicted[:, j]) for j in columns])
            assert result["macro"][name] == pytest.approx(macro, abs=1e-12), (threshold, name)


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_matches_scikit_learn(seed):
    skm = pytest.importorskip("sklearn.metrics")
    ps = random_dense_set(seed)
    prob, _, truth = dense(ps)
    for category, mask in (("all", np.ones(len(ps.tags), bool)), ("some", np.arange(len(ps.tags)) % 3 != 1)):
        result = average_precision(ps, mask)
        columns = [j for j in np.flatnonzero(mask) if truth[:, j].any()]
        macro = np.mean([skm.average_precision_score(truth[:, j], prob[:, j]) for j in columns])
        micro = skm.average_precision_score(truth[:, mask].ravel(), prob[:, mask].ravel())
        assert result["macro"] == pytest.approx(macro, rel=1e-12), category
        assert result["micro"] == pytest.approx(micro, rel=1e-12), category


def test_metrics_module_does_not_import_scikit_learn():
    with open(metrics.__file__, encoding="utf-8") as source:
        assert "sklearn" not in source.read()


@pytest.mark.parametrize("decimals", [None, 3])
def test_larger_run_matches_scikit_learn_and_a_dense_search(decimals):
    """Hundreds of posts, thousands of distinct float32 probabilities, ratings: the packed sorts at some scale."""
    skm = pytest.importorskip("sklearn.metrics")
    n_posts, n_tags = 400, 40
    ps = random_dense_set(7, n_posts=n_posts, n_tags=n_tags, decimals=decimals)
    categories = np.array([RATING if j < 3 else CHARACTER if j % 5 == 0 else GENERAL for j in range(n_tags)])
    names = tuple(f"rating:r{j}" if j < 3 else f"tag{j}" for j in range(n_tags))
    ps = dataclasses.replace(ps, categories=categories, tags=names)
    prob, stored, truth = dense(ps)
    mask = subset_mask(ps, "all")
    result = average_precision(ps, mask)
    columns = [j for j in range(n_tags) if truth[:, j].any()]
    assert result["micro"] == pytest.approx(skm.average_precision_score(truth.ravel(), prob.ravel()), rel=1e-12)
    macro = np.mean([skm.average_precision_score(truth[:, j], prob[:, j]) for j in columns])
    assert result["macro"] == pytest.approx(macro, rel=1e-12)
    for threshold in (0.2, 0.5):
        predicted = prob > threshold
        scores = scores_at(ps, threshold, mask)
        assert scores["micro"]["f1"] == pytest.approx(skm.f1_score(truth.ravel(), predicted.ravel()), abs=1e-12)
        assert scores["micro"]["mcc"] == pytest.approx(skm.matthews_corrcoef(truth.ravel(), predicted.ravel()))

    # the seed score by a dense search over every distinct probability (numpy per threshold, not the module's way)
    sizes = truth.sum(axis=1)
    rating = np.arange(n_tags) < 3
    rating_prob = np.where(stored & rating, prob, -1.0)
    chosen_rating = np.argmax(rating_prob, axis=1)  # first maximum: the lowest tag index on a tie
    has_rating = rating_prob.max(axis=1) >= 0
    rating_term = np.where(has_rating, np.where(truth[np.arange(n_posts), chosen_rating], 1, -1), 0)

    def mean_score(t: float) -> float:
        selected = (prob > t) & ~rating
        per_post = ((selected & truth).sum(axis=1) - (selected & ~truth).sum(axis=1) + rating_term) / np.maximum(
            sizes, 1
        )
        return float(per_post[sizes > 0].mean())

    candidates = np.unique(np.r_[0.0, prob[~rating[None, :].repeat(n_posts, 0)]])
    brute = np.array([mean_score(t) for t in candidates])
    threshold, mean = best_score_threshold(ps, sizes)
    assert mean == pytest.approx(brute.max(), abs=1e-12)
    assert threshold == candidates[np.flatnonzero(brute >= brute.max() - 1e-12)[0]]
