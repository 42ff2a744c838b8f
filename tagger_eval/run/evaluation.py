"""One evaluation run, independent of pytest: settings, loaded taggers, per-post results.

The pytest plugin is a thin shell around this module; `TaggerRun.evaluate` is the whole per-test work: the
tagger's output (inferred, or served by the prediction store), then `TaggerRun.score`, which `tagger-eval rescore`
calls on stored outputs too.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from tagger_eval.config import DEFAULT_MAX_IMAGE_PIXELS, ConfigError, MetricsMode, RunConfig, TaggerSpec
from tagger_eval.data.dataset import Dataset, DatasetError, ImageUnavailable, InvalidPost, Post
from tagger_eval.data.demo_dataset import DEFAULT_DATASET
from tagger_eval.records import DatasetIdentity, PostResult, PostStatus
from tagger_eval.reports.results import dataset_identity
from tagger_eval.run.batching import BatchPredictor, InferenceRunner, OutputStore
from tagger_eval.run.prediction_store import PredictionStore, RunStore, TaggerOutputs
from tagger_eval.run.stored_taggers import output_context, scoring_info
from tagger_eval.scoring.post_score import PostScore, score_post
from tagger_eval.scoring.scope import TagScope, scoped_tags
from tagger_eval.taggers import Tagger, create, normalise_prediction, read_vocabulary, select_tags
from tagger_eval.taggers.base import TaggerError, resolve_rating_aliases
from tagger_eval.tags import GENERAL, RATING, RATING_TAGS, UNKNOWN_CATEGORY, is_rating, normalise_tag, rating_tag

# Probabilities kept per post for the run's metrics (lower ones count as 0), and the prediction store's floor: it
# keeps every output at or above it (and every rating), so any threshold >= the floor is scored from it exactly.
PROBABILITY_FLOOR = 0.01
T = TypeVar("T")


class PostSkipped(Exception):
    """The post cannot be scored for this tagger (no usable image or row, no truth tags besides its rating in
    scope); the reason is the message."""


@dataclass(frozen=True)
class TaggerSettings:
    spec: TaggerSpec
    threshold: float
    score_floor: float
    scope: TagScope
    character_threshold: float | None = None
    keep_probabilities_above: float | None = None  # the storage floor when the run computes metrics
    threshold_profile: str | None = None  # the authors' named threshold the general one comes from


@dataclass(frozen=True)
class TruthOptions:
    """What the run does to the dataset's truth before scoring, the same for every tagger."""

    implications: Mapping[str, frozenset[str]] = field(default_factory=dict)  # expand: tag -> all it implies
    categories: Mapping[str, int] = field(default_factory=dict)  # categories of tags implications add
    shared_vocabulary: frozenset[str] | None = None  # `--tag-scope=shared`


@dataclass
class LoadFailure:
    """A tagger that could not be loaded, in place of its `TaggerRun`: its first test fails with the error (one
    line), the others are skipped pointing there."""

    label: str
    error: str
    reported: bool = False

    @classmethod
    def of(cls, label: str, error: Exception) -> LoadFailure:
        lines = (line.strip() for line in str(error).splitlines())
        return cls(label, f"{type(error).__name__}: {' / '.join(line for line in lines if line)}")


class TaggerRun:
    """A loaded tagger with its settings; scores posts one at a time."""

    def __init__(self, settings: TaggerSettings, tagger: Tagger, tag_aliases: Mapping[str, str] | None = None,
                 truth_options: TruthOptions | None = None, batch_size: int = 1,
                 order: Sequence[int] = (), max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 store: OutputStore | None = None, identity: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.tagger = tagger
        self.batches = BatchPredictor(tagger, batch_size, order, max_image_pixels, store=store)
        self._identity_given = None if identity is None else dict(identity)
        self.identity_reported = False
        self.tag_aliases = dict(tag_aliases or {})
        self.truth_options = truth_options or TruthOptions()
        self.vocabulary = aligned_vocabulary(tagger, self.tag_aliases, self.truth_options.categories)
        # A tagger without a rating output (PixAI, JoyTag, ML-Danbooru) is not charged a missed rating on every post.
        self.scores_ratings = self.vocabulary is None or any(
            category == RATING or is_rating(tag) for tag, category in self.vocabulary.items())
        shared = self.truth_options.shared_vocabulary
        self.scope_vocabulary = shared if settings.scope == TagScope.SHARED and shared is not None else self.vocabulary

    @property
    def label(self) -> str:
        return self.settings.spec.label

    @cached_property
    def identity(self) -> dict[str, str]:
        """The tagger's identity, computed once (it hashes the model file)."""
        return self._identity_given if self._identity_given is not None else self.tagger.identity()

    def evaluate(
        self,
        dataset: Dataset,
        post_id: int,
        run_inference: InferenceRunner = lambda infer: infer(),
    ) -> PostResult:
        """Score one post; `run_inference` wraps the timed model call (pytest-benchmark passes its pedantic run)."""
        try:
            post, output = self.batches.output(post_id, lambda upcoming: self.read(dataset, upcoming), run_inference)
        except (ImageUnavailable, InvalidPost) as error:
            raise PostSkipped(str(error)) from error
        return self.score(post, self.normalised(output.probabilities), output.runtime_s, output.from_store)

    def normalised(self, output: Mapping[str, float]) -> dict[str, float]:
        """The tagger's raw output in the dataset's tag names (what `score` takes)."""
        return normalise_prediction(output, self.tag_aliases)

    def score(self, post: Post, probabilities: Mapping[str, float], runtime: float | None,
              from_store: bool = False) -> PostResult:
        """The post's result from the tagger's normalised output: the one scoring path of a run and of
        `tagger-eval rescore`. `post` is as `read` gives it."""
        post_tags = post.tags
        truth = self._truth(post)
        selected = select_tags(probabilities, self.settings.threshold, self.settings.character_threshold,
                               self.vocabulary, self.tagger.character_categories)
        selected = resolve_rating_aliases(selected, rating_tag(post.rating), self.tagger.rating_aliases)
        # The dataset's category first, so a tag in the truth is filtered the same way on both sides. One dict: a
        # post's kept probabilities (`--tagger-metrics`) look up thousands of tags.
        categories = {**(self.vocabulary or {}), **post_tags}
        predicted = scoped_tags(selected, categories, self.settings.scope, self.scope_vocabulary)
        post_score: PostScore = score_post(predicted, truth)
        return PostResult(
            **self._identity(post.id),
            status=PostStatus.SCORED,
            runtime_s=runtime,
            from_store=from_store,
            counts=post_score.to_dict(),
            missed_tags=sorted(truth - predicted),
            wrong_tags=sorted(predicted - truth),
            **self._kept_probabilities(probabilities, truth, categories),
        )

    def read(self, dataset: Dataset, post_id: int) -> Post:
        """The post as it is predicted and scored; a post with nothing to score is skipped before its image is read."""
        post = self._prepared(dataset.get(post_id))
        self._truth(post)
        return post

    def _truth(self, post: Post) -> set[str]:
        """The post's truth in scope. A rating alone is not a tag list: a post needs a truth tag besides it."""
        truth = scoped_tags(post.tags, post.tags, self.settings.scope, self.scope_vocabulary)
        if not self.scores_ratings:
            truth = {tag for tag in truth if not is_rating(tag)}
        if not any(not is_rating(tag) for tag in post.tags):
            raise PostSkipped(f"post {post.id} has no tags besides its rating: a rating alone is not scored")
        if not any(not is_rating(tag) for tag in truth):
            raise PostSkipped(f"post {post.id} has no truth tags in tag scope '{self.settings.scope}' besides its "
                              "rating: a rating alone is not scored")
        return truth

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
            "threshold_profile": None if by_server else self.settings.threshold_profile,
        }

    def close(self) -> None:
        self.batches.close()
        self.tagger.close()


def aligned_vocabulary(tagger: Tagger, tag_aliases: Mapping[str, str],
                       known_categories: Mapping[str, int] | None = None) -> dict[str, int] | None:
    """The tagger's vocabulary in today's names, with the ratings a coarse rating stands for (so `vocabulary`
    scope keeps them); None for an open vocabulary."""
    return align_vocabulary(tagger.vocabulary(), tag_aliases, tagger.rating_aliases, known_categories)


def align_vocabulary(vocabulary: Mapping[str, int] | None, tag_aliases: Mapping[str, str],
                     rating_aliases: Mapping[str, frozenset[str]],
                     known_categories: Mapping[str, int] | None = None) -> dict[str, int] | None:
    """`aligned_vocabulary` of a vocabulary read without the tagger (`read_vocabulary`). A tag the model's files
    give no category (JoyTag, ML-Danbooru) takes the dataset's (`known_categories`) when it has one."""
    if vocabulary is None:
        return None
    names = ((normalise_tag(tag), category) for tag, category in vocabulary.items())
    aligned = {tag_aliases.get(tag, tag): category for tag, category in names}
    if known_categories:
        aligned = {tag: known_categories.get(tag, category) if category == UNKNOWN_CATEGORY else category
                   for tag, category in aligned.items()}
    for targets in rating_aliases.values():
        aligned.update(dict.fromkeys(targets, RATING))
    return aligned


class Evaluation:
    """One evaluation run (`pytest --tagger=...`): the dataset, the selected taggers and their settings.

    `rootdir` places the default prediction store (pytest's rootdir); `vocabulary_of` reads a selected tagger's
    vocabulary for `--tag-scope=shared` (default: from its tag files, without loading the model)."""

    def __init__(self, config: RunConfig, rootdir: Path | None = None,
                 vocabulary_of: Callable[[TaggerSpec], Mapping[str, int] | None] | None = None) -> None:
        self.config = config
        self._vocabulary_of = vocabulary_of or (lambda spec: read_vocabulary(spec, config.tagger_options))
        # Per tagger label, the post ids in the order their tests will run (set after collection): batches are
        # made of the posts that come next.
        self.orders: dict[str, list[int]] = {}
        if config.dataset is None and not DEFAULT_DATASET.exists():
            raise DatasetError(
                f"the bundled demo dataset is missing ({DEFAULT_DATASET}); reinstall tagger-eval, or write a copy "
                "with `tagger-eval make-demo --out DIR` and pass --dataset=DIR"
            )
        self.dataset = Dataset(config.dataset or DEFAULT_DATASET)
        self.dataset_path = self.dataset.path  # `--dataset=DIR` reads DIR/data.db
        try:
            self._check_not_empty()
            self.tag_aliases = self.dataset.tag_aliases()
            self._truth_options = TruthOptions(
                self.dataset.tag_implications() if config.expand_implications else {}, self.dataset.tag_categories())
            self.store = RunStore(config, rootdir, PROBABILITY_FLOOR)
        except (DatasetError, ConfigError):
            self.dataset.close()
            raise
        self._shared_read = False

    def store_bypass(self, threshold: float | None, character_threshold: float | None) -> str | None:
        """Why the store cannot serve a tagger run at these thresholds, or None when it can (or there is none)."""
        metrics_floor = PROBABILITY_FLOOR if self.config.metrics != MetricsMode.OFF else None
        return self.store.bypass(threshold, character_threshold, metrics_floor)

    def _check_not_empty(self) -> None:
        """A run that could evaluate nothing is refused before it starts, rather than passing with no result."""
        if len(self.dataset) == 0:
            raise DatasetError(f"{self.dataset_path} has no posts, so there is nothing to evaluate (an interrupted "
                               "or failed download? run the same `tagger-eval download` command again to fill it)")

    @cached_property
    def identity(self) -> DatasetIdentity:
        """The dataset as the results describe it, read once (at the start of the run, by the plugin)."""
        return dataset_identity(self.dataset)

    @property
    def specs(self) -> tuple[TaggerSpec, ...]:
        return self.config.taggers

    def settings(self, spec: TaggerSpec, tagger: Tagger, config: RunConfig | None = None) -> TaggerSettings:
        """One tagger's settings under the run's config (or `config`: rescore's other thresholds)."""
        config = config or self.config
        profile = self._threshold_profile(spec, tagger)
        given = config.thresholds.pick(spec, None)  # a threshold given overrides the profile
        threshold = given if given is not None else (
            tagger.threshold_profiles[profile] if profile is not None else tagger.default_threshold)
        floor = config.floors.pick(spec, tagger.default_score_floor)
        assert floor is not None
        return TaggerSettings(
            spec=spec,
            threshold=threshold,
            score_floor=floor,
            scope=config.scope,
            character_threshold=config.character_thresholds.pick(spec, tagger.default_character_threshold),
            keep_probabilities_above=PROBABILITY_FLOOR if config.metrics != MetricsMode.OFF else None,
            threshold_profile=profile if given is None else None,
        )

    def _threshold_profile(self, spec: TaggerSpec, tagger: Tagger) -> str | None:
        """The profile asked for (a global one applies only to taggers that publish profiles), else the tagger's
        default; one it does not publish is an error naming those it does."""
        profiles = self.config.threshold_profiles
        named = profiles.named(spec)
        if not tagger.threshold_profiles:
            if named is not None:
                raise TaggerError(f"--threshold-profile: {spec.label} publishes no threshold profiles")
            return None
        profile = named or profiles.default or tagger.default_profile
        if profile is not None and profile not in tagger.threshold_profiles:
            raise TaggerError(f"--threshold-profile: {spec.label} has no profile {profile!r}; it publishes "
                              f"{', '.join(tagger.threshold_profiles)}")
        return profile

    def truth_options(self) -> TruthOptions:
        """`shared` scope completes them on first use: it reads every selected tagger's vocabulary once."""
        if self.config.scope == TagScope.SHARED and not self._shared_read:
            self._truth_options = replace(self._truth_options, shared_vocabulary=self._shared_vocabulary())
            self._shared_read = True
        return self._truth_options

    def _shared_vocabulary(self) -> frozenset[str] | None:
        """The tags every selected tagger can output (open vocabularies restrict nothing), ratings always kept."""
        shared: frozenset[str] | None = None
        all_rate = True
        for spec in self.specs:
            # Read from the tag files, without loading the models. The ratings a coarse rating stands for need no
            # adding: ratings are kept or dropped all together below.
            vocabulary = align_vocabulary(self._vocabulary_of(spec), self.tag_aliases, {})
            if vocabulary is not None:
                shared = frozenset(vocabulary) if shared is None else shared & vocabulary.keys()
                all_rate = all_rate and any(is_rating(tag) or category == RATING
                                            for tag, category in vocabulary.items())
        if shared is None:
            return None
        # Ratings count only when every selected tagger outputs one: else the comparison charges some for them.
        return shared | RATING_TAGS if all_rate else shared - RATING_TAGS

    def load(self, spec: TaggerSpec) -> TaggerRun:
        tagger = create(spec, self.config.tagger_options)
        try:
            return self.run_for(spec, tagger)
        except Exception:
            tagger.close()
            raise

    def run_for(self, spec: TaggerSpec, tagger: Tagger, settings: TaggerSettings | None = None,
                use_store: bool = True) -> TaggerRun:
        """The run of a created tagger; with the store, its outputs are looked up and saved under its identity."""
        settings = settings or self.settings(spec, tagger)
        store, identity = None, None
        if use_store and tagger.storable and (opened := self.store.open()) is not None:
            identity = tagger.identity()
            store = self._outputs(opened, spec, tagger, settings, identity)
        return TaggerRun(settings, tagger, self.tag_aliases, self.truth_options(),
                         self.config.batch_size or tagger.preferred_batch_size,
                         self.orders.get(spec.label, ()), self.config.max_image_pixels, store, identity)

    def _outputs(self, store: PredictionStore, spec: TaggerSpec, tagger: Tagger, settings: TaggerSettings,
                 identity: Mapping[str, str]) -> TaggerOutputs | None:
        try:
            entry = store.register(identity, spec.label, scoring_info(tagger),
                                   output_context(tagger, self.config.tagger_options))
        except sqlite3.Error as error:
            warnings.warn(f"prediction store {store.path} not used for {spec.label}: {error}", RuntimeWarning,
                          stacklevel=2)
            return None
        read = self.store_bypass(settings.threshold, settings.character_threshold) is None
        return TaggerOutputs(store, entry, frozenset(tagger.rating_aliases), read=read)

    def close(self) -> None:
        self.dataset.close()
        self.store.close()
