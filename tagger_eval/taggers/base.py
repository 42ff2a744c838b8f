"""The one interface every tagger implements, and the one threshold rule applied to all of them."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from tagger_eval.dataset import Post
from tagger_eval.tags import is_rating, normalise_tag


@dataclass(frozen=True)
class Sample:
    """What a tagger is given: the image, and the post it belongs to (only the control tagger reads its tags)."""

    post: Post
    image: Image.Image


class Tagger(ABC):
    """A tagger predicts `{tag: probability}` per image; `select_tags` turns that into the predicted tag set."""

    name: str
    default_threshold: float = 0.5
    # The per-post floor `test_post_score` asserts when the user sets none: low enough that a working tagger passes.
    default_score_floor: float = 0.0

    def vocabulary(self) -> Mapping[str, int] | None:
        """Tag -> category for every tag the tagger can output; None for an open vocabulary."""
        return None

    @abstractmethod
    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        """One `{tag: probability}` per sample, in order; tag names as the model spells them."""

    def close(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Release the model (called once, when the session no longer needs this tagger)."""


def normalise_prediction(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Tag names normalised; when two spellings meet, the higher probability stands. NaN means a broken model."""
    normalised: dict[str, float] = {}
    for name, probability in probabilities.items():
        tag, value = normalise_tag(name), float(probability)
        if math.isnan(value):
            raise ValueError(f"the tagger returned NaN as the probability of {name!r}")
        if tag and (tag not in normalised or value > normalised[tag]):
            normalised[tag] = value
    return normalised


def select_tags(probabilities: Mapping[str, float], threshold: float) -> set[str]:
    """Tags with probability strictly above the threshold, plus exactly one rating: the most probable one.

    The strict `>` is the model authors' convention. A rating is always predicted when the tagger outputs any,
    whatever its probability, because every Danbooru post has exactly one.
    """
    selected = {tag for tag, p in probabilities.items() if not is_rating(tag) and p > threshold}
    ratings = [(p, tag) for tag, p in probabilities.items() if is_rating(tag)]
    if ratings:
        selected.add(max(ratings, key=lambda pair: pair[0])[1])
    return selected
