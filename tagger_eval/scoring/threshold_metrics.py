"""Threshold-free and thresholded multi-label metrics over one tagger's sparse predictions for a whole run.

The data is a `PredictionSet`: the stored probabilities (anything below the tagger's storage floor is not kept and
counts as probability 0) and the truth pairs, both as parallel index arrays. This module checks it, matches its
predictions to the truth and defines every metric; `sparse_ranking` ranks the entries once and does the counting,
vectorised (nothing loops over posts, tags or thresholds, only over the handful of categories and the bisection
steps, and nothing builds a dense posts x tags matrix).

Conventions and edge cases (the model authors' and this project's, matching scikit-learn where it has a rule):

- A (post, tag) pair is predicted positive when `prob > threshold` (strict). Unstored pairs have probability 0, so
  they are predicted positive only by a negative threshold.
- Confusion counts per tag are over all `n_posts` posts; micro pools TP/FP/FN/TN over every (post, tag) pair of the
  subset, so TN = n_posts * n_tags_in_subset - TP - FP - FN.
- precision = TP/(TP+FP), recall = TP/(TP+FN), F-beta = (1+b^2)TP / ((1+b^2)TP + b^2 FN + FP), accuracy =
  (TP+TN)/all: 0.0 when the denominator is 0 (scikit-learn's `zero_division=0`).
- MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0.0 when any of the four marginals is 0 (what
  scikit-learn's `matthews_corrcoef` returns, e.g. when nothing or everything is predicted).
- Macro = the mean of the per-tag metric over the tags of the subset WITH at least one positive; tags without a
  positive are left out. With no such tag every macro value is 0.0 (and `"tags"` is 0).
- Average precision is scikit-learn's `average_precision_score`; it is None (not 0) where there is no positive.
- Ratings are the tags of category 9 or whose name starts with `rating:` (the rule `tags.is_rating` and the
  taggers' selection use); the other categories leave such tags out even if their category says otherwise.
- Copyright, artist, meta and year (Camie outputs them) are reported only for a tagger that stored a probability in
  that category: every Danbooru post has them, and a tagger that cannot output them would show zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from tagger_eval.scoring.sparse_ranking import SparseRanking, match_truth
from tagger_eval.tags import ARTIST, CHARACTER, COPYRIGHT, GENERAL, META, RATING, RATING_PREFIX, YEAR


class MetricCategory(StrEnum):
    """The tag subsets every metric is computed over, in the order tables show them."""

    ALL = "all"
    GENERAL = "general"
    CHARACTER = "character"
    COPYRIGHT = "copyright"
    ARTIST = "artist"
    META = "meta"
    YEAR = "year"
    RATING = "rating"
    RARE = "rare"


# The categories chosen by the tag's category alone (ratings left out), and those reported only where output.
_BY_CATEGORY = {MetricCategory.GENERAL: GENERAL, MetricCategory.CHARACTER: CHARACTER, MetricCategory.YEAR: YEAR,
                MetricCategory.COPYRIGHT: COPYRIGHT, MetricCategory.ARTIST: ARTIST, MetricCategory.META: META}
_WHEN_OUTPUT = frozenset({MetricCategory.COPYRIGHT, MetricCategory.ARTIST, MetricCategory.META, MetricCategory.YEAR})


# The P = R search of `tagger_metrics` (pr_breakeven's defaults): range, bracket width, halvings.
BREAKEVEN_SEARCH = (0.01, 0.99, 1e-4, 60)

# Two seed-score sums closer than this (summed over posts, not averaged) are a tie: the cumulative sums that build
# them carry rounding error of about this size on large runs, and a tie goes to the smaller threshold.
SCORE_TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PredictionSet:
    """One tagger's predictions over a run, sparse: probabilities below the storage floor are not kept (they count as 0)."""  # noqa: E501

    n_posts: int
    tags: tuple[str, ...]  # the label space (in-scope tags), index = column
    categories: np.ndarray  # int per tag: 0 general, 4 character, 9 rating, other Danbooru categories allowed
    pred_post: np.ndarray  # int32, post index of each stored probability
    pred_tag: np.ndarray  # int32, tag index of each stored probability
    pred_prob: np.ndarray  # float32 in [0, 1]
    true_post: np.ndarray  # int32, post index of each truth (positive) pair
    true_tag: np.ndarray  # int32
    frequency_rank: np.ndarray | None = None  # int per tag: 0 = most frequent in the model's tag list; None if unknown


# --- the input: checked, its predictions matched to the truth, ranked -------------------------------------------------


def _rank(ps: PredictionSet) -> SparseRanking:
    """Check `ps`, match its predictions to the truth and rank them once: where every public function starts."""
    n_posts, n_tags = int(ps.n_posts), len(ps.tags)
    if n_posts < 0:
        raise ValueError(f"n_posts must be >= 0, got {n_posts}")
    if n_tags >= 2**31 or n_posts >= 2**31:
        raise ValueError("at most 2**31 - 1 posts and tags")
    categories = np.asarray(ps.categories)
    if categories.shape != (n_tags,):
        raise ValueError(f"categories has shape {categories.shape}, expected ({n_tags},)")
    post, tag, prob, true_post, true_tag = _checked_arrays(ps, n_posts, n_tags)
    pred_true = match_truth(post * n_tags + tag, true_post * n_tags + true_tag, n_posts * n_tags)
    return SparseRanking(n_posts=n_posts, n_tags=n_tags, pred_post=post, pred_tag=tag, pred_prob=prob,
                         pred_true=pred_true, true_post=true_post, true_tag=true_tag)


def _checked_arrays(ps: PredictionSet, n_posts: int, n_tags: int) -> tuple[np.ndarray, ...]:
    """The prediction and truth arrays as int64 indices and float32 probabilities; refused unless consistent."""
    post = np.asarray(ps.pred_post, dtype=np.int64)
    tag = np.asarray(ps.pred_tag, dtype=np.int64)
    # + 0 turns a stored -0.0 into 0.0 (a sign bit would break the bit-pattern order).
    prob = np.asarray(ps.pred_prob, dtype=np.float32) + np.float32(0)
    true_post = np.asarray(ps.true_post, dtype=np.int64)
    true_tag = np.asarray(ps.true_tag, dtype=np.int64)
    if not (post.shape == tag.shape == prob.shape) or post.ndim != 1:
        raise ValueError("pred_post, pred_tag and pred_prob must be 1-d arrays of one length")
    if true_post.shape != true_tag.shape or true_post.ndim != 1:
        raise ValueError("true_post and true_tag must be 1-d arrays of one length")
    for name, values, bound in (
        ("pred_post", post, n_posts),
        ("pred_tag", tag, n_tags),
        ("true_post", true_post, n_posts),
        ("true_tag", true_tag, n_tags),
    ):
        if values.size and (values.min() < 0 or values.max() >= bound):
            raise ValueError(f"{name} has indices outside [0, {bound})")
    if prob.size and not (np.all(prob >= 0) and np.all(prob <= 1)):  # also refuses NaN
        raise ValueError("pred_prob must lie in [0, 1]")
    return post, tag, prob, true_post, true_tag


# --- scores from confusion counts -------------------------------------------------------------------------------------


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn, tn = (np.asarray(value, dtype=np.float64) for value in (tp, fp, fn, tn))
    marginals = np.sqrt((tp + fp) * (tp + fn)) * np.sqrt((tn + fp) * (tn + fn))
    return {
        "precision": _divide(tp, tp + fp),
        "recall": _divide(tp, tp + fn),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        "f2": _divide(5 * tp, 5 * tp + 4 * fn + fp),
        "mcc": _divide(tp * tn - fp * fn, marginals),
        "accuracy": _divide(tp + tn, tp + fp + fn + tn),
    }


def _scores(ranking: SparseRanking, threshold: float, idx: np.ndarray) -> dict:
    tp, fp, fn, tn = ranking.confusion(threshold, idx)
    with_positive = (tp + fn) > 0
    micro = _rates(tp.sum(), fp.sum(), fn.sum(), tn.sum())
    per_tag = _rates(tp[with_positive], fp[with_positive], fn[with_positive], tn[with_positive])
    n_with = int(with_positive.sum())
    return {
        "micro": {name: float(value) for name, value in micro.items()},
        "macro": {name: float(value.mean()) if n_with else 0.0 for name, value in per_tag.items()},
        "tags": n_with,
        "positives": int(ranking.positives[idx].sum()),
    }


def _gap(ranking: SparseRanking, threshold: float, idx: np.ndarray, average: str) -> float:
    """Precision - recall for the breakeven search, with precision 1 where nothing is predicted (the PR-curve
    convention), so the empty prediction above every probability is never taken for the P = R point."""
    tp, fp, fn, _ = ranking.confusion(threshold, idx)
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    else:
        keep = (tp + fn) > 0
        tp, fp, fn = tp[keep], fp[keep], fn[keep]
        if tp.size == 0:
            return 0.0
    precision = np.where(tp + fp > 0, _divide(tp, tp + fp), 1.0)
    return float(np.mean(precision) - np.mean(_divide(tp, tp + fn)))


def _breakeven(
    ranking: SparseRanking, idx: np.ndarray, average: str, low: float, high: float, tolerance: float, max_steps: int
) -> float:
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    if not (low <= high):  # also refuses NaN
        raise ValueError(f"the search range [{low}, {high}] is empty")
    gap_low, gap_high = _gap(ranking, low, idx, average), _gap(ranking, high, idx, average)
    if gap_low == 0:
        return float(low)
    if gap_high == 0:
        return float(high)
    if (gap_low > 0) == (gap_high > 0):  # no crossing in the range: the end closer to equality, low on a tie
        return float(low) if abs(gap_low) <= abs(gap_high) else float(high)
    for _ in range(max_steps):
        if high - low <= tolerance:
            break
        middle = (low + high) / 2
        gap = _gap(ranking, middle, idx, average)
        if gap == 0:
            return middle
        if (gap > 0) == (gap_low > 0):
            low, gap_low = middle, gap
        else:
            high, gap_high = middle, gap
    return float(low) if abs(gap_low) <= abs(gap_high) else float(high)



# --- the public API ---------------------------------------------------------------------------------------------------


def _as_index(mask: np.ndarray, n_tags: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (n_tags,):
        raise ValueError(f"the tag mask has shape {mask.shape}, expected ({n_tags},)")
    return mask, np.flatnonzero(mask)


def _rating_mask(ps: PredictionSet) -> np.ndarray:
    return (np.asarray(ps.categories) == RATING) | np.char.startswith(np.asarray(ps.tags, dtype=str), RATING_PREFIX)


def _subset_mask(
    categories: np.ndarray,
    rating: np.ndarray,
    frequency_rank: np.ndarray | None,
    positives: np.ndarray,
    category: str,
    rare_rank: int,
) -> np.ndarray:
    if category == MetricCategory.ALL:
        return np.ones(categories.shape, dtype=bool)
    if category in _BY_CATEGORY:
        return (categories == _BY_CATEGORY[MetricCategory(category)]) & ~rating
    if category == MetricCategory.RATING:
        return rating.copy()
    if category == MetricCategory.RARE:
        if frequency_rank is not None:
            return np.asarray(frequency_rank) >= rare_rank
        # Most frequent among this run's truth pairs first (rank 0), ties by tag index.
        order = np.lexsort((np.arange(positives.size), -positives))
        rank = np.empty(positives.size, dtype=np.int64)
        rank[order] = np.arange(positives.size)
        return rank >= rare_rank
    raise ValueError(f"unknown category {category!r}; expected one of {', '.join(MetricCategory)}")


def subset_mask(ps: PredictionSet, category: str, rare_rank: int = 1000) -> np.ndarray:
    """Boolean mask over `ps.tags` for a category of the report.

    "all": every tag; "general", "character", ...: the tags of that category but ratings; "rating": category 9 or
    a `rating:` name; "rare": `frequency_rank >= rare_rank`, else by the number of truth pairs of the tag in this
    run (most frequent = rank 0, ties by tag index), so "rare" is every tag but the `rare_rank` most frequent.
    """
    n_tags = len(ps.tags)
    positives = np.bincount(np.asarray(ps.true_tag, dtype=np.int64), minlength=n_tags)[:n_tags]
    return _subset_mask(np.asarray(ps.categories), _rating_mask(ps), ps.frequency_rank, positives, category, rare_rank)


def scores_at(ps: PredictionSet, threshold: float, mask: np.ndarray) -> dict:
    """Precision, recall, F1, F2, MCC and accuracy at `prob > threshold` over the tags of `mask`.

    Returns {"micro": {...}, "macro": {...}, "tags": tags with a positive, "positives": truth pairs in the subset}.
    Micro pools the confusion counts of every (post, tag) pair of the subset; macro averages the per-tag values over
    the tags with at least one positive. Zero denominators give 0.0 (see the module docstring).
    """
    ranking = _rank(ps)
    _, idx = _as_index(mask, ranking.n_tags)
    return _scores(ranking, threshold, idx)


def pr_breakeven(
    ps: PredictionSet,
    mask: np.ndarray,
    average: str = "micro",
    low: float = 0.01,
    high: float = 0.99,
    tolerance: float = 1e-4,
    max_steps: int = 60,
) -> tuple[float, dict]:
    """The threshold where precision equals recall (micro or macro), by bisection, and `scores_at` there.

    Precision rises and recall falls with the threshold, so the search bisects on the sign of P - R, computed with
    precision 1 where nothing is predicted (the PR-curve convention; the returned scores still use 0). P and R are
    step functions, so an exact crossing rarely exists: the search stops when the bracket is narrower than
    `tolerance` (or after `max_steps` halvings, or at a point where P == R exactly) and returns the bracket end whose
    |P - R| is smaller, the lower one on a tie. When P - R has the same sign at `low` and `high` (no crossing in the
    range) it returns the end with the smaller |P - R|, `low` on a tie; an end where P == R is returned as is.
    """
    ranking = _rank(ps)
    _, idx = _as_index(mask, ranking.n_tags)
    threshold = _breakeven(ranking, idx, average, low, high, tolerance, max_steps)
    return threshold, _scores(ranking, threshold, idx)


def average_precision(ps: PredictionSet, mask: np.ndarray) -> dict[str, float | None]:
    """scikit-learn's `average_precision_score` over the tags of `mask`, over all n_posts posts.

    Step-wise: the sum over distinct scores, descending, of (R_n - R_{n-1}) * P_n, where tied scores form one step;
    unstored pairs have probability 0 and are tied with each other (and with stored zeros). "macro" is the mean of
    the per-tag AP over the tags with at least one positive; "micro" pools every (post, tag) pair of the subset.
    Either is None when the subset has no positive.
    """
    ranking = _rank(ps)
    mask, _ = _as_index(mask, ranking.n_tags)
    return _average_precision(ranking, mask)


def _average_precision(ranking: SparseRanking, mask: np.ndarray) -> dict[str, float | None]:
    per_tag = ranking.tag_average_precision[mask]
    per_tag = per_tag[~np.isnan(per_tag)]
    return {
        "macro": float(per_tag.mean()) if per_tag.size else None,
        "micro": ranking.micro_average_precision(mask),
    }


def best_score_threshold(
    ps: PredictionSet, truth_sizes: np.ndarray, candidates: np.ndarray | None = None
) -> tuple[float, float | None]:
    """The threshold that maximises the mean seed score `(|P ∩ T| - |P \\ T|) / |T|` over the posts, and that mean.

    `truth_sizes[post]` is |T| in the label space (posts with |T| = 0 are left out of the mean). P is the non-rating
    tags with `prob > threshold` plus one rating per post, its highest-probability stored rating tag (the lowest tag
    index on a tie), which does not depend on the threshold. Without `candidates` the search is exact: every set
    `prob >= p` for a distinct stored probability p > 0 (and the empty set) is scored with one sort and cumulative
    sums, and the result is the smallest threshold that selects a best set, written as a value t with `prob > t`:
    the next lower distinct probability, 0.0 below the lowest, or the highest probability for the empty set. With
    `candidates` (thresholds >= 0) it returns the smallest best candidate. Sums within `SCORE_TIE_TOLERANCE` are
    ties. The mean score is None when no post has a truth tag.
    """
    ranking = _rank(ps)
    return _best_score_threshold(ranking, _rating_mask(ps), _truth_sizes(ranking, truth_sizes), candidates)


def _truth_sizes(ranking: SparseRanking, truth_sizes: np.ndarray) -> np.ndarray:
    sizes = np.asarray(truth_sizes, dtype=np.float64)
    if sizes.shape != (ranking.n_posts,):
        raise ValueError(f"truth_sizes has shape {sizes.shape}, expected ({ranking.n_posts},)")
    if np.any(sizes < np.bincount(ranking.true_post, minlength=ranking.n_posts)):
        raise ValueError("truth_sizes is smaller than the number of truth pairs of some post")
    return sizes


def _best_score_threshold(
    ranking: SparseRanking, rating: np.ndarray, sizes: np.ndarray, candidates: np.ndarray | None
) -> tuple[float, float | None]:
    valid = sizes > 0
    inverse = np.where(valid, 1 / np.where(valid, sizes, 1), 0.0)
    is_rating = rating[ranking.pred_tag]
    # The non-rating entries of counted posts each add +-1/|T| once the threshold falls below their probability.
    distinct, sums = ranking.score_steps(~is_rating & valid[ranking.pred_post], inverse)
    thresholds, totals = _candidate_totals(distinct, sums, candidates)
    best = totals.max()
    ties = np.flatnonzero(totals >= best - SCORE_TIE_TOLERANCE)
    chosen = ties[np.argmin(thresholds[ties])]
    threshold = float(thresholds[chosen])
    n_valid = int(valid.sum())
    if n_valid == 0:
        return threshold, None
    picked = ranking.top_per_post(is_rating)  # each post's one rating, the same at every threshold: +-1/|T|
    rating_total = float(np.sum((2.0 * ranking.pred_true[picked] - 1) * inverse[ranking.pred_post[picked]]))
    return threshold, float((totals[chosen] + rating_total) / n_valid)


def _candidate_totals(
    distinct: np.ndarray, sums: np.ndarray, candidates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds to choose from and the summed score at each: every step of `sums`, or the `candidates`."""
    if candidates is None:
        # sums[k] is selected by t = distinct[k] (prob > t keeps the k above it), the last one by t = 0.0.
        return np.concatenate((distinct, [0.0])), sums
    thresholds = np.asarray(candidates, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or np.any(np.isnan(thresholds)) or np.any(thresholds < 0):
        raise ValueError("candidates must be a non-empty array of thresholds >= 0")
    above = distinct.size - np.searchsorted(distinct[::-1], thresholds, side="right")
    return thresholds, sums[above]


def tagger_metrics(ps: PredictionSet, truth_sizes: np.ndarray, chosen_threshold: float, rare_rank: int = 1000) -> dict:
    """Every metric of one tagger, as JSON-ready builtins. For each `MetricCategory` with a positive (and where
    `_WHEN_OUTPUT`, a stored prediction): {"micro": {"pr_threshold", precision, recall, f1, f2, mcc, accuracy} at
    the micro P = R threshold, "macro": {the same at the macro one}, "at_threshold": scores_at(chosen_threshold),
    "average_precision": {"macro", "micro"}}; and "best_score_threshold": {"threshold", "mean_score"}."""
    ranking = _rank(ps)
    sizes = _truth_sizes(ranking, truth_sizes)
    categories, rating = np.asarray(ps.categories), _rating_mask(ps)
    result: dict = {}
    for category in MetricCategory:
        mask = _subset_mask(categories, rating, ps.frequency_rank, ranking.positives, category, rare_rank)
        idx = np.flatnonzero(mask)
        if ranking.positives[idx].sum() == 0 or (category in _WHEN_OUTPUT and not mask[ranking.pred_tag].any()):
            continue
        entry: dict = {}
        for average in ("micro", "macro"):
            threshold = _breakeven(ranking, idx, average, *BREAKEVEN_SEARCH)
            entry[average] = {"pr_threshold": threshold, **_scores(ranking, threshold, idx)[average]}
        entry["at_threshold"] = _scores(ranking, chosen_threshold, idx)
        entry["average_precision"] = _average_precision(ranking, mask)
        result[category.value] = entry
    threshold, mean_score = _best_score_threshold(ranking, rating, sizes, None)
    result["best_score_threshold"] = {"threshold": threshold, "mean_score": mean_score}
    return result
