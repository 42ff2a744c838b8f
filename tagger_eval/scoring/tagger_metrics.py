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
from tagger_eval.scoring.threshold_metrics import PredictionSet, tagger_metrics
from tagger_eval.run.evaluation import PostResult
from tagger_eval.scoring.tag_distance import TagSimilarity, soft_scores
from tagger_eval.tags import normalise_tag

CATEGORY_ORDER = ("all", "general", "character", "rating", "rare")


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
            aliases: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per tagger: the threshold metrics (`metrics.tagger_metrics`) and the mean soft score. "rare" tags are those
    outside the 1,000 most frequent of the model's tag list when the tagger gives counts, else of the run's truth."""
    by_tagger: dict[str, list[PostResult]] = {}
    for result in results:
        if result.status == "scored" and result.truth_tags is not None:
            by_tagger.setdefault(result.tagger, []).append(result)
    similarity = TagSimilarity.from_dataset(dataset) if by_tagger else None
    computed = {}
    for label, group in sorted(by_tagger.items()):
        group.sort(key=lambda result: result.post)
        predictions, sizes = prediction_set(group, (tag_counts or {}).get(label), aliases)
        threshold = group[0].threshold if group[0].threshold is not None else 0.5
        soft = soft_scores(group, similarity)
        computed[label] = {**tagger_metrics(predictions, sizes, threshold),
                           "soft_score": {"mean": statistics.fmean(soft), "median": statistics.median(soft)}}
    return computed


def metrics_table(computed: Mapping[str, Mapping[str, Any]], scores: Mapping[str, float | None]) -> list[str]:
    """The second table: per tagger and category, the P=R point (micro, and macro F1), MCC and average precision;
    then each tagger's best threshold for the score and its soft score."""
    header = ("tagger", "category", "P=R thr", "F1", "F2", "MCC", "macro thr", "macro F1", "AP macro", "AP micro")
    rows = [header]
    order = sorted(computed, key=lambda label: (scores.get(label) is None, -(scores.get(label) or 0.0), label))

    def number(value: float | None, template: str = "{:.3f}") -> str:
        return "-" if value is None else template.format(value)

    for label in order:
        metrics = computed[label]
        for category in CATEGORY_ORDER:
            if category not in metrics:
                continue
            entry = metrics[category]
            micro, macro, ap = entry["micro"], entry["macro"], entry["average_precision"]
            rows.append((label, category, number(micro["pr_threshold"]), number(micro["f1"]), number(micro["f2"]),
                         number(micro["mcc"]), number(macro["pr_threshold"]), number(macro["f1"]),
                         number(ap["macro"]), number(ap["micro"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for label in order:
        best, soft = computed[label]["best_score_threshold"], computed[label]["soft_score"]
        lines.append(f"{label}: best threshold for the score {best['threshold']:.3f} (mean score "
                     f"{best['mean_score']:.3f}, {number(scores.get(label))} at the run's threshold); "
                     f"soft score {soft['mean']:.3f}")
    return lines
