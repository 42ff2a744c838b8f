"""Tag names, categories and ratings, normalised once at every boundary (dataset rows, tagger output)."""

from __future__ import annotations

import re
from functools import lru_cache

# Danbooru's tag categories, plus the category WD14's selected_tags.csv uses for ratings.
GENERAL = 0
ARTIST = 1
COPYRIGHT = 3
CHARACTER = 4
META = 5
RATING = 9

CATEGORY_NAMES = {
    GENERAL: "general",
    ARTIST: "artist",
    COPYRIGHT: "copyright",
    CHARACTER: "character",
    META: "meta",
    RATING: "rating",
}

RATING_PREFIX = "rating:"
RATING_LETTERS = {
    "g": "rating:general",
    "s": "rating:sensitive",
    "q": "rating:questionable",
    "e": "rating:explicit",
}
RATING_TAGS = frozenset(RATING_LETTERS.values())


_UNESCAPED_PARENTHESIS = re.compile(r"(?<!\\)[()]")
_ESCAPED_PARENTHESIS = re.compile(r"\\([()])")


@lru_cache(maxsize=1 << 17)  # a model outputs the same ~10,000 names for every image: normalise each once
def normalise_tag(name: str) -> str:
    """One spelling per tag: `Long hair`, `long_hair` and webui's `hatsune miku \\(vocaloid\\)` all match Danbooru.

    The webui escapes every parenthesis, so escapes are removed only when all of them are escaped: Danbooru's own
    `\\(^o^)/` keeps its backslash.
    """
    tag = "_".join(name.strip().lower().split())
    if "\\" in tag and not _UNESCAPED_PARENTHESIS.search(tag):
        tag = _ESCAPED_PARENTHESIS.sub(r"\1", tag)
    return tag


def is_rating(tag: str) -> bool:
    return tag.startswith(RATING_PREFIX)


def rating_tag(letter: str) -> str:
    """Danbooru's one-letter rating (`g/s/q/e`) as the tag it counts as in the truth set."""
    try:
        return RATING_LETTERS[letter.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown Danbooru rating {letter!r}; expected one of g, s, q, e") from None


def split_tag_string(tag_string: str | None) -> list[str]:
    """Danbooru's space-separated tag strings; an empty or NULL column is no tags."""
    return (tag_string or "").split()
