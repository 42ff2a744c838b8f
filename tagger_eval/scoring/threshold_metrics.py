"""Threshold-free and thresholded multi-label metrics over one tagger's sparse predictions for a whole run.

Pure numpy and vectorised: nothing loops over posts, tags or thresholds (only over the handful of categories and the
bisection steps), and nothing builds a dense posts x tags matrix. The data is a `PredictionSet`: the stored
probabilities (anything below the tagger's storage floor is not kept and counts as probability 0) and the truth
pairs, both as parallel index arrays.

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
  taggers' selection use); "general" and "character" leave such tags out even if their category says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np

from tagger_eval.tags import CHARACTER, GENERAL, RATING, RATING_PREFIX


class MetricCategory(StrEnum):
    """The tag subsets every metric is computed over, in the order tables show them."""

    ALL = "all"
    GENERAL = "general"
    CHARACTER = "character"
    RATING = "rating"
    RARE = "rare"


CATEGORIES = tuple(MetricCategory)
SCORE_NAMES = ("precision", "recall", "f1", "f2", "mcc", "accuracy")
# The P = R search of `tagger_metrics` (pr_breakeven's defaults): range, bracket width, halvings.
BREAKEVEN_SEARCH = (0.01, 0.99, 1e-4, 60)

# Two seed-score sums closer than this (summed over posts, not averaged) are a tie: the cumulative sums that build
# them carry rounding error of about this size on large runs, and a tie goes to the smaller threshold.
SCORE_TIE_TOLERANCE = 1e-9

_ONE_BITS = 0x3F800000  # float32 1.0: probabilities in [0, 1] have bit patterns in [0, this]
_DESC_MASK = (1 << 30) - 1


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


# --- preparation: one matching of predictions to truth and one sort, shared by every metric ----------------------


def _float32_floor_bits(threshold: float) -> int:
    """The bit pattern of the largest float32 <= threshold (threshold >= 0): `prob > threshold` <=> bits(prob) > it.

    Non-negative float32 values order like their bit patterns read as integers.
    """
    value = np.float32(min(threshold, 2.0) + 0.0)  # + 0.0: -0.0 becomes 0.0, whose bit pattern is 0
    if float(value) > threshold:
        value = np.nextafter(value, np.float32(-np.inf))
    return int(np.array(value, dtype=np.float32).view(np.uint32))


def _descending(prob: np.ndarray) -> np.ndarray:
    """`bits(1.0) - bits(prob)` as int64: 0 for probability 1, `_ONE_BITS` for 0, increasing as prob decreases."""
    return _ONE_BITS - prob.view(np.uint32).astype(np.int64)


def _match_truth(pred_key: np.ndarray, true_key: np.ndarray, max_key: int) -> np.ndarray:
    """Which of the (post, tag) keys `pred_key` are in `true_key`; refuses a key twice in either.

    One sort of both, packed with a flag (truth first) and the prediction's index into one int64 when that fits,
    else an argsort of the predictions and a searchsorted of the sorted keys.
    """
    n = pred_key.size
    width = max(n, true_key.size, 1).bit_length()
    is_true = np.zeros(n, dtype=bool)
    if max(max_key, 1).bit_length() + 1 + width <= 63:
        packed = np.sort(
            np.concatenate(
                (true_key << (width + 1), (pred_key << (width + 1)) | (1 << width) | np.arange(n, dtype=np.int64))
            )
        )
        key, flag = packed >> (width + 1), (packed >> width) & 1
        same = key[1:] == key[:-1]
        if np.any(same & (flag[1:] == flag[:-1])):
            raise ValueError("the predictions or the truth hold a (post, tag) pair twice")
        hit = np.flatnonzero(same & (flag[1:] == 1) & (flag[:-1] == 0)) + 1
        is_true[packed[hit] & ((1 << width) - 1)] = True
        return is_true
    true_sorted = np.sort(true_key)
    order = np.argsort(pred_key)
    pred_sorted = pred_key[order]
    if np.any(true_sorted[1:] == true_sorted[:-1]) or np.any(pred_sorted[1:] == pred_sorted[:-1]):
        raise ValueError("the predictions or the truth hold a (post, tag) pair twice")
    if true_sorted.size:
        where = np.minimum(np.searchsorted(true_sorted, pred_sorted), true_sorted.size - 1)
        is_true[order] = true_sorted[where] == pred_sorted
    return is_true


class _Prepared:
    """Everything the metrics share, computed once per PredictionSet.

    The stored entries are sorted by (tag ascending, probability descending, true first) as one packed int64,
    `tag << 31 | descending bits << 1 | not true`, so the number of a tag's entries above any threshold is one
    `searchsorted` for every tag at once, and ties (equal probabilities in one tag) are equal `key >> 1`.
    """

    def __init__(self, ps: PredictionSet) -> None:
        n_posts, n_tags = int(ps.n_posts), len(ps.tags)
        if n_posts < 0:
            raise ValueError(f"n_posts must be >= 0, got {n_posts}")
        if n_tags >= 2**31 or n_posts >= 2**31:
            raise ValueError("at most 2**31 - 1 posts and tags")
        categories = np.asarray(ps.categories)
        if categories.shape != (n_tags,):
            raise ValueError(f"categories has shape {categories.shape}, expected ({n_tags},)")
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

        self.n_posts, self.n_tags = n_posts, n_tags
        self.categories = categories
        self.rating = _rating_mask(ps)
        self.frequency_rank = None if ps.frequency_rank is None else np.asarray(ps.frequency_rank)
        self.true_post = true_post
        self.pred_post, self.pred_tag, self.pred_prob = post, tag, prob
        self.pred_true = _match_truth(post * n_tags + tag, true_post * n_tags + true_tag, n_posts * n_tags)
        self.pred_desc = _descending(prob)

        self.key = np.sort((tag << 31) | (self.pred_desc << 1) | ~self.pred_true)
        self.true_key = self.key[(self.key & 1) == 0]  # a subsequence, so still sorted
        self.positives = np.bincount(true_tag, minlength=n_tags).astype(np.int64)
        stored = np.bincount(tag, minlength=n_tags)
        self.stored_true = np.bincount(tag[self.pred_true], minlength=n_tags)
        self.start = np.concatenate(([0], np.cumsum(stored)))
        self.true_start = np.concatenate(([0], np.cumsum(self.stored_true)))

    # -- counts at a threshold --

    def confusion(self, threshold: float, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """TP, FP, FN, TN (float64 arrays) of the tags `idx` at `prob > threshold`, over all n_posts posts."""
        threshold = float(threshold)
        if np.isnan(threshold):
            raise ValueError("the threshold is NaN")
        positives = self.positives[idx]
        if threshold < 0:  # every pair, stored or not, is above it
            tp, predicted = positives, np.full(idx.shape, self.n_posts, dtype=np.int64)
        else:
            # prob > threshold <=> descending bits < this bound
            bound = max(_ONE_BITS - _float32_floor_bits(threshold), 0)
            query = (idx.astype(np.int64) << 31) | (bound << 1)
            predicted = np.searchsorted(self.key, query) - self.start[idx]
            tp = np.searchsorted(self.true_key, query) - self.true_start[idx]
        tp = tp.astype(np.float64)
        fp = predicted - tp
        fn = positives - tp
        tn = self.n_posts - tp - fp - fn
        return tp, fp, fn, tn

    def subset_mask(self, category: str, rare_rank: int) -> np.ndarray:
        return _subset_mask(self.categories, self.rating, self.frequency_rank, self.positives, category, rare_rank)

    # -- average precision --

    @cached_property
    def tag_average_precision(self) -> np.ndarray:
        """scikit-learn's average precision of every tag over all n_posts posts (NaN where it has no positive)."""
        key = self.key[((self.key >> 1) & _DESC_MASK) < _ONE_BITS]  # prob > 0; zeros join the unstored block
        tag = key >> 31
        true = (key & 1) == 0
        start = np.concatenate(([0], np.cumsum(np.bincount(tag, minlength=self.n_tags))))
        sums = _tied_precision_sums(key >> 1, true, tag, start, self.n_tags)
        positives = self.positives.astype(np.float64)
        # The zero-probability block comes last and is tied: its positives all see precision positives / n_posts.
        in_block = positives - np.bincount(tag[true], minlength=self.n_tags)
        sums += in_block * positives / max(self.n_posts, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(positives > 0, sums / positives, np.nan)

    @cached_property
    def pooled(self) -> np.ndarray:
        """The entries with probability > 0 by probability descending: `descending << 32 | tag << 1 | not true`."""
        keep = self.pred_desc < _ONE_BITS
        return np.sort((self.pred_desc[keep] << 32) | (self.pred_tag[keep] << 1) | ~self.pred_true[keep])

    def micro_average_precision(self, mask: np.ndarray) -> float | None:
        positives = int(self.positives[mask].sum())
        if positives == 0:
            return None
        pooled = self.pooled
        if not mask.all():
            pooled = pooled[mask[(pooled >> 1) & 0x7FFFFFFF]]
        true = (pooled & 1) == 0
        total = float(_tied_precision_sums(pooled >> 32, true, None, np.zeros(2, np.int64), 1)[0])
        total += (positives - int(true.sum())) * positives / (self.n_posts * int(mask.sum()))
        return total / positives


def _tied_precision_sums(
    tie_key: np.ndarray, true: np.ndarray, segment: np.ndarray | None, start: np.ndarray, n_segments: int
) -> np.ndarray:
    """Per segment (tag), the sum over its true entries of the precision at the end of the entry's tie block.

    The entries are in ranking order within each contiguous segment (`segment` per entry, or None for a single
    one; `start` the segments' offsets), and equal `tie_key` are ties. Average precision is this sum divided by the
    number of positives: scikit-learn's step-wise definition, one point per distinct score.
    """
    if tie_key.size == 0:
        return np.zeros(n_segments)
    is_end = np.empty(tie_key.size, dtype=bool)
    is_end[:-1] = tie_key[1:] != tie_key[:-1]
    is_end[-1] = True
    ends = np.flatnonzero(is_end)
    cum_tp = np.cumsum(true, dtype=np.int64)
    tp_at_end = cum_tp[ends]
    tp_in_block = np.diff(tp_at_end, prepend=0)
    useful = tp_in_block > 0
    ends, tp_at_end, tp_in_block = ends[useful], tp_at_end[useful], tp_in_block[useful]
    which = segment[ends] if segment is not None else np.zeros(ends.size, dtype=np.int64)
    first = start[which]
    before = np.where(first > 0, cum_tp[np.maximum(first - 1, 0)], 0)
    precision = (tp_at_end - before) / (ends - first + 1)
    return np.bincount(which, weights=tp_in_block * precision, minlength=n_segments).astype(np.float64)


# --- scores from confusion counts ----------------------------------------------------------------------------------


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


def _scores(prep: _Prepared, threshold: float, idx: np.ndarray) -> dict:
    tp, fp, fn, tn = prep.confusion(threshold, idx)
    with_positive = (tp + fn) > 0
    micro = _rates(tp.sum(), fp.sum(), fn.sum(), tn.sum())
    per_tag = _rates(tp[with_positive], fp[with_positive], fn[with_positive], tn[with_positive])
    n_with = int(with_positive.sum())
    return {
        "micro": {name: float(value) for name, value in micro.items()},
        "macro": {name: float(value.mean()) if n_with else 0.0 for name, value in per_tag.items()},
        "tags": n_with,
        "positives": int(prep.positives[idx].sum()),
    }


def _gap(prep: _Prepared, threshold: float, idx: np.ndarray, average: str) -> float:
    """Precision - recall for the breakeven search, with precision 1 where nothing is predicted (the PR-curve
    convention), so the empty prediction above every probability is never taken for the P = R point."""
    tp, fp, fn, _ = prep.confusion(threshold, idx)
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
    prep: _Prepared, idx: np.ndarray, average: str, low: float, high: float, tolerance: float, max_steps: int
) -> float:
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    if not (low <= high):  # also refuses NaN
        raise ValueError(f"the search range [{low}, {high}] is empty")
    gap_low, gap_high = _gap(prep, low, idx, average), _gap(prep, high, idx, average)
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
        gap = _gap(prep, middle, idx, average)
        if gap == 0:
            return middle
        if (gap > 0) == (gap_low > 0):
            low, gap_low = middle, gap
        else:
            high, gap_high = middle, gap
    return float(low) if abs(gap_low) <= abs(gap_high) else float(high)


# --- the public API -------------------------------------------------------------------------------------------------


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
    if category == MetricCategory.GENERAL:
        return (categories == GENERAL) & ~rating
    if category == MetricCategory.CHARACTER:
        return (categories == CHARACTER) & ~rating
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
    raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")


def subset_mask(ps: PredictionSet, category: str, rare_rank: int = 1000) -> np.ndarray:
    """Boolean mask over `ps.tags` for a category of the report.

    "all": every tag; "general": category 0; "character": category 4; "rating": category 9 or a `rating:` name
    (general and character exclude such names); "rare": `frequency_rank >= rare_rank`. When `frequency_rank` is
    None the rank is by the number of truth pairs of the tag in this run (most frequent = rank 0), ties broken by
    tag index, so "rare" is every tag but the `rare_rank` most frequent in the truth.
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
    prep = _Prepared(ps)
    _, idx = _as_index(mask, prep.n_tags)
    return _scores(prep, threshold, idx)


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
    prep = _Prepared(ps)
    _, idx = _as_index(mask, prep.n_tags)
    threshold = _breakeven(prep, idx, average, low, high, tolerance, max_steps)
    return threshold, _scores(prep, threshold, idx)


def average_precision(ps: PredictionSet, mask: np.ndarray) -> dict[str, float | None]:
    """scikit-learn's `average_precision_score` over the tags of `mask`, over all n_posts posts.

    Step-wise: the sum over distinct scores, descending, of (R_n - R_{n-1}) * P_n, where tied scores form one step;
    unstored pairs have probability 0 and are tied with each other (and with stored zeros). "macro" is the mean of
    the per-tag AP over the tags with at least one positive; "micro" pools every (post, tag) pair of the subset.
    Either is None when the subset has no positive.
    """
    prep = _Prepared(ps)
    mask, _ = _as_index(mask, prep.n_tags)
    return _average_precision(prep, mask)


def _average_precision(prep: _Prepared, mask: np.ndarray) -> dict[str, float | None]:
    per_tag = prep.tag_average_precision[mask]
    per_tag = per_tag[~np.isnan(per_tag)]
    return {
        "macro": float(per_tag.mean()) if per_tag.size else None,
        "micro": prep.micro_average_precision(mask),
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
    prep = _Prepared(ps)
    sizes = np.asarray(truth_sizes, dtype=np.float64)
    if sizes.shape != (prep.n_posts,):
        raise ValueError(f"truth_sizes has shape {sizes.shape}, expected ({prep.n_posts},)")
    return _best_score_threshold(prep, sizes, candidates)


def _best_score_threshold(
    prep: _Prepared, sizes: np.ndarray, candidates: np.ndarray | None
) -> tuple[float, float | None]:
    if np.any(sizes < np.bincount(prep.true_post, minlength=prep.n_posts)):
        raise ValueError("truth_sizes is smaller than the number of truth pairs of some post")
    valid = sizes > 0
    n_valid = int(valid.sum())
    inverse = np.where(valid, 1 / np.where(valid, sizes, 1), 0.0)

    # The rating: per post, the highest stored rating probability, ties to the lowest tag index.
    is_rating = prep.rating[prep.pred_tag]
    r_post, r_tag, r_prob = prep.pred_post[is_rating], prep.pred_tag[is_rating], prep.pred_prob[is_rating]
    r_true = prep.pred_true[is_rating]
    order = np.lexsort((r_tag, -r_prob, r_post))
    first = order[np.flatnonzero(np.diff(r_post[order], prepend=-1) != 0)] if order.size else order
    rating_total = float(np.sum((2.0 * r_true[first] - 1) * inverse[r_post[first]]))

    # Non-rating entries of counted posts with prob > 0, by probability descending; the running sum of +-1/|T|.
    keep = ~is_rating & valid[prep.pred_post] & (prep.pred_desc < _ONE_BITS)
    packed = np.sort((prep.pred_desc[keep] << 32) | (prep.pred_post[keep] << 1) | ~prep.pred_true[keep])
    if packed.size:
        weights = np.where((packed & 1) == 0, 1.0, -1.0) * inverse[(packed >> 1) & 0x7FFFFFFF]
        desc = packed >> 32
        is_end = np.empty(desc.size, dtype=bool)
        is_end[:-1] = desc[1:] != desc[:-1]
        is_end[-1] = True
        distinct = (_ONE_BITS - desc[is_end]).astype(np.uint32).view(np.float32).astype(np.float64)  # descending
        # sums[k]: the total with the k highest distinct probabilities selected (long double: less rounding).
        sums = np.concatenate(([0.0], np.cumsum(weights.astype(np.longdouble))[is_end]))
    else:
        distinct, sums = np.zeros(0), np.zeros(1, dtype=np.longdouble)

    if candidates is None:
        # sums[k] is selected by t = distinct[k] (prob > t keeps the k above it), the last one by t = 0.0.
        thresholds = np.concatenate((distinct, [0.0]))
        totals = sums
    else:
        thresholds = np.asarray(candidates, dtype=np.float64).reshape(-1)
        if thresholds.size == 0 or np.any(np.isnan(thresholds)) or np.any(thresholds < 0):
            raise ValueError("candidates must be a non-empty array of thresholds >= 0")
        above = distinct.size - np.searchsorted(distinct[::-1], thresholds, side="right")
        totals = sums[above]
    best = totals.max()
    ties = np.flatnonzero(totals >= best - SCORE_TIE_TOLERANCE)
    chosen = ties[np.argmin(thresholds[ties])]
    threshold = float(thresholds[chosen])
    if n_valid == 0:
        return threshold, None
    return threshold, float((totals[chosen] + rating_total) / n_valid)


def tagger_metrics(ps: PredictionSet, truth_sizes: np.ndarray, chosen_threshold: float, rare_rank: int = 1000) -> dict:
    """Every metric of one tagger, as JSON-ready builtins.

    For each category of ("all", "general", "character", "rating", "rare") with at least one positive:
    {"micro": {"pr_threshold", precision, recall, f1, f2, mcc, accuracy} at the micro P = R threshold,
    "macro": {the same at the macro P = R threshold}, "at_threshold": scores_at(chosen_threshold),
    "average_precision": {"macro", "micro"}}; and "best_score_threshold": {"threshold", "mean_score"}.
    """
    prep = _Prepared(ps)
    sizes = np.asarray(truth_sizes, dtype=np.float64)
    if sizes.shape != (prep.n_posts,):
        raise ValueError(f"truth_sizes has shape {sizes.shape}, expected ({prep.n_posts},)")
    result: dict = {}
    for category in CATEGORIES:
        mask = prep.subset_mask(category, rare_rank)
        idx = np.flatnonzero(mask)
        if prep.positives[idx].sum() == 0:
            continue
        entry: dict = {}
        for average in ("micro", "macro"):
            threshold = _breakeven(prep, idx, average, *BREAKEVEN_SEARCH)
            entry[average] = {"pr_threshold": threshold, **_scores(prep, threshold, idx)[average]}
        entry["at_threshold"] = _scores(prep, chosen_threshold, idx)
        entry["average_precision"] = _average_precision(prep, mask)
        result[category] = entry
    threshold, mean_score = _best_score_threshold(prep, sizes, None)
    result["best_score_threshold"] = {"threshold": threshold, "mean_score": mean_score}
    return result
