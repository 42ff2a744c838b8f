"""The seed score and the per-post counts behind the summary's error rates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from tagger_eval.tags import is_rating


def score(predicted: Iterable[str], truth: Iterable[str]) -> float:
    """The seed formula `(|P ∩ T| - |P \\ T|) / |T|`: 1.0 is a perfect tag list, each wrong tag costs 1/|T|."""
    predicted_set, truth_set = set(predicted), set(truth)
    if not truth_set:
        raise ValueError("score is undefined for an empty truth set: the post has no tags to compare with")
    correct = len(predicted_set & truth_set)
    incorrect = len(predicted_set - truth_set)
    return (correct - incorrect) / len(truth_set)


@dataclass(frozen=True)
class PostScore:
    """Everything the summary and the error-rate chart need about one (tagger, post) pair."""

    score: float
    correct: int
    incorrect: int
    missed: int
    truth_size: int
    predicted_size: int
    # Ratings are ordinary tags in the score; they are also counted apart so the seed's chart can split them out.
    rating_predicted: bool
    rating_correct: bool
    # "Practical" counts leave ratings out: a wrong rating is one tag in the score but a different kind of error.
    practical_incorrect: int
    practical_predicted: int

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def score_post(predicted: Iterable[str], truth: Iterable[str]) -> PostScore:
    predicted_set, truth_set = set(predicted), set(truth)
    wrong = predicted_set - truth_set
    predicted_ratings = {tag for tag in predicted_set if is_rating(tag)}
    return PostScore(
        score=score(predicted_set, truth_set),
        correct=len(predicted_set & truth_set),
        incorrect=len(wrong),
        missed=len(truth_set - predicted_set),
        truth_size=len(truth_set),
        predicted_size=len(predicted_set),
        rating_predicted=bool(predicted_ratings),
        rating_correct=bool(predicted_ratings & truth_set),
        practical_incorrect=len(wrong - predicted_ratings),
        practical_predicted=len(predicted_set) - len(predicted_ratings),
    )
