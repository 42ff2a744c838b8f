"""`tagger-eval rescore`: a grid of thresholds scored from the prediction store, without loading any model.

Every number comes from the evaluation's own code: `TaggerRun.read` and `TaggerRun.score` on the stored outputs,
`TaggerSummary` for the mean score and the wrong tags, and F1 micro as `--tagger-metrics=full` computes it at the
run's threshold (`threshold_metrics.scores_at` over every tag). So a threshold rescored here gives the numbers a
fresh run at that threshold gives, on the posts whose outputs the store holds (their images are not read: each
output was inferred from the file its md5 names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tagger_eval.config import MetricsMode, PerTagger, RunConfig, TaggerSpec
from tagger_eval.data.dataset import InvalidPost
from tagger_eval.records import PostResult, PostStatus, TaggerSummary, leaderboard_order
from tagger_eval.reports.leaderboard import COLUMNS, table_cells
from tagger_eval.reports.text_table import format_table
from tagger_eval.run.evaluation import PROBABILITY_FLOOR, Evaluation, PostSkipped, TaggerRun
from tagger_eval.run.prediction_store import PredictionStore, StoreEntry, store_key
from tagger_eval.scoring.tagger_metrics import prediction_set
from tagger_eval.scoring.threshold_metrics import PredictionSet, scores_at, subset_mask
from tagger_eval.tags import printable


class RescoreError(Exception):
    """Nothing can be rescored as asked: no store, no such tagger in it, a threshold below its floor."""


@dataclass
class Rescored:
    """Per (threshold, tagger label) the results a fresh run would give; None as threshold: each tagger's own."""

    thresholds: list[float | None]
    labels: list[str]
    dataset: Path
    results: dict[tuple[float | None, str], list[PostResult]] = field(default_factory=dict)
    not_stored: dict[str, int] = field(default_factory=dict)  # label -> dataset posts the store lacks
    notes: list[str] = field(default_factory=list)
    _predictions: dict[str, PredictionSet] = field(default_factory=dict)  # per label, for F1 at each threshold

    def summary(self, threshold: float | None, label: str) -> TaggerSummary:
        return TaggerSummary.from_results(label, self.results[threshold, label])

    def f1_micro(self, threshold: float | None, label: str) -> float | None:
        """F1 pooled over every (post, tag) pair, as the run's metrics give it at the run's threshold. What they
        count (the in-scope truth, the kept probabilities) does not depend on the threshold: the results of the
        first threshold keep it for all (`tagger_metrics.compute` does the same per run)."""
        kept = sorted((result for result in self.results[self.thresholds[0], label]
                       if result.status == PostStatus.SCORED and result.truth_tags is not None),
                      key=lambda result: result.post)
        if not kept or not any(result.truth_tags for result in kept):
            return None
        if label not in self._predictions:
            self._predictions[label] = prediction_set(kept)[0]
        predictions = self._predictions[label]
        first = self.results[threshold, label][0]
        at = first.threshold if first.threshold is not None else 0.5
        return float(scores_at(predictions, at, subset_mask(predictions, "all"))["micro"]["f1"])


def pick_entries(entries: Sequence[StoreEntry], names: Sequence[str]) -> tuple[list[StoreEntry], list[str]]:
    """Per label the identity used last (a label whose model changed has older ones); only the taggers `names`
    gives, by label or name, when given. Notes name the older identities left out."""
    latest: dict[str, StoreEntry] = {}
    older: dict[str, int] = {}
    # Most recently used first; an identity that stored nothing (a run stopped before its first batch) is skipped.
    for entry in (entry for entry in entries if entry.posts):
        if entry.label in latest:
            older[entry.label] = older.get(entry.label, 0) + 1
        else:
            latest[entry.label] = entry
    wanted = [name for text in names for name in text.split(",") if name]
    unknown = [name for name in wanted if not any(name in (label, label.partition(":")[0]) for label in latest)]
    if unknown:
        held = ", ".join(sorted(map(printable, latest))) or "none"
        raise RescoreError(f"--tagger: the store holds no outputs of {', '.join(map(printable, unknown))} (it holds: "
                           f"{held})")
    picked = [entry for label, entry in sorted(latest.items())
              if not wanted or any(name in (label, label.partition(":")[0]) for name in wanted)]
    notes = [f"{printable(entry.label)}: {older[entry.label]} older model identit"
             f"{'ies' if older[entry.label] > 1 else 'y'} in the store left out (rescored: the one last evaluated, "
             f"{entry.last_used})" for entry in picked if entry.label in older]
    return picked, notes


def spec_of(label: str) -> TaggerSpec:
    name, _, argument = label.partition(":")
    return TaggerSpec(name, argument or None)


def rescore(store_path: Path, config: RunConfig, thresholds: Sequence[float], names: Sequence[str] = ()) -> Rescored:
    """Score the dataset of `config` from the store at each threshold (none given: each tagger's default), under
    the settings of `config` (scope, implications, character thresholds, profiles); its taggers are replaced by
    those the store holds (`names` narrows them)."""
    if not Path(store_path).is_file():
        raise RescoreError(f"no prediction store at {store_path}: run an evaluation first (it stores every output), "
                           "or give --store=PATH")
    store = PredictionStore(store_path, PROBABILITY_FLOOR)
    try:
        entries, notes = pick_entries(store.entries(), names)
        if not entries:
            raise RescoreError(f"the prediction store {store_path} holds no tagger's outputs yet")
        taggers = {entry.label: entry.tagger() for entry in entries}
        config = replace(config, taggers=tuple(spec_of(label) for label in taggers), metrics=MetricsMode.FULL,
                         use_store=False)
        config.check()
        evaluation = Evaluation(config, vocabulary_of=lambda spec: taggers[spec.label].vocabulary())
        try:
            grid: list[float | None] = [*sorted(set(thresholds))] or [None]
            rescored = Rescored(grid, list(taggers), evaluation.dataset_path, notes=notes)
            for entry, spec in zip(entries, config.taggers, strict=True):
                _rescore_tagger(evaluation, store, entry, spec, rescored)
            if not rescored.labels:
                raise RescoreError(f"the prediction store {store_path} holds no output for the images of "
                                   f"{evaluation.dataset_path}: evaluate it first")
            return rescored
        finally:
            evaluation.close()
    finally:
        store.close()


def _rescore_tagger(evaluation: Evaluation, store: PredictionStore, entry: StoreEntry, spec: TaggerSpec,
                    rescored: Rescored) -> None:
    tagger = entry.tagger()
    runs: dict[float | None, TaggerRun] = {}
    for threshold in rescored.thresholds:
        config = evaluation.config if threshold is None else replace(evaluation.config,
                                                                     thresholds=PerTagger(threshold, {}))
        settings = evaluation.settings(spec, tagger, config)
        metrics_floor = settings.keep_probabilities_above if not runs else None
        if (reason := store.bypass(settings.threshold, settings.character_threshold, metrics_floor)) is not None:
            raise RescoreError(f"{printable(spec.label)}: {reason}, which keeps no output under it: run the "
                               "evaluation at it")
        if runs:  # the first threshold's results keep the probabilities F1 is computed from, for all
            settings = replace(settings, keep_probabilities_above=None)
        runs[threshold] = evaluation.run_for(spec, tagger, settings, use_store=False)
    outputs = store.all(entry.id)
    first = runs[rescored.thresholds[0]]
    dataset = evaluation.dataset
    results: dict[float | None, list[PostResult]] = {threshold: [] for threshold in runs}
    missing = 0
    try:
        for post_id in dataset.post_ids():
            try:
                post = first.read(dataset, post_id)
            except (PostSkipped, InvalidPost) as skip:  # as a fresh run skips it, before its image is read
                for threshold, run in runs.items():
                    results[threshold].append(run.unscored(post_id, PostStatus.SKIPPED, str(skip)))
                continue
            stored = outputs.get(store_key(post.md5))
            if stored is None:
                missing += 1
                continue
            probabilities = first.normalised(stored[0])
            for threshold, run in runs.items():
                results[threshold].append(run.score(post, probabilities, stored[1], from_store=True))
    finally:
        for run in runs.values():
            run.close()
    if not results[rescored.thresholds[0]]:
        rescored.labels.remove(spec.label)
        rescored.notes.append(f"{printable(spec.label)}: the store holds none of this dataset's images")
        return
    for threshold, group in results.items():
        rescored.results[threshold, spec.label] = group
    rescored.not_stored[spec.label] = missing


def rescore_lines(rescored: Rescored, store_path: Path, scope: str) -> list[str]:
    """The table (threshold x tagger: posts, mean score, wrong tags, F1 micro), then each tagger's best threshold
    by mean score and what the store lacked."""
    lines = [f"rescored from the prediction store {printable(str(store_path))} (no model loaded)",
             f"dataset: {printable(str(rescored.dataset))}", f"tag scope: {scope}"]
    shown = {"threshold": 1, "tagger": 0, "posts": 2, "mean score": 3, "wrong tags": 6}
    assert [COLUMNS[index][0] for index in shown.values()] == list(shown)
    rows = []
    for threshold in rescored.thresholds:
        means = {label: rescored.summary(threshold, label).mean_score for label in rescored.labels}
        for label in leaderboard_order(rescored.labels, means.__getitem__):
            summary = rescored.summary(threshold, label)
            cells = table_cells(summary)
            if threshold is not None:  # as given (0.325), not rounded as the leaderboard's 2 decimals
                character = summary.character_threshold
                cells[1] = f"{threshold:g}" + ("" if character in (None, threshold) else f"/c{character:g}")
            f1 = rescored.f1_micro(threshold, label)
            rows.append([cells[index] for index in shown.values()] + ["-" if f1 is None else f"{f1:.3f}"])
    lines += format_table([*shown, "F1 micro"], rows, left_columns=2)
    best = []
    for label in rescored.labels:
        scored = [(summary.mean_score, threshold) for threshold in rescored.thresholds
                  if threshold is not None and (summary := rescored.summary(threshold, label)).mean_score is not None]
        if len(scored) > 1:
            mean, threshold = max(scored, key=lambda pair: pair[0])  # the first of equals: the lowest
            best.append(f"{printable(label)} {threshold:g} ({mean:.3f})")
    if best:
        lines.append(f"best threshold by mean score: {', '.join(best)}")
    lines += [f"not in the store: {printable(label)} {count} posts (evaluate them to include them)"
              for label, count in sorted(rescored.not_stored.items()) if count]
    lines += [f"note: {note}" for note in rescored.notes]
    return lines
