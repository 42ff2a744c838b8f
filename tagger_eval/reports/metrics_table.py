"""The run's metrics as the second terminal table (`--tagger-metrics=full`)."""

from __future__ import annotations

from collections.abc import Mapping
from inspect import signature
from typing import Any

from tagger_eval.records import leaderboard_order
from tagger_eval.reports.text_table import format_table, number
from tagger_eval.scoring.threshold_metrics import MetricCategory, tagger_metrics
from tagger_eval.tags import printable

RARE_RANK: int = signature(tagger_metrics).parameters["rare_rank"].default  # "rare": outside this many most frequent
NOT_AVAILABLE = "n/a"
RARE_NOTE = (f"rare n/a: no truth tag lies outside the {RARE_RANK:,} most frequent (of the model's tag list, else "
             "of the run's truth)")


def metrics_table(computed: Mapping[str, Mapping[str, Any]], scores: Mapping[str, float | None]) -> list[str]:
    """Per tagger and category, the P=R point (micro, and macro F1), MCC and average precision; then each tagger's
    best threshold for the score and its soft score. Taggers in leaderboard order (`scores`: their mean scores).

    A category a tagger cannot output (copyright, artist, meta, year) has no row; an empty `rare` category (a small
    dataset: fewer tags than the most frequent that are not rare) has a row of n/a and a line saying why."""
    header = ("tagger", "category", "P=R thr", "F1", "F2", "MCC", "macro thr", "macro F1", "AP macro", "AP micro")
    order = leaderboard_order(computed, scores.get)
    rows = []
    rare_missing = False
    for label in order:
        for category in MetricCategory:
            if category not in computed[label]:
                if category == MetricCategory.RARE:
                    rows.append((printable(label), category.value, *[NOT_AVAILABLE] * (len(header) - 2)))
                    rare_missing = True
                continue
            entry = computed[label][category]
            micro, macro, ap = entry["micro"], entry["macro"], entry["average_precision"]
            rows.append((printable(label), category.value, number(micro["pr_threshold"]), number(micro["f1"]),
                         number(micro["f2"]), number(micro["mcc"]), number(macro["pr_threshold"]),
                         number(macro["f1"]), number(ap["macro"]), number(ap["micro"])))
    lines = format_table(header, rows, left_columns=2)
    if rare_missing:
        lines.append(RARE_NOTE)
    for label in order:
        best, soft = computed[label]["best_score_threshold"], computed[label]["soft_score"]
        lines.append(f"{printable(label)}: best threshold for the score {best['threshold']:.3f} (mean score "
                     f"{best['mean_score']:.3f}, {number(scores.get(label))} at the run's threshold); "
                     f"soft score {soft['mean']:.3f}")
    return lines
