"""The run's metrics as the second terminal table (`--tagger-metrics=full`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tagger_eval.records import leaderboard_order
from tagger_eval.reports.text_table import format_table, number
from tagger_eval.scoring.threshold_metrics import MetricCategory
from tagger_eval.tags import printable


def metrics_table(computed: Mapping[str, Mapping[str, Any]], scores: Mapping[str, float | None]) -> list[str]:
    """Per tagger and category, the P=R point (micro, and macro F1), MCC and average precision; then each tagger's
    best threshold for the score and its soft score. Taggers in leaderboard order (`scores`: their mean scores)."""
    header = ("tagger", "category", "P=R thr", "F1", "F2", "MCC", "macro thr", "macro F1", "AP macro", "AP micro")
    order = leaderboard_order(computed, scores.get)
    rows = []
    for label in order:
        for category in MetricCategory:
            if category not in computed[label]:
                continue
            entry = computed[label][category]
            micro, macro, ap = entry["micro"], entry["macro"], entry["average_precision"]
            rows.append((printable(label), category.value, number(micro["pr_threshold"]), number(micro["f1"]),
                         number(micro["f2"]), number(micro["mcc"]), number(macro["pr_threshold"]),
                         number(macro["f1"]), number(ap["macro"]), number(ap["micro"])))
    lines = format_table(header, rows, left_columns=2)
    for label in order:
        best, soft = computed[label]["best_score_threshold"], computed[label]["soft_score"]
        lines.append(f"{printable(label)}: best threshold for the score {best['threshold']:.3f} (mean score "
                     f"{best['mean_score']:.3f}, {number(scores.get(label))} at the run's threshold); "
                     f"soft score {soft['mean']:.3f}")
    return lines
