"""Which tags count (`--tag-scope`): the same filter is applied to the truth and to the prediction."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from tagger_eval.tags import CHARACTER, GENERAL, RATING, is_rating

ALL = "all"
VOCABULARY = "vocabulary"
SHARED = "shared"
SCOPE_CATEGORIES: dict[str, frozenset[int] | None] = {
    ALL: None,  # the seed's choice: every Danbooru tag, artists and meta included
    "general": frozenset({GENERAL, RATING}),
    "general+character": frozenset({GENERAL, CHARACTER, RATING}),
    VOCABULARY: None,  # only tags the tagger can output: the fair comparison of one tagger
    SHARED: None,  # only tags every selected tagger can output: the fair comparison between taggers
}
SCOPES = tuple(SCOPE_CATEGORIES)


def scoped_tags(
    tags: Collection[str],
    categories: Mapping[str, int],
    scope: str,
    vocabulary: Collection[str] | None,
) -> set[str]:
    """The tags of `tags` that count under `scope`.

    `categories` gives each known tag's category; a predicted tag of unknown category stays in, so a tagger can
    never escape a wrong tag by inventing a name. `vocabulary` is None for a tagger with an open vocabulary; for
    `shared` it is the intersection of the selected taggers' vocabularies.
    """
    if scope not in SCOPE_CATEGORIES:
        raise ValueError(f"unknown tag scope {scope!r}; expected one of {', '.join(SCOPES)}")
    if scope in (VOCABULARY, SHARED):
        return set(tags) if vocabulary is None else {tag for tag in tags if tag in vocabulary}
    allowed = SCOPE_CATEGORIES[scope]
    if allowed is None:
        return set(tags)
    return {tag for tag in tags if (category := _category(tag, categories)) is None or category in allowed}


def _category(tag: str, categories: Mapping[str, int]) -> int | None:
    return RATING if is_rating(tag) else categories.get(tag)
