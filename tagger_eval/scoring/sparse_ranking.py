"""The ranking engine behind `threshold_metrics`: one tagger's stored probabilities sorted once, then only counted.

`match_truth` marks which stored predictions are truth pairs (one sort of both); `SparseRanking` ranks the marked
entries. Every count a metric needs (predictions above a threshold, true positives among them, precision at each
distinct probability, the running seed score) is then a `searchsorted` or a cumulative sum over one sorted array of
packed int64 keys, for every tag at once: nothing loops over posts, tags or thresholds, and nothing builds a dense
posts x tags matrix.

A probability enters a key as its "descending bits", `bits(1.0) - bits(prob)` of the float32: non-negative float32
values order like their bit patterns read as integers, so this is 0 for probability 1, `_ONE_BITS` for 0, and
increases as the probability decreases; equal probabilities (ties) have equal keys.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

_ONE_BITS = 0x3F800000  # float32 1.0: probabilities in [0, 1] have bit patterns in [0, this]
_DESC_MASK = (1 << 30) - 1
_INDEX_MASK = 0x7FFFFFFF  # a tag or post index packed into 31 bits


def _float32_floor_bits(threshold: float) -> int:
    """The bit pattern of the largest float32 <= threshold (threshold >= 0): `prob > threshold` <=> bits(prob) > it."""
    value = np.float32(min(threshold, 2.0) + 0.0)  # + 0.0: -0.0 becomes 0.0, whose bit pattern is 0
    if float(value) > threshold:
        value = np.nextafter(value, np.float32(-np.inf))
    return int(np.array(value, dtype=np.float32).view(np.uint32))


def _descending(prob: np.ndarray) -> np.ndarray:
    """The descending bits of float32 probabilities, as int64."""
    return _ONE_BITS - prob.view(np.uint32).astype(np.int64)


def _block_ends(key: np.ndarray) -> np.ndarray:
    """Of a non-empty sorted key array, whether each entry is the last of its run of equal keys (its tie block)."""
    is_end = np.empty(key.size, dtype=bool)
    is_end[:-1] = key[1:] != key[:-1]
    is_end[-1] = True
    return is_end


def match_truth(pred_key: np.ndarray, true_key: np.ndarray, max_key: int) -> np.ndarray:
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
    ends = np.flatnonzero(_block_ends(tie_key))
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


class SparseRanking:
    """The stored (post, tag, probability) entries of one tagger's run, each marked true or not, ranked once.

    The entries are sorted by (tag ascending, probability descending, true first) as one packed int64,
    `tag << 31 | descending bits << 1 | not true`, so the number of a tag's entries above any threshold is one
    `searchsorted` for every tag at once, and ties (equal probabilities in one tag) are equal `key >> 1`.
    Unstored pairs count as probability 0. The arrays are int64 indices (already checked against `n_posts` and
    `n_tags`) and float32 probabilities in [0, 1] without -0.0; `pred_true` says which predictions are truth pairs.
    """

    def __init__(
        self,
        *,
        n_posts: int,
        n_tags: int,
        pred_post: np.ndarray,
        pred_tag: np.ndarray,
        pred_prob: np.ndarray,
        pred_true: np.ndarray,
        true_post: np.ndarray,
        true_tag: np.ndarray,
    ) -> None:
        self.n_posts, self.n_tags = n_posts, n_tags
        self.pred_post, self.pred_tag, self.pred_prob, self.pred_true = pred_post, pred_tag, pred_prob, pred_true
        self.true_post = true_post
        self.pred_desc = _descending(pred_prob)
        self.key = np.sort((pred_tag << 31) | (self.pred_desc << 1) | ~pred_true)
        self.true_key = self.key[(self.key & 1) == 0]  # a subsequence, so still sorted
        self.positives = np.bincount(true_tag, minlength=n_tags).astype(np.int64)
        # Where each tag's entries (and its true entries) begin in `key` (and `true_key`).
        self.start = np.concatenate(([0], np.cumsum(np.bincount(pred_tag, minlength=n_tags))))
        self.true_start = np.concatenate(([0], np.cumsum(np.bincount(pred_tag[pred_true], minlength=n_tags))))

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
        """Average precision of every (post, tag) pair of the tags of `mask` pooled; None without a positive."""
        positives = int(self.positives[mask].sum())
        if positives == 0:
            return None
        pooled = self.pooled
        if not mask.all():
            pooled = pooled[mask[(pooled >> 1) & _INDEX_MASK]]
        true = (pooled & 1) == 0
        total = float(_tied_precision_sums(pooled >> 32, true, None, np.zeros(2, np.int64), 1)[0])
        total += (positives - int(true.sum())) * positives / (self.n_posts * int(mask.sum()))
        return total / positives

    def score_steps(self, selected: np.ndarray, post_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The running sum of a per-post reward as the threshold falls through the `selected` entries (prob > 0).

        A true entry adds `post_weight[post]`, a wrong one subtracts it. Returns the distinct probabilities,
        descending (float64), and `sums` (long double, for less rounding): `sums[k]` is the total with the entries
        of the k highest distinct probabilities chosen, `sums[0]` = 0.
        """
        keep = selected & (self.pred_desc < _ONE_BITS)
        packed = np.sort((self.pred_desc[keep] << 32) | (self.pred_post[keep] << 1) | ~self.pred_true[keep])
        if not packed.size:
            return np.zeros(0), np.zeros(1, dtype=np.longdouble)
        weights = np.where((packed & 1) == 0, 1.0, -1.0) * post_weight[(packed >> 1) & _INDEX_MASK]
        desc = packed >> 32
        is_end = _block_ends(desc)
        distinct = (_ONE_BITS - desc[is_end]).astype(np.uint32).view(np.float32).astype(np.float64)
        return distinct, np.concatenate(([0.0], np.cumsum(weights.astype(np.longdouble))[is_end]))

    def top_per_post(self, selected: np.ndarray) -> np.ndarray:
        """The index of each post's first `selected` entry: the highest probability, the lowest tag index on a tie."""
        chosen = np.flatnonzero(selected)
        post, tag, prob = self.pred_post[chosen], self.pred_tag[chosen], self.pred_prob[chosen]
        order = np.lexsort((tag, -prob, post))
        first = order[np.flatnonzero(np.diff(post[order], prepend=-1) != 0)] if order.size else order
        return chosen[first]
