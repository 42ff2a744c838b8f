"""The tag-distance ("soft") score: a wrong tag close to a true tag the tagger missed costs less than an unrelated one.

The seed score (`tagger_eval.scoring.post_score.score`) charges every wrong tag a full 1/|T|, so `very_long_hair`
predicted for `long_hair` costs as much as `hat`. The soft score keeps the seed's scale and gives each wrong tag
partial credit by its similarity to the closest true tag that the prediction missed. With P the predicted and T the
truth tags (sets):

    soft = (|P ∩ T| - Σ_{p ∈ P \\ T} (1 - s(p))) / |T|
    s(p) = max_{t ∈ T \\ P} sim(p, t)        (0 when every true tag was predicted)

It is a separate score; the seed score, its floors and its results are unchanged.

Why the credit comes only from *missed* true tags: a wrong tag is a near-miss only if it stands in for a tag the tagger
failed to give. If every true tag was predicted, a near-duplicate of one of them (`very_long_hair` beside a correct
`long_hair`) adds nothing, so it earns nothing and costs a full wrong tag: redundancy is not rewarded.

Properties (for any similarity with values in [0, 1]; property-tested in tests/test_tag_distance.py):

- it equals the seed score, exactly, when every similarity is 0;
- it is never below the seed score (each wrong tag costs 1 - s(p) <= 1) and never above 1 (each wrong tag still
  costs 1 - s(p) >= 0, so wrong tags never add to |P ∩ T|);
- the control (P == T) scores exactly 1.0; a prediction of only wrong tags scores at least -|P|/|T|;
- it depends on the sets only: order and duplicates in either argument do not matter (the penalty is summed with
  `math.fsum`, which is exact before one rounding, so not even float summation order leaks in);
- it is monotone in the similarity: raising any sim(p, t) never lowers the score;
- adding a wrong tag never raises it (its contribution -(1 - s) is <= 0), so near-duplicates cannot be farmed;
- rating tags (`rating:*`) never earn or give credit, whatever the similarity says: a wrong rating is a wrong rating.

Several wrong tags may draw credit from the *same* missed true tag (each takes its own max, `matching="max"`, the
default). That is the simpler rule and keeps every property above. It breaks one property the stricter rule keeps:
*predicting one more true tag can lower the score.* With T = {a}, P = {x, y} and sim(x, a) = sim(y, a) = 0.9 the
soft score is (0 - 0.1 - 0.1) / 1 = -0.2; add the correct `a` and x, y lose their donor: (1 - 1 - 1) / 1 = -1.
Frequent "hub" tags (`1girl`, `solo`) co-occur with nearly everything and are the likeliest donors. `matching=
"one-to-one"` pairs wrong tags with missed tags one-to-one (a maximum-weight bipartite matching; unmatched wrong
tags earn 0): it is never above the default, keeps every property above, and also guarantees that adding a true tag
never lowers the score (dropping one missed tag from the matching loses at most one credit <= 1, the +1 pays for it).

Similarity. `soft_score` takes any object with `similarity(a, b) -> float` in [0, 1] (the `Similarity` protocol);
that is the extension point for, e.g., a text-embedding model (cosine of tag-name embeddings clipped to [0, 1]).
The one built in, `TagSimilarity`, comes from co-occurrence of tags on posts (see its docstring for the measure).
An object that also has `matrix(rows, cols) -> array` (as `TagSimilarity` does) is asked for a post's whole table at
once, which is what makes scoring 30,000 posts fast.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tagger_eval.records import PostStatus
from tagger_eval.tags import is_rating


class SimilarityMeasure(StrEnum):
    """How `TagSimilarity` compares two tags' post-incidence vectors (see its docstring)."""

    COSINE = "cosine"
    JACCARD = "jaccard"


class SoftScoreMatching(StrEnum):
    """How wrong tags draw credit from missed tags (module docstring)."""

    MAX = "max"  # each wrong tag from its closest missed tag
    ONE_TO_ONE = "one-to-one"  # each missed tag gives credit to one wrong tag at most (needs scipy)


@runtime_checkable
class Similarity(Protocol):
    """How close two tag names are: symmetric, in [0, 1], 1 for a tag and itself. Anything with this method can
    be passed to `soft_score` (co-occurrence here; an embedding model can be plugged in the same way)."""

    def similarity(self, a: str, b: str) -> float: ...


class TagSimilarity:
    """Tag similarity from co-occurrence on posts: c(a) posts carry a, c(a, b) carry both.

    The measure (`measure="cosine"`, the default) is the cosine of the two tags' post-incidence vectors, also called
    the Ochiai coefficient:

        sim(a, b) = c(a, b) / sqrt(c(a) c(b))  =  sqrt(P(a | b) P(b | a))

    It is symmetric, lies in [0, 1], is 0 exactly when a and b never share a post and 1 exactly when they always
    appear together (c(a, b) = c(a) = c(b)). Why cosine rather than Jaccard, `c(a,b) / (c(a) + c(b) - c(a,b))`
    (available as `measure="jaccard"`, always <= cosine): typical near-misses are a specific tag and a broader one,
    of very different frequency. On Danbooru `very_long_hair` implies `long_hair` and is about 1/5 as frequent, so
    Jaccard gives the pair c(vlh)/c(lh) ~ 0.20 while cosine gives its square root ~ 0.45: cosine, the geometric mean
    of the two conditional probabilities, punishes the imbalance less. Unlike PMI or lift it is bounded, and unlike
    P(t | p) alone it is symmetric and dampens hub tags (`1girl`, `solo`), which divide by sqrt of their huge count.

    What co-occurrence cannot see: tags that are alternatives to each other (`blue_eyes` / `aqua_eyes`,
    `long_hair` / `short_hair`) rarely share a post and so get little or no credit; tags that merely go together
    (`1girl` / `solo`) get credit without meaning the same. An embedding-based `Similarity` measures the other thing.

    Rules on top of the measure: sim(a, a) = 1 for any a; sim(a, b) = 0 for a != b when either tag is on fewer than
    `min_count` posts (too few to say anything) or unknown, or when either is a rating tag (`rating:*`) — a wrong
    rating is a wrong rating, and ratings co-occurring with everything would otherwise hand out credit.
    Tag names are compared as given: pass them normalised (as `Dataset` and the taggers' output already are).
    """

    # Pair codes are reduced (sorted and counted) whenever this many are pending, bounding memory on large datasets.
    _REDUCE_AT = 1 << 24

    def __init__(self, index: Mapping[str, int], counts: np.ndarray, pair_codes: np.ndarray,
                 pair_counts: np.ndarray, posts: int, min_count: int = 2,
                 measure: str = SimilarityMeasure.COSINE) -> None:
        """Low level; use `from_posts` or `from_dataset`. `pair_codes` are sorted `i * len(index) + j` (i < j)."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if measure not in tuple(SimilarityMeasure):
            raise ValueError(f"unknown similarity measure {measure!r}; expected one of {', '.join(SimilarityMeasure)}")
        self._index = dict(index)
        self._counts = np.asarray(counts, dtype=np.int64)
        self._pair_codes = np.asarray(pair_codes, dtype=np.int64)
        self._pair_counts = np.asarray(pair_counts, dtype=np.int64)
        self._size = len(self._index)
        self._rating = np.zeros(self._size, dtype=bool)
        for tag, i in self._index.items():
            self._rating[i] = is_rating(tag)
        self.posts = posts
        self.min_count = min_count
        self.measure = measure

    # --- building --------------------------------------------------------------------------------------------------

    @classmethod
    def from_posts(cls, tag_sets: Iterable[Collection[str]], min_count: int = 2,
                   measure: str = SimilarityMeasure.COSINE) -> TagSimilarity:
        """Count every tag and every co-occurring pair over the posts (one tag set per post; repeats count once).

        Sparse: only pairs that share a post are stored, as sorted integer codes with their counts; the pairs of all
        posts with the same number of tags are formed in one numpy operation, so 30,000 posts of ~30 tags (13
        million pairs) take about a second. Rating tags are counted but form no pairs (they never get credit).
        """
        index: dict[str, int] = {}
        all_ids: list[int] = []
        pair_ids: list[int] = []
        pair_lengths: list[int] = []
        posts = 0
        for tags in tag_sets:
            if isinstance(tags, str):
                raise TypeError(f"each post must be a collection of tag names, not the string {tags!r}")
            posts += 1
            length = 0
            for tag in set(tags):
                i = index.setdefault(tag, len(index))
                all_ids.append(i)
                if not is_rating(tag):
                    pair_ids.append(i)
                    length += 1
            pair_lengths.append(length)
        size = len(index)
        counts = np.bincount(np.asarray(all_ids, dtype=np.int64), minlength=size).astype(np.int64)
        codes, pair_counts = cls._count_pairs(np.asarray(pair_ids, dtype=np.int64),
                                              np.asarray(pair_lengths, dtype=np.int64), size)
        return cls(index, counts, codes, pair_counts, posts, min_count=min_count, measure=measure)

    @classmethod
    def from_dataset(cls, dataset: Any, min_count: int = 2, measure: str = SimilarityMeasure.COSINE) -> TagSimilarity:
        """From every post's truth tags of a `tagger_eval.data.dataset.Dataset` (all categories, ratings included: the
        similarity does not depend on a run's tag scope; a scope only decides which tags get compared)."""
        return cls.from_posts((post.truth for post in dataset), min_count=min_count, measure=measure)

    @classmethod
    def _count_pairs(cls, ids: np.ndarray, lengths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else lengths
        pending: list[np.ndarray] = []
        pending_size = 0
        reduced: list[tuple[np.ndarray, np.ndarray]] = []
        for n in np.unique(lengths):
            if n < 2:
                continue
            n = int(n)
            upper_i, upper_j = np.triu_indices(n, 1)
            group = starts[lengths == n]
            rows_per_chunk = max(1, cls._REDUCE_AT // len(upper_i))
            for first in range(0, len(group), rows_per_chunk):
                block = np.sort(ids[group[first:first + rows_per_chunk, None] + np.arange(n)], axis=1)
                codes = (block[:, upper_i] * size + block[:, upper_j]).ravel()
                pending.append(codes)
                pending_size += len(codes)
                if pending_size >= cls._REDUCE_AT:
                    reduced.append(np.unique(np.concatenate(pending), return_counts=True))
                    pending, pending_size = [], 0
        if pending:
            reduced.append(np.unique(np.concatenate(pending), return_counts=True))
        if not reduced:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if len(reduced) == 1:
            codes, counts = reduced[0]
            return codes.astype(np.int64), counts.astype(np.int64)
        all_codes = np.concatenate([codes for codes, _ in reduced])
        all_counts = np.concatenate([counts for _, counts in reduced]).astype(np.int64)
        codes, inverse = np.unique(all_codes, return_inverse=True)
        counts = np.zeros(len(codes), dtype=np.int64)
        np.add.at(counts, inverse, all_counts)
        return codes.astype(np.int64), counts

    # --- reading ---------------------------------------------------------------------------------------------------

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(self._index)

    def count(self, tag: str) -> int:
        """How many posts carry the tag (0 if none)."""
        i = self._index.get(tag)
        return 0 if i is None else int(self._counts[i])

    def cooccurrence(self, a: str, b: str) -> int:
        """How many posts carry both tags (for a == b, the tag's count; 0 for any pair with a rating tag)."""
        if a == b:
            return self.count(a)
        i, j = self._index.get(a), self._index.get(b)
        if i is None or j is None:
            return 0
        code = min(i, j) * self._size + max(i, j)
        k = int(np.searchsorted(self._pair_codes, code))
        if k < len(self._pair_codes) and self._pair_codes[k] == code:
            return int(self._pair_counts[k])
        return 0

    def similarity(self, a: str, b: str) -> float:
        if a == b:
            return 1.0
        if is_rating(a) or is_rating(b):
            return 0.0
        count_a, count_b = self.count(a), self.count(b)
        if count_a < self.min_count or count_b < self.min_count:
            return 0.0
        both = self.cooccurrence(a, b)
        cosine = self.measure == SimilarityMeasure.COSINE
        value = both / math.sqrt(count_a * count_b) if cosine else both / (count_a + count_b - both)
        return min(1.0, value)

    def matrix(self, rows: Sequence[str], cols: Sequence[str]) -> np.ndarray:
        """`similarity(r, c)` for every r in rows and c in cols, as a float array of shape (len(rows), len(cols)),
        computed in one vectorised lookup (equal, value for value, to calling `similarity`)."""
        row_ids = np.array([self._index.get(tag, -1) for tag in rows], dtype=np.int64)
        col_ids = np.array([self._index.get(tag, -1) for tag in cols], dtype=np.int64)
        result = np.zeros((len(rows), len(cols)), dtype=np.float64)
        if len(rows) and len(cols) and self._size:
            i, j = np.broadcast_arrays(row_ids[:, None], col_ids[None, :])
            known = (i >= 0) & (j >= 0)
            count_i = np.where(i >= 0, self._counts[np.maximum(i, 0)], 0)
            count_j = np.where(j >= 0, self._counts[np.maximum(j, 0)], 0)
            rating = (i >= 0) & self._rating[np.maximum(i, 0)] | (j >= 0) & self._rating[np.maximum(j, 0)]
            usable = known & ~rating & (i != j) & (count_i >= self.min_count) & (count_j >= self.min_count)
            codes = np.minimum(i, j) * self._size + np.maximum(i, j)
            both = np.zeros(codes.shape, dtype=np.int64)
            if len(self._pair_codes):
                k = np.minimum(np.searchsorted(self._pair_codes, codes), len(self._pair_codes) - 1)
                found = usable & (self._pair_codes[k] == codes)
                both[found] = self._pair_counts[k[found]]
            if self.measure == SimilarityMeasure.COSINE:
                denominator = np.sqrt((count_i * count_j).astype(np.float64))
            else:
                denominator = (count_i + count_j - both).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.where(usable & (both > 0), both / np.where(denominator > 0, denominator, 1.0), 0.0)
            result = np.minimum(1.0, value)
        names_equal = np.array([[r == c for c in cols] for r in rows], dtype=bool).reshape(len(rows), len(cols))
        result[names_equal] = 1.0
        return result


# --- the soft score ------------------------------------------------------------------------------------------------


def soft_score(predicted: Collection[str], truth: Collection[str], similarity: Similarity, *,
               matching: str = SoftScoreMatching.MAX) -> float:
    """`(|P ∩ T| - Σ_{p ∈ P \\ T} (1 - s(p))) / |T|` with `s(p) = max_{t ∈ T \\ P} sim(p, t)` (module docstring).

    `matching="one-to-one"` lets each missed true tag give credit to one wrong tag only. Raises `ValueError` for an
    empty truth set (like `scoring.score`) or a similarity outside [0, 1].
    """
    predicted_set, truth_set = set(predicted), set(truth)
    if not truth_set:
        raise ValueError("soft score is undefined for an empty truth set: the post has no tags to compare with")
    return soft_score_from_errors(len(predicted_set & truth_set), len(truth_set), predicted_set - truth_set,
                                  truth_set - predicted_set, similarity, matching=matching)


def soft_score_from_errors(correct: int, truth_size: int, wrong: Iterable[str], missed: Iterable[str],
                           similarity: Similarity, *, matching: str = SoftScoreMatching.MAX) -> float:
    """The soft score from what a run keeps per post: the count of correct tags, |T|, the wrong and missed tags."""
    if matching not in tuple(SoftScoreMatching):
        raise ValueError(f"unknown matching {matching!r}; expected one of {', '.join(SoftScoreMatching)}")
    if truth_size <= 0:
        raise ValueError("soft score is undefined for an empty truth set: the post has no tags to compare with")
    wrong_tags = sorted(set(wrong))
    credits = [0.0] * len(wrong_tags)
    # Ratings neither earn nor give credit, whatever the similarity plugged in says.
    earners = [k for k, tag in enumerate(wrong_tags) if not is_rating(tag)]
    donors = sorted(tag for tag in set(missed) if not is_rating(tag))
    if earners and donors:
        table = _table(similarity, [wrong_tags[k] for k in earners], donors)
        best = [max(row) for row in table] if matching == SoftScoreMatching.MAX else _matched_credits(table)
        for k, value in zip(earners, best, strict=True):
            credits[k] = value
    penalty = math.fsum(1.0 - value for value in credits)
    return (correct - penalty) / truth_size


def soft_scores(results: Iterable[Any], similarity: Similarity, *,
                matching: str = SoftScoreMatching.MAX) -> list[float]:
    """The soft score of every *scored* result, in order (skipped and errored ones are left out).

    A result is a `tagger_eval.run.evaluation.PostResult` or a post entry of a results document (`results.py`): either
    carries the correct count, |T| and the full wrong and missed tag lists, which is all the soft score needs.
    """
    scores = []
    for result in results:
        if isinstance(result, Mapping):
            status, counts = result.get("status"), result
            wrong, missed = result.get("wrong_tags", ()), result.get("missed_tags", ())
        else:
            status, counts = result.status, result.counts or {}
            wrong, missed = result.wrong_tags, result.missed_tags
        if status != PostStatus.SCORED:
            continue
        scores.append(soft_score_from_errors(counts["correct"], counts["truth_size"], wrong, missed, similarity,
                                             matching=matching))
    return scores


def _table(similarity: Similarity, rows: list[str], cols: list[str]) -> list[list[float]]:
    matrix = getattr(similarity, "matrix", None)
    if callable(matrix):
        table = np.asarray(matrix(rows, cols), dtype=np.float64).tolist()
    else:
        table = [[float(similarity.similarity(row, col)) for col in cols] for row in rows]
    for row, values in zip(rows, table, strict=True):
        for col, value in zip(cols, values, strict=True):
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise ValueError(f"similarity({row!r}, {col!r}) = {value!r} is outside [0, 1]")
    return table


def _matched_credits(table: list[list[float]]) -> list[float]:
    """Per row, the weight of its edge in a maximum-weight one-to-one matching of rows to columns (0 if unmatched)."""
    from scipy.optimize import linear_sum_assignment

    rows, columns = linear_sum_assignment(np.asarray(table, dtype=np.float64), maximize=True)
    matched = [0.0] * len(table)
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        matched[row] = table[row][column]
    return matched
