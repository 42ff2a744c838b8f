"""Tag names, categories and ratings, normalised once at every boundary (dataset rows, tagger output)."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Danbooru's tag categories, plus the category WD14's selected_tags.csv uses for ratings and the one deepghs uses
# for the year tags Camie outputs (Danbooru has no year category).
GENERAL = 0
ARTIST = 1
COPYRIGHT = 3
CHARACTER = 4
META = 5
RATING = 9
YEAR = 10
UNKNOWN_CATEGORY = -1  # a tag whose category neither the model's files nor the dataset give

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
# Invisible characters that make two spellings of one tag differ: controls, format characters (zero-width space,
# BOM, soft hyphen, bidi controls) and lone surrogates. Whitespace among them (tab, newline) separates words.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs"})
# The zero-width joiner and non-joiner change how emoji sequences and Indic or Persian words render: kept there.
_JOINERS = "\u200c\u200d"
_JOINER_RUN = re.compile(f"[{_JOINERS}]+")
_DANBOORU_SEPARATOR = re.compile(r"[ \t\n\r\f\v]+")  # Danbooru splits tag strings on ASCII whitespace only
# What `printable` escapes: invisible characters and the line and paragraph separators.
_UNPRINTABLE = _INVISIBLE | {"Zl", "Zp"}


def _joins(neighbour: str) -> bool:
    """A joiner next to this character can matter: a non-ASCII letter, mark or symbol (emoji, scripts)."""
    return not neighbour.isascii() and unicodedata.category(neighbour)[0] in "LMS"


def _meaningful_joiners(tag: str) -> str:
    """Each run of joiners becomes one joiner between two characters it can join, else nothing."""

    def keep(run: re.Match[str]) -> str:
        before, after = tag[run.start() - 1 : run.start()], tag[run.end() : run.end() + 1]
        return run.group()[0] if before and after and _joins(before) and _joins(after) else ""

    return _JOINER_RUN.sub(keep, tag)


@lru_cache(maxsize=1 << 17)  # a model outputs the same ~10,000 names for every image: normalise each once
def normalise_tag(name: str) -> str:
    """One spelling per tag: `Long hair`, `long_hair` and webui's `hatsune miku \\(vocaloid\\)` all match Danbooru.

    Any Unicode whitespace (a no-break space too) separates words like a space; Unicode is composed (NFC, so
    a decomposed `café` is the composed one); invisible characters are dropped (a zero-width space, a bidi
    override), the zero-width joiners except inside emoji or words of scripts that need them. The webui escapes
    every parenthesis, so escapes are removed only when all of them are escaped: Danbooru's own `\\(^o^)/` keeps
    its backslash.
    """
    visible = "".join(ch for ch in name if ch.isspace() or ch in _JOINERS or unicodedata.category(ch) not in _INVISIBLE)
    text = unicodedata.normalize("NFC", visible.lower())
    if _JOINER_RUN.search(text):  # after lower case (`K`, the Kelvin sign, becomes ASCII), before spaces go
        text = _meaningful_joiners(text)
    tag = unicodedata.normalize("NFC", "_".join(text.split()))  # again: a dropped joiner may let an accent compose
    if "\\" in tag and not _UNESCAPED_PARENTHESIS.search(tag):
        tag = _ESCAPED_PARENTHESIS.sub(r"\1", tag)
    return tag


def printable(text: str) -> str:
    """`text` with control, format (bidi, zero-width) and line-separator characters escaped as `\\u202e`.

    For every tag, tagger label, path or reason on its way to a terminal, so that a hostile dataset or server
    cannot recolour, reorder or rewrite what the user reads.
    """
    if text.isprintable():  # false for every character escaped below
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text
    )


def is_rating(tag: str) -> bool:
    return tag.startswith(RATING_PREFIX)


def rating_tag(letter: str) -> str:
    """Danbooru's one-letter rating (`g/s/q/e`) as the tag it counts as in the truth set."""
    try:
        return RATING_LETTERS[letter.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown Danbooru rating {letter!r}; expected one of g, s, q, e") from None


def split_tag_string(tag_string: str | None) -> list[str]:
    """Danbooru's space-separated tag strings; an empty or NULL column is no tags.

    Only ASCII whitespace separates tags, as on Danbooru: a no-break space is inside a tag (and becomes `_`).
    A piece with nothing visible in it (a lone zero-width space) is no tag.
    """
    return [name for name in _DANBOORU_SEPARATOR.split(tag_string or "") if normalise_tag(name)]
