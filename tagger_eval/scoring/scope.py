"""Which tags count (`--tag-scope`): the same filter is applied to the truth and to the prediction."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum

from tagger_eval.tags import CHARACTER, GENERAL, RATING, UNKNOWN_CATEGORY, is_rating


class TagScope(StrEnum):
    ALL = "all"  # the seed's choice: every Danbooru tag, artists and meta included
    GENERAL = "general"
    GENERAL_CHARACTER = "general+character"
    VOCABULARY = "vocabulary"  # only tags the tagger can output: the fair comparison of one tagger
    SHARED = "shared"  # only tags every selected tagger can output: the fair comparison between taggers


# The categories a scope keeps; None: every category (`vocabulary` and `shared` filter by name instead).
SCOPE_CATEGORIES: dict[TagScope, frozenset[int] | None] = {
    TagScope.ALL: None,
    TagScope.GENERAL: frozenset({GENERAL, RATING}),
    TagScope.GENERAL_CHARACTER: frozenset({GENERAL, CHARACTER, RATING}),
    TagScope.VOCABULARY: None,
    TagScope.SHARED: None,
}


def scoped_tags(
    tags: Collection[str],
    categories: Mapping[str, int],
    scope: TagScope | str,
    vocabulary: Collection[str] | None,
) -> set[str]:
    """The tags of `tags` that count under `scope`.

    `categories` gives each known tag's category; a predicted tag of unknown category stays in, so a tagger can
    never escape a wrong tag by inventing a name. `vocabulary` is None for a tagger with an open vocabulary; for
    `shared` it is the intersection of the selected taggers' vocabularies.
    """
    if scope not in SCOPE_CATEGORIES:
        raise ValueError(f"unknown tag scope {scope!r}; expected one of {', '.join(TagScope)}")
    if scope in (TagScope.VOCABULARY, TagScope.SHARED):
        return set(tags) if vocabulary is None else {tag for tag in tags if tag in vocabulary}
    allowed = SCOPE_CATEGORIES[TagScope(scope)]
    if allowed is None:
        return set(tags)
    return {tag for tag in tags if (category := _category(tag, categories)) is None or category in allowed}


def _category(tag: str, categories: Mapping[str, int]) -> int | None:
    """The tag's category; None when unknown, also where a model's vocabulary says so (JoyTag, ML-Danbooru)."""
    if is_rating(tag):
        return RATING
    category = categories.get(tag)
    return None if category == UNKNOWN_CATEGORY else category
