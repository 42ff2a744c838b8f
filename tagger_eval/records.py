"""The run's data model: per-post results, per-tagger summaries and the typed view of a results document.

A leaf module (standard library and `tags` only), so that reading, comparing and charting saved runs never imports a
backend.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NotRequired, TypedDict, TypeVar

from tagger_eval.tags import printable

T = TypeVar("T")


class PostStatus(StrEnum):
    """What happened to one (tagger, post) pair."""

    SCORED = "scored"
    SKIPPED = "skipped"  # could not be scored: no image, no truth tags in scope (the reason says which)
    ERROR = "error"  # the tagger raised


@dataclass(frozen=True)
class PostResult:
    """One (tagger, post) outcome; `to_dict` gives builtin types only, so it can cross from pytest-xdist workers."""

    tagger: str
    post: int
    status: PostStatus
    floor: float
    threshold: float | None  # None: the server applied its own
    character_threshold: float | None = None
    threshold_profile: str | None = None  # the authors' named threshold the general one comes from
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
    from_store: bool = False  # the output came from the prediction store (its runtime is the one measured then)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", PostStatus(self.status))  # a plain "scored" from JSON or a caller

    @property
    def score(self) -> float:
        assert self.counts is not None, "only scored results have a score"
        return float(self.counts["score"])

    @property
    def passed(self) -> bool:
        return self.status == PostStatus.SCORED and self.score >= self.floor

    def failure_message(self) -> str:
        """What pytest prints for a post below its floor; names are escaped (`printable`) as they reach a terminal."""
        missed = " ".join(map(printable, self.missed_tags)) or "-"
        wrong = " ".join(map(printable, self.wrong_tags)) or "-"
        return (
            f"{printable(self.tagger)} scored {self.score:.3f} on post {self.post}, below the floor {self.floor:.3f}\n"
            f"  missed ({len(self.missed_tags)}): {missed}\n"
            f"  wrong ({len(self.wrong_tags)}): {wrong}"
        )

    def to_dict(self) -> dict[str, Any]:
        """`asdict` with the status as its value: the containers copied, the kept probabilities (thousands of
        floats per post) shallowly, as their keys and values are immutable (asdict deep-copied each one)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("probabilities", "categories"):
            if data[name] is not None:
                data[name] = dict(data[name])
        for name in ("missed_tags", "wrong_tags", "truth_tags"):
            if data[name] is not None:
                data[name] = list(data[name])
        data["counts"] = deepcopy(self.counts)
        if not self.from_store:  # said only of the posts it concerns (the results JSON's post entries too)
            del data["from_store"]
        return {**data, "status": self.status.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostResult:
        return cls(**data)


def group_by_tagger(results: Iterable[PostResult]) -> dict[str, list[PostResult]]:
    """Results per tagger label, labels in first-seen order, each tagger's results in the order given."""
    grouped: dict[str, list[PostResult]] = {}
    for result in results:
        grouped.setdefault(result.tagger, []).append(result)
    return grouped


def leaderboard_order(labels: Iterable[str], mean_score: Callable[[str], float | None]) -> list[str]:
    """Labels best first: mean score descending, then by name; taggers with nothing scored last.

    The one ordering of every table and chart (the leaderboard, the metrics table, the report)."""

    def key(label: str) -> tuple[bool, float, str]:
        mean = mean_score(label)
        return mean is None, -(mean or 0.0), label

    return sorted(labels, key=key)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class TaggerSummary:
    """Averages over the scored posts of one tagger.

    Error rates are pooled: wrong tags over predicted tags across all posts (so a post that predicted nothing does
    not count as 0 % error); the practical rate leaves ratings out of both; the rating error is the share of
    posts with a predicted rating whose rating is wrong (None for a tagger that predicts no ratings).
    """

    tagger: str
    threshold: float | None  # None: applied by the tagger's server
    character_threshold: float | None
    posts: int
    mean_score: float | None
    median_score: float | None
    mean_runtime_s: float | None
    error_rate: float | None
    practical_error_rate: float | None
    rating_error_rate: float | None
    passed: int
    failed: int
    skipped: int
    errors: int
    threshold_profile: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaggerSummary:
        """A summary saved in a results document (unknown keys from newer versions ignored)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def from_results(cls, tagger: str, results: list[PostResult]) -> TaggerSummary:
        scored = [result for result in results if result.status == PostStatus.SCORED]
        counts = [result.counts or {} for result in scored]
        scores = [result.score for result in scored]
        runtimes = [result.runtime_s for result in scored if result.runtime_s is not None]
        return cls(
            tagger=tagger,
            threshold=results[0].threshold,
            character_threshold=results[0].character_threshold,
            posts=len(scored),
            mean_score=statistics.fmean(scores) if scores else None,
            median_score=statistics.median(scores) if scores else None,
            mean_runtime_s=statistics.fmean(runtimes) if runtimes else None,
            error_rate=_ratio(sum(c["incorrect"] for c in counts), sum(c["predicted_size"] for c in counts)),
            practical_error_rate=_ratio(
                sum(c["practical_incorrect"] for c in counts), sum(c["practical_predicted"] for c in counts)
            ),
            rating_error_rate=_ratio(
                sum(c["rating_predicted"] and not c["rating_correct"] for c in counts),
                sum(c["rating_predicted"] for c in counts),
            ),
            passed=sum(result.passed for result in scored),
            failed=sum(not result.passed for result in scored),
            skipped=sum(result.status == PostStatus.SKIPPED for result in results),
            errors=sum(result.status == PostStatus.ERROR for result in results),
            threshold_profile=results[0].threshold_profile,
        )


def summarise(results: Iterable[PostResult]) -> list[TaggerSummary]:
    """One summary per tagger, in leaderboard order."""
    summaries = {label: TaggerSummary.from_results(label, group) for label, group in group_by_tagger(results).items()}
    return [summaries[label] for label in leaderboard_order(summaries, lambda label: summaries[label].mean_score)]


# The results document (`reports/results.py` writes and reads it; README "Results of a run" documents it).


class DatasetIdentity(TypedDict):
    path: str
    posts: int
    content_sha256: str
    metadata: dict[str, str]


class PostEntry(TypedDict, total=False):
    """One post of one tagger: its status; when scored also the `scoring.post_score.PostScore` counts."""

    status: str
    score: float
    runtime_s: float | None
    missed_tags: list[str]
    wrong_tags: list[str]
    reason: str | None


class TaggerResults(TypedDict):
    identity: dict[str, str]
    threshold: float | None
    character_threshold: float | None
    score_floor: float
    summary: dict[str, Any]  # `TaggerSummary` as JSON; `TaggerSummary.from_dict` reads it back
    posts: dict[str, PostEntry]
    metrics: NotRequired[dict[str, Any]]
    posts_from_store: NotRequired[int]  # scored from the prediction store's outputs, when any was


class RunSettings(TypedDict, total=False):
    tag_scope: str
    expand_implications: bool
    metrics: str
    soft_score_matching: str  # with metrics "full"
    soft_score_similarity: str
    shard: str  # `--tagger-shard`'s I/N


class ResultsDocument(TypedDict):
    schema: str
    schema_version: int
    created_at: str
    tagger_eval_version: str
    machine: dict[str, Any]
    commit: dict[str, Any] | None
    dataset: DatasetIdentity
    settings: RunSettings
    taggers: dict[str, TaggerResults]
    not_run: NotRequired[dict[str, str]]  # taggers `--tagger=all` left out -> why (the report lists them)


def scored_posts(tagger: TaggerResults) -> dict[int, float]:
    """Post id -> score of one tagger's scored posts in a results document."""
    return {int(post): float(entry["score"]) for post, entry in tagger["posts"].items()
            if entry["status"] == PostStatus.SCORED}


def document_order(document: ResultsDocument) -> list[str]:
    """The taggers of a results document in leaderboard order."""
    return leaderboard_order(document["taggers"], lambda label: document["taggers"][label]["summary"]["mean_score"])
