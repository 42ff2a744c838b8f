"""One evaluation run, independent of pytest: settings, loaded taggers, per-post results.

The pytest plugin is a thin shell around this module; `TaggerRun.evaluate` is the whole per-test work.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from tagger_eval.config import MetricsMode, RunConfig, TaggerSpec
from tagger_eval.data.dataset import Dataset, DatasetError, ImageUnavailable, Post
from tagger_eval.data.demo_dataset import DEFAULT_DATASET
from tagger_eval.records import PostResult, PostStatus
from tagger_eval.run.batching import BatchPredictor, InferenceRunner
from tagger_eval.scoring.post_score import PostScore, score_post
from tagger_eval.scoring.scope import TagScope, scoped_tags
from tagger_eval.taggers import Tagger, create, normalise_prediction, read_vocabulary, select_tags
from tagger_eval.taggers.base import resolve_rating_aliases
from tagger_eval.tags import GENERAL, RATING, RATING_TAGS, is_rating, normalise_tag, rating_tag

PROBABILITY_FLOOR = 0.01  # probabilities kept per post for the run's metrics; lower ones count as 0
T = TypeVar("T")


class PostSkipped(Exception):
    """The post cannot be scored for this tagger (no image, no truth tags in scope); the reason is the message."""


@dataclass(frozen=True)
class TaggerSettings:
    spec: TaggerSpec
    threshold: float
    score_floor: float
    scope: TagScope
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
        self.scope_vocabulary = shared if settings.scope == TagScope.SHARED and shared is not None else self.vocabulary

    @property
    def label(self) -> str:
        return self.settings.spec.label

    def evaluate(
        self,
        dataset: Dataset,
        post_id: int,
        run_inference: InferenceRunner = lambda infer: infer(),
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
        categories = ChainMap(dict(post_tags), self.vocabulary or {})
        predicted = scoped_tags(selected, categories, self.settings.scope, self.scope_vocabulary)
        post_score: PostScore = score_post(predicted, truth)
        return PostResult(
            **self._identity(post_id),
            status=PostStatus.SCORED,
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

    def unscored(self, post_id: int, status: PostStatus, reason: str) -> PostResult:
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
    return align_vocabulary(tagger.vocabulary(), tag_aliases, tagger.rating_aliases)


def align_vocabulary(vocabulary: Mapping[str, int] | None, tag_aliases: Mapping[str, str],
                     rating_aliases: Mapping[str, frozenset[str]]) -> dict[str, int] | None:
    """`aligned_vocabulary` of a vocabulary read without the tagger (`read_vocabulary`)."""
    if vocabulary is None:
        return None
    names = ((normalise_tag(tag), category) for tag, category in vocabulary.items())
    aligned = {tag_aliases.get(tag, tag): category for tag, category in names}
    for targets in rating_aliases.values():
        aligned.update(dict.fromkeys(targets, RATING))
    return aligned


class Evaluation:
    """One evaluation run (`pytest --tagger=...`): the dataset, the selected taggers and their settings."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        # Per tagger label, the post ids in the order their tests will run (set after collection): batches are
        # made of the posts that come next.
        self.orders: dict[str, list[int]] = {}
        self.dataset_path = config.dataset or DEFAULT_DATASET
        if config.dataset is None and not self.dataset_path.exists():
            raise DatasetError(
                f"the bundled demo dataset is missing ({self.dataset_path}); create it with "
                "`tagger-eval make-demo` or pass --dataset=PATH/data.db"
            )
        self.dataset = Dataset(self.dataset_path)
        self.tag_aliases = self.dataset.tag_aliases()
        self._truth_options = TruthOptions(
            self.dataset.tag_implications() if config.expand_implications else {}, self.dataset.tag_categories())
        self._shared_read = False

    @property
    def specs(self) -> tuple[TaggerSpec, ...]:
        return self.config.taggers

    def settings(self, spec: TaggerSpec, tagger: Tagger) -> TaggerSettings:
        config = self.config
        threshold = config.thresholds.pick(spec, tagger.default_threshold)
        floor = config.floors.pick(spec, tagger.default_score_floor)
        assert threshold is not None and floor is not None
        return TaggerSettings(
            spec=spec,
            threshold=threshold,
            score_floor=floor,
            scope=config.scope,
            character_threshold=config.character_thresholds.pick(spec, tagger.default_character_threshold),
            keep_probabilities_above=PROBABILITY_FLOOR if config.metrics != MetricsMode.OFF else None,
        )

    def truth_options(self) -> TruthOptions:
        """`shared` scope completes them on first use: it reads every selected tagger's vocabulary once."""
        if self.config.scope == TagScope.SHARED and not self._shared_read:
            self._truth_options = replace(self._truth_options, shared_vocabulary=self._shared_vocabulary())
            self._shared_read = True
        return self._truth_options

    def _shared_vocabulary(self) -> frozenset[str] | None:
        """The tags every selected tagger can output (open vocabularies restrict nothing), ratings always kept."""
        shared: frozenset[str] | None = None
        for spec in self.specs:
            # Read from the tag files, without loading the models. The ratings a coarse rating stands for need no
            # adding: every rating is kept below.
            vocabulary = align_vocabulary(read_vocabulary(spec, self.config.tagger_options), self.tag_aliases, {})
            if vocabulary is not None:
                shared = frozenset(vocabulary) if shared is None else shared & vocabulary.keys()
        return None if shared is None else shared | RATING_TAGS

    def load(self, spec: TaggerSpec) -> TaggerRun:
        tagger = create(spec, self.config.tagger_options)
        return TaggerRun(self.settings(spec, tagger), tagger, self.tag_aliases, self.truth_options(),
                         self.config.batch_size, self.orders.get(spec.label, ()))

    def close(self) -> None:
        self.dataset.close()
