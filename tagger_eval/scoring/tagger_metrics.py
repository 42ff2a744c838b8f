"""The run's metrics beyond the seed score (`--tagger-metrics=full`): built from the per-post results at session end.

Each tagger's kept probabilities become one sparse `metrics.PredictionSet`; its label space is every tag seen in
the run's truth or kept probabilities (so accuracy and MCC count true negatives over those tags only). The soft
score uses tag co-occurrence in the dataset (`tag_distance`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tagger_eval.data.dataset import Dataset
from tagger_eval.records import PostResult, PostStatus, group_by_tagger
from tagger_eval.scoring.tag_distance import SimilarityMeasure, SoftScoreMatching, TagSimilarity, soft_scores
from tagger_eval.scoring.threshold_metrics import PredictionSet, tagger_metrics
from tagger_eval.tags import normalise_tag


def frequency_ranks(tags: tuple[str, ...], counts: Mapping[str, int] | None,
                    aliases: Mapping[str, str]) -> np.ndarray | None:
    """Each tag's rank in the model's tag list by count (0 = most frequent); tags the list lacks rank last."""
    if not counts:
        return None
    merged: dict[str, int] = {}
    for name, count in counts.items():
        tag = normalise_tag(name)
        tag = aliases.get(tag, tag)
        merged[tag] = max(count, merged.get(tag, 0))
    ranked = {tag: rank for rank, tag in enumerate(sorted(merged, key=lambda tag: (-merged[tag], tag)))}
    return np.array([ranked.get(tag, len(ranked)) for tag in tags], dtype=np.int64)


def prediction_set(results: list[PostResult], counts: Mapping[str, int] | None = None,
                   aliases: Mapping[str, str] | None = None) -> tuple[PredictionSet, np.ndarray]:
    """The sparse predictions and truth of one tagger's scored posts, and each post's truth size."""
    tags: dict[str, int] = {}
    categories: dict[str, int] = {}
    pred_post, pred_tag, pred_prob, true_post, true_tag, sizes = [], [], [], [], [], []
    for index, result in enumerate(results):
        categories.update(result.categories or {})
        for tag, probability in (result.probabilities or {}).items():
            pred_post.append(index)
            pred_tag.append(tags.setdefault(tag, len(tags)))
            pred_prob.append(probability)
        for tag in result.truth_tags or ():
            true_post.append(index)
            true_tag.append(tags.setdefault(tag, len(tags)))
        sizes.append(len(result.truth_tags or ()))
    names = tuple(tags)
    as_int = np.int32
    return PredictionSet(
        n_posts=len(results),
        tags=names,
        categories=np.array([categories.get(tag, -1) for tag in names], dtype=np.int64),
        pred_post=np.array(pred_post, dtype=as_int),
        pred_tag=np.array(pred_tag, dtype=as_int),
        pred_prob=np.array(pred_prob, dtype=np.float32),
        true_post=np.array(true_post, dtype=as_int),
        true_tag=np.array(true_tag, dtype=as_int),
        frequency_rank=frequency_ranks(names, counts, aliases or {}),
    ), np.array(sizes, dtype=np.float64)


def compute(results: Iterable[PostResult], dataset: Dataset, tag_counts: Mapping[str, Mapping[str, int]] | None = None,
            aliases: Mapping[str, str] | None = None, matching: SoftScoreMatching = SoftScoreMatching.MAX,
            measure: SimilarityMeasure = SimilarityMeasure.COSINE) -> dict[str, dict[str, Any]]:
    """Per tagger: the threshold metrics (`metrics.tagger_metrics`) and the mean soft score. "rare" tags are those
    outside the 1,000 most frequent of the model's tag list when the tagger gives counts, else of the run's truth."""
    by_tagger = group_by_tagger(result for result in results
                                if result.status == PostStatus.SCORED and result.truth_tags is not None)
    if not by_tagger:
        return {}
    similarity = TagSimilarity.from_dataset(dataset, measure=measure)
    computed = {}
    for label, group in sorted(by_tagger.items()):
        group.sort(key=lambda result: result.post)
        predictions, sizes = prediction_set(group, (tag_counts or {}).get(label), aliases)
        threshold = group[0].threshold if group[0].threshold is not None else 0.5
        soft = soft_scores(group, similarity, matching=matching)
        computed[label] = {**tagger_metrics(predictions, sizes, threshold),
                           "soft_score": {"mean": statistics.fmean(soft), "median": statistics.median(soft)}}
    return computed
