"""One evaluation run, independent of pytest: settings, loaded taggers, per-post results.

The pytest plugin is a thin shell around this module; `EvaluationSession.evaluate` is the whole per-test work.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from tagger_eval.data import demo_dataset as demo
from tagger_eval.run.batching import BatchPredictor
from tagger_eval.data.dataset import Dataset, DatasetError, ImageUnavailable, Post
from tagger_eval.scoring.scope import ALL, SCOPES, SHARED, scoped_tags
from tagger_eval.scoring.post_score import PostScore, score_post
from tagger_eval.taggers import (
    Tagger,
    TaggerOptions,
    TaggerSpec,
    create,
    normalise_prediction,
    parse_specs,
    select_tags,
)
from tagger_eval.taggers.base import resolve_rating_aliases
from tagger_eval.tags import GENERAL, RATING, RATING_TAGS, is_rating, normalise_tag, rating_tag

DEFAULT_DATASET = demo.DEFAULT_DIR / "data.db"
METRICS_OFF, METRICS_FULL = "off", "full"
METRICS_CHOICES = (METRICS_OFF, METRICS_FULL)
PROBABILITY_FLOOR = 0.01  # probabilities kept per post for the run's metrics; lower ones count as 0
T = TypeVar("T")


class PostSkipped(Exception):
    """The post cannot be scored for this tagger (no image, no truth tags in scope); the reason is the message."""


def parse_float_options(values: Iterable[str], option: str) -> tuple[float | None, dict[str, float]]:
    """`--option=FLOAT` (every tagger) and `--option=NAME=FLOAT` (one tagger), each repeatable."""
    default: float | None = None
    per_tagger: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            parsed = float(number)
        except ValueError:
            raise ValueError(f"{option}: expected FLOAT or NAME=FLOAT, got {value!r}") from None
        if name:
            per_tagger[name] = parsed
        else:
            default = parsed
    return default, per_tagger


@dataclass(frozen=True)
class PostResult:
    """One (tagger, post) outcome in builtin types only, so it can cross from pytest-xdist workers."""

    tagger: str
    post: int
    status: str  # "scored", "skipped" or "error"
    floor: float
    threshold: float | None  # None: the server applied its own
    character_threshold: float | None = None
    runtime_s: float | None = None
    counts: dict[str, Any] | None = None
    missed_tags: list[str] = field(default_factory=list)
    wrong_tags: list[str] = field(default_factory=list)
    reason: str | None = None
    # Kept only for the run's metrics (`--tagger-metrics`): the in-scope truth, and every in-scope probability at
    # or above the storage floor, after normalisation and aliases.
    truth_tags: list[str] | None = None
    probabilities: dict[str, float] | None = None
    categories: dict[str, int] | None = None  # of the kept tags, for the per-category metrics

    @property
    def score(self) -> float:
        assert self.counts is not None, "only scored results have a score"
        return self.counts["score"]

    @property
    def passed(self) -> bool:
        return self.status == "scored" and self.score >= self.floor

    def failure_message(self) -> str:
        return (
            f"{self.tagger} scored {self.score:.3f} on post {self.post}, below the floor {self.floor:.3f}\n"
            f"  missed ({len(self.missed_tags)}): {' '.join(self.missed_tags) or '-'}\n"
            f"  wrong ({len(self.wrong_tags)}): {' '.join(self.wrong_tags) or '-'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostResult:
        return cls(**data)


@dataclass(frozen=True)
class TaggerSettings:
    spec: TaggerSpec
    threshold: float
    score_floor: float
    scope: str
    character_threshold: float | None = None
    keep_probabilities_above: float | None = None  # the storage floor when the run computes metrics


@dataclass(frozen=True)
class TruthOptions:
    """What the run does to the dataset's truth before scoring, the same for every tagger."""

    implications: Mapping[str, frozenset[str]] = field(default_factory=dict)  # expand: tag -> all it implies
    categories: Mapping[str, int] = field(default_factory=dict)  # categories of tags implications add
    shared_vocabulary: frozenset[str] | None = None  # `--tag-scope=shared`

class TaggerRun:
    """A loaded tagger with its settings; scores posts one at a time."""

    def __init__(self, settings: TaggerSettings, tagger: Tagger, tag_aliases: Mapping[str, str] | None = None,
                 truth_options: TruthOptions | None = None, batch_size: int = 1,
                 order: Sequence[int] = ()) -> None:
        self.settings = settings
        self.tagger = tagger
        self.batches = BatchPredictor(tagger, batch_size, order)
        self.identity_reported = False
        self.tag_aliases = dict(tag_aliases or {})
        self.truth_options = truth_options or TruthOptions()
        self.vocabulary = aligned_vocabulary(tagger, self.tag_aliases)
        shared = self.truth_options.shared_vocabulary
        self.scope_vocabulary = shared if settings.scope == SHARED and shared is not None else self.vocabulary

    @property
    def label(self) -> str:
        return self.settings.spec.label

    def evaluate(
        self,
        dataset: Dataset,
        post_id: int,
        run_inference: Callable[[Callable[[], T]], T] = lambda infer: infer(),
    ) -> PostResult:
        """Score one post; `run_inference` wraps the timed model call (pytest-benchmark passes its pedantic run)."""
        post = self._prepared(dataset.get(post_id))
        post_tags = post.tags
        truth = scoped_tags(post_tags, post_tags, self.settings.scope, self.scope_vocabulary)
        if not truth:
            raise PostSkipped(f"post {post_id} has no truth tags in tag scope {self.settings.scope!r}")
        try:
            output, runtime = self.batches.output(dataset, post, self._prepared, run_inference)
        except ImageUnavailable as error:
            raise PostSkipped(str(error)) from error
        probabilities = normalise_prediction(output, self.tag_aliases)
        selected = select_tags(probabilities, self.settings.threshold, self.settings.character_threshold,
                               self.vocabulary)
        selected = resolve_rating_aliases(selected, rating_tag(post.rating), self.tagger.rating_aliases)
        # The dataset's category first, so a tag in the truth is filtered the same way on both sides.
        categories = ChainMap(post_tags, self.vocabulary or {})
        predicted = scoped_tags(selected, categories, self.settings.scope, self.scope_vocabulary)
        post_score: PostScore = score_post(predicted, truth)
        return PostResult(
            **self._identity(post_id),
            status="scored",
            runtime_s=runtime,
            counts=post_score.to_dict(),
            missed_tags=sorted(truth - predicted),
            wrong_tags=sorted(predicted - truth),
            **self._kept_probabilities(probabilities, truth, categories),
        )

    def _prepared(self, post: Post) -> Post:
        """The post with everything its tags imply when the run expands implications (the control tagger then
        returns the truth the run scores against)."""
        implications = self.truth_options.implications
        implied = {extra for tag in post.tags for extra in implications.get(tag, ())} - post.tags.keys()
        if not implied:
            return post
        known = self.truth_options.categories
        return replace(post, tags=MappingProxyType({**{tag: known.get(tag, GENERAL) for tag in implied}, **post.tags}))

    def _kept_probabilities(self, probabilities: Mapping[str, float], truth: set[str],
                            categories: Mapping[str, int]) -> dict[str, Any]:
        floor = self.settings.keep_probabilities_above
        if floor is None:
            return {}
        kept = {tag: p for tag, p in probabilities.items() if p >= floor}
        in_scope = sorted(scoped_tags(kept, categories, self.settings.scope, self.scope_vocabulary) | truth)
        return {"truth_tags": sorted(truth), "probabilities": {tag: kept[tag] for tag in in_scope if tag in kept},
                "categories": {tag: RATING if is_rating(tag) else categories.get(tag, -1) for tag in in_scope}}

    def unscored(self, post_id: int, status: str, reason: str) -> PostResult:
        """The record of a skipped or failed post, so the summary can count it."""
        return PostResult(**self._identity(post_id), status=status, reason=reason)

    def _identity(self, post_id: int) -> dict[str, Any]:
        by_server = self.tagger.threshold_applied_by_server
        return {
            "tagger": self.label,
            "post": post_id,
            "floor": self.settings.score_floor,
            "threshold": None if by_server else self.settings.threshold,
            "character_threshold": None if by_server else self.settings.character_threshold,
        }

    def close(self) -> None:
        self.batches.close()
        self.tagger.close()


def aligned_vocabulary(tagger: Tagger, tag_aliases: Mapping[str, str]) -> dict[str, int] | None:
    """The tagger's vocabulary in today's names, with the ratings a coarse rating stands for (so `vocabulary`
    scope keeps them); None for an open vocabulary."""
    vocabulary = tagger.vocabulary()
    if vocabulary is None:
        return None
    names = ((normalise_tag(tag), category) for tag, category in vocabulary.items())
    aligned = {tag_aliases.get(tag, tag): category for tag, category in names}
    for targets in tagger.rating_aliases.values():
        aligned.update(dict.fromkeys(targets, RATING))
    return aligned


class EvaluationSession:
    """What `pytest --tagger=...` evaluates: the dataset, the selected taggers and their settings."""

    def __init__(
        self,
        tagger_option: str | Iterable[str],
        dataset_path: str | Path | None = None,
        threshold_options: Iterable[str] = (),
        floor_options: Iterable[str] = (),
        scope: str = ALL,
        character_threshold_options: Iterable[str] = (),
        tagger_options: TaggerOptions | None = None,
        expand_implications: bool = False,
        metrics: str = METRICS_OFF,
        batch_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"--tagger-batch-size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        # Per tagger label, the post ids in the order their tests will run (set after collection): batches are
        # made of the posts that come next.
        self.orders: dict[str, list[int]] = {}
        self.specs, self.unavailable = parse_specs(tagger_option)
        if metrics not in METRICS_CHOICES:
            raise ValueError(f"--tagger-metrics: expected one of {', '.join(METRICS_CHOICES)}, got {metrics!r}")
        self.metrics = metrics
        self.expand_implications = expand_implications
        if scope not in SCOPES:
            raise ValueError(f"--tag-scope: unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
        self.scope = scope
        self.default_threshold, self.thresholds = parse_float_options(threshold_options, "--threshold")
        self.default_floor, self.floors = parse_float_options(floor_options, "--score-floor")
        self.default_character_threshold, self.character_thresholds = parse_float_options(
            character_threshold_options, "--character-threshold"
        )
        self.tagger_options = tagger_options or TaggerOptions()
        labels = {spec.label for spec in self.specs} | {spec.name for spec in self.specs}
        for option, per_tagger in (
            ("--threshold", self.thresholds),
            ("--score-floor", self.floors),
            ("--character-threshold", self.character_thresholds),
        ):
            for name in per_tagger:
                if name not in labels:
                    raise ValueError(f"{option}: {name!r} is not a selected tagger ({', '.join(sorted(labels))})")
        for option, default, per_tagger in (
            ("--threshold", self.default_threshold, self.thresholds),
            ("--character-threshold", self.default_character_threshold, self.character_thresholds),
        ):
            for threshold in [default, *per_tagger.values()]:
                if threshold is not None and not 0.0 <= threshold < 1.0:
                    raise ValueError(f"{option} must be in [0, 1), got {threshold}")
        self.dataset_path = Path(dataset_path) if dataset_path else DEFAULT_DATASET
        if not dataset_path and not self.dataset_path.exists():
            raise DatasetError(
                f"the bundled demo dataset is missing ({self.dataset_path}); create it with "
                "`tagger-eval make-demo` or pass --dataset=PATH/data.db"
            )
        self.dataset = Dataset(self.dataset_path)
        self.tag_aliases = self.dataset.tag_aliases()
        self._truth_options = TruthOptions(
            self.dataset.tag_implications() if expand_implications else {}, self.dataset.tag_categories())
        self._shared_read = False

    def settings(self, spec: TaggerSpec, tagger: Tagger) -> TaggerSettings:
        def pick(per_tagger: dict[str, float], default: float | None, fallback: float | None) -> float | None:
            for key in (spec.label, spec.name):
                if key in per_tagger:
                    return per_tagger[key]
            return fallback if default is None else default

        threshold = pick(self.thresholds, self.default_threshold, tagger.default_threshold)
        floor = pick(self.floors, self.default_floor, tagger.default_score_floor)
        assert threshold is not None and floor is not None
        return TaggerSettings(
            spec=spec,
            threshold=threshold,
            score_floor=floor,
            scope=self.scope,
            character_threshold=pick(
                self.character_thresholds, self.default_character_threshold, tagger.default_character_threshold
            ),
            keep_probabilities_above=PROBABILITY_FLOOR if self.metrics != METRICS_OFF else None,
        )

    def truth_options(self) -> TruthOptions:
        """`shared` scope completes them on first use: it reads every selected tagger's vocabulary once."""
        if self.scope == SHARED and not self._shared_read:
            self._truth_options = replace(self._truth_options, shared_vocabulary=self._shared_vocabulary())
            self._shared_read = True
        return self._truth_options

    def _shared_vocabulary(self) -> frozenset[str] | None:
        """The tags every selected tagger can output (open vocabularies restrict nothing), ratings always kept."""
        shared: frozenset[str] | None = None
        for spec in self.specs:
            tagger = create(spec, self.tagger_options)
            try:
                vocabulary = aligned_vocabulary(tagger, self.tag_aliases)
            finally:
                tagger.close()
            if vocabulary is not None:
                shared = frozenset(vocabulary) if shared is None else shared & vocabulary.keys()
        return None if shared is None else shared | RATING_TAGS

    def load(self, spec: TaggerSpec) -> TaggerRun:
        tagger = create(spec, self.tagger_options)
        return TaggerRun(self.settings(spec, tagger), tagger, self.tag_aliases, self.truth_options(),
                         self.batch_size, self.orders.get(spec.label, ()))

    def close(self) -> None:
        self.dataset.close()
