"""The one interface every tagger implements, and the one threshold rule applied to all of them."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from tagger_eval.data.dataset import Post
from tagger_eval.tags import CHARACTER, RATING_PREFIX, normalise_tag

# Default per-post floor of real models: a post fails when the tagger got more tags wrong than the post has
# (score < -1). A real evaluation sets its own floors from a baseline; this one only catches a broken pipeline.
REAL_MODEL_SCORE_FLOOR = -1.0
# How far outside [0, 1] a model's output may stray and still count as a probability (float rounding, fp16).
PROBABILITY_TOLERANCE = 1e-5


class TaggerError(Exception):
    """A failure the tagger explains in its message (a damaged model file, a server that will not answer, outputs
    that are not probabilities): a test reports it in one line, without a traceback of the suite's own code."""


class ModelOutputError(TaggerError, ValueError):
    """A model whose outputs are not probabilities (logits, scores): no threshold can apply to them."""


@dataclass(frozen=True)
class Sample:
    """What a tagger is given: the image, and the post it belongs to (only the control tagger reads its tags)."""

    post: Post
    image: Image.Image


class Tagger(ABC):
    """A tagger predicts `{tag: probability}` per image; `select_tags` turns that into the predicted tag set."""

    name: str
    default_threshold: float = 0.5
    # Character tags may need more confidence than general ones (WD14: 0.85); None = the general threshold.
    default_character_threshold: float | None = None
    # The per-post floor `test_post_score` asserts when the user sets none: low enough that a working tagger passes.
    default_score_floor: float = 0.0
    # A server that answers with tag names only has thresholded them itself; ours cannot apply.
    threshold_applied_by_server: bool = False
    # Ratings the tagger outputs that stand for several of today's (DeepDanbooru's `rating:safe` is g or s).
    rating_aliases: Mapping[str, frozenset[str]] = MappingProxyType({})
    # The categories the character threshold applies to (PixAI: also the copyrights derived from characters).
    character_categories: frozenset[int] = frozenset({CHARACTER})
    # Named general thresholds the authors publish (Camie: micro-opt, macro-opt); `--threshold-profile` picks one.
    threshold_profiles: Mapping[str, float] = MappingProxyType({})
    default_profile: str | None = None
    # Images per model call when the run does not choose (`--tagger-batch-size`): what the hardware prefers.
    preferred_batch_size: int = 1
    # Its output is a function of the image alone, so the prediction store may keep it and serve it again (the
    # control tagger reads the post's tags instead: it is never stored).
    storable: bool = True

    def vocabulary(self) -> Mapping[str, int] | None:
        """Tag -> category for every tag the tagger can output; None for an open vocabulary."""
        return None

    def tag_counts(self) -> Mapping[str, int] | None:
        """How often each output tag occurs in the model's training data (its tag list's counts), if known: the
        run's metrics call tags outside the most frequent ones "rare", as the model authors' tables do."""
        return None

    def identity(self) -> dict[str, str]:
        """What makes results comparable: model file hashes, revision, server and model name (builtins only)."""
        from tagger_eval import __version__

        return {"implementation": f"{type(self).__module__}.{type(self).__qualname__}", "version": __version__}

    @abstractmethod
    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        """One `{tag: probability}` per sample, in order; tag names as the model spells them."""

    def close(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Release the model (called once, when the session no longer needs this tagger)."""


def read_text_file(path: Path, error: Callable[[str], Exception]) -> str:
    """A model's text file (tag list, settings) as UTF-8, a BOM allowed; raises `error` naming the file and, for
    another encoding (Latin-1, UTF-16), the first byte that is not UTF-8, so the user knows what to re-save."""
    try:
        data = path.read_bytes()
    except OSError as problem:
        raise error(f"cannot read {path}: {problem.strerror or problem}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        raise error(f"{path}: byte {problem.start} (line {line}) is 0x{data[problem.start]:02x}, not UTF-8: "
                    "expected UTF-8 text; re-save the file as UTF-8") from None


def check_probabilities(values: np.ndarray, model: Path | str) -> np.ndarray:
    """The model's raw output, refused when any value lies outside [0, 1]: a model that gives logits or scores
    would be thresholded as if they were probabilities, and scored silently wrong. NaN is left to
    `normalise_prediction`, which names the tag."""
    if values.size:
        low, high = float(np.fmin.reduce(values, axis=None)), float(np.fmax.reduce(values, axis=None))
        if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
            raise ModelOutputError(
                f"{model} outputs values from {low:.4g} to {high:.4g}, outside [0, 1]: logits or scores, not "
                "probabilities, so no threshold applies; use an export whose output ends in a sigmoid"
            )
    return values


def normalise_prediction(
    probabilities: Mapping[str, float], aliases: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Tag names normalised, and renamed through Danbooru's tag aliases when given (a model trained on old names).

    When two names meet, the higher probability stands. NaN means a broken model.
    """
    # Once per post over the model's whole vocabulary (10,000 tags), so written for speed: names and values are
    # converted in bulk, and each entry is looked at only when its name merges with another's.
    names = [normalise_tag(name) for name in probabilities]
    if aliases:
        names = [aliases.get(tag, tag) for tag in names]
    values = [float(probability) for probability in probabilities.values()]
    if any(map(math.isnan, values)):
        name = next(name for name, value in zip(probabilities, values, strict=True) if math.isnan(value))
        raise ValueError(f"the tagger returned NaN as the probability of {name!r}")
    normalised = dict(zip(names, values, strict=True))
    if len(normalised) < len(names) or "" in normalised:
        normalised = {}
        for tag, value in zip(names, values, strict=True):
            if tag and (tag not in normalised or value > normalised[tag]):
                normalised[tag] = value
    return normalised


def select_tags(
    probabilities: Mapping[str, float],
    threshold: float,
    character_threshold: float | None = None,
    categories: Mapping[str, int] | None = None,
    character_categories: frozenset[int] = frozenset({CHARACTER}),
) -> set[str]:
    """Tags with probability strictly above the threshold, plus exactly one rating: the most probable one.

    The strict `>` is the model authors' convention. Tags whose category (from `categories`) is in
    `character_categories` use `character_threshold` when one is given. A rating is always predicted when the
    tagger outputs any, whatever its probability, because every Danbooru post has exactly one.
    """
    if character_threshold is None or not categories:
        selected = {tag for tag, p in probabilities.items() if p > threshold}
    else:
        selected = {tag for tag, p in probabilities.items()
                    if p > (character_threshold if categories.get(tag) in character_categories else threshold)}
    ratings = [tag for tag in probabilities if tag.startswith(RATING_PREFIX)]  # no call per tag: 10,000 a post
    selected.difference_update(ratings)
    if ratings:
        selected.add(max(ratings, key=probabilities.__getitem__))
    return selected


def resolve_rating_aliases(
    selected: set[str], truth_rating: str, rating_aliases: Mapping[str, frozenset[str]]
) -> set[str]:
    """A coarse rating (`rating:safe`) counts as the truth's rating when it stands for it, and stays wrong if not."""
    for tag in selected & rating_aliases.keys():
        if truth_rating in rating_aliases[tag]:
            selected = (selected - {tag}) | {truth_rating}
    return selected
