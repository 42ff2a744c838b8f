"""Tag-name normalisation, ratings and Danbooru's tag strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagger_eval.tags import (
    RATING_TAGS,
    is_rating,
    normalise_tag,
    rating_tag,
    split_tag_string,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Long Hair", "long_hair"),
        ("long_hair", "long_hair"),
        ("LONG_HAIR", "long_hair"),
        ("hatsune miku \\(vocaloid\\)", "hatsune_miku_(vocaloid)"),
        ("Hatsune Miku (Vocaloid)", "hatsune_miku_(vocaloid)"),
        ("hatsune_miku_(vocaloid)", "hatsune_miku_(vocaloid)"),
        ("  long hair  ", "long_hair"),
        ("\tlong hair\n", "long_hair"),
        ("long   hair", "long_hair"),
        ("looking  at \t viewer", "looking_at_viewer"),
        ("1girl", "1girl"),
        # Danbooru names that keep their punctuation
        (":d", ":d"),
        ("\\m/", "\\m/"),
        ("rating:general", "rating:general"),
    ],
)
def test_normalise_tag(name, expected):
    assert normalise_tag(name) == expected


@pytest.mark.parametrize("name", ["", " ", "   ", "\t\n"])
def test_normalise_tag_blank_is_empty(name):
    assert normalise_tag(name) == ""


@pytest.mark.parametrize(
    ("letter", "expected"),
    [
        ("g", "rating:general"),
        ("s", "rating:sensitive"),
        ("q", "rating:questionable"),
        ("e", "rating:explicit"),
        ("G", "rating:general"),
        (" e ", "rating:explicit"),
    ],
)
def test_rating_tag(letter, expected):
    assert rating_tag(letter) == expected
    assert expected in RATING_TAGS
    assert is_rating(rating_tag(letter))


def test_rating_tags_are_the_four_danbooru_ratings():
    assert {rating_tag(letter) for letter in "gsqe"} == RATING_TAGS
    assert len(RATING_TAGS) == 4


@pytest.mark.parametrize("letter", ["x", "z", "safe", ""])
def test_rating_tag_rejects_unknown_letter_and_names_it(letter):
    with pytest.raises(ValueError) as excinfo:
        rating_tag(letter)
    assert repr(letter) in str(excinfo.value)
    assert "g, s, q, e" in str(excinfo.value)


def test_is_rating():
    assert is_rating("rating:general")
    assert is_rating("rating:safe")  # DeepDanbooru's pre-2022 rating still counts as a rating
    assert not is_rating("general")
    assert not is_rating("long_hair")
    assert not is_rating("xrating:general")


@pytest.mark.parametrize(
    ("tag_string", "expected"),
    [
        (None, []),
        ("", []),
        ("   ", []),
        ("1girl solo long_hair", ["1girl", "solo", "long_hair"]),
        ("  1girl   solo\tlong_hair\n", ["1girl", "solo", "long_hair"]),
        ("hatsune_miku_(vocaloid)", ["hatsune_miku_(vocaloid)"]),
    ],
)
def test_split_tag_string(tag_string, expected):
    assert split_tag_string(tag_string) == expected


# Names with the characters that matter to normalisation: case, spaces of several kinds, underscores, parentheses.
# A backslash is left out here: see the escape-specific tests below.
tag_like_text = st.text(alphabet=st.sampled_from(list("aBcD_ ():\t\n1")), max_size=20)


@given(tag_like_text)
def test_normalise_tag_is_idempotent_on_tag_like_names(name):
    once = normalise_tag(name)
    assert normalise_tag(once) == once


@given(st.text(alphabet=st.characters(exclude_characters="\\"), max_size=20))
def test_normalise_tag_is_idempotent_on_any_text_without_backslashes(name):
    once = normalise_tag(name)
    assert normalise_tag(once) == once


@given(tag_like_text)
def test_webui_escaped_name_normalises_like_the_plain_name_and_stays_put(name):
    escaped = name.replace("(", "\\(").replace(")", "\\)")
    once = normalise_tag(escaped)
    assert once == normalise_tag(name)
    assert normalise_tag(once) == once


@pytest.mark.parametrize("name", ["\\m/", "\\o/", "a\\b", "\\", "\\(", "hatsune miku \\(vocaloid\\)"])
def test_normalise_tag_is_idempotent_on_single_backslashes(name):
    once = normalise_tag(name)
    assert normalise_tag(once) == once


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("\\(^o^)/", "\\(^o^)/"),  # a real Danbooru tag: its backslash is not a webui escape
        ("\\\\(^o^\\)/", "\\(^o^)/"),  # the same tag as the webui escapes it (every parenthesis escaped)
        ("smile \\(meme\\) (x)", "smile_\\(meme\\)_(x)"),  # mixed escaping: left alone
    ],
)
def test_escapes_are_removed_only_when_every_parenthesis_is_escaped(name, expected):
    assert normalise_tag(name) == expected
    assert normalise_tag(expected) == expected


@given(tag_like_text)
def test_normalise_tag_output_has_no_whitespace_or_upper_case(name):
    tag = normalise_tag(name)
    assert not any(ch.isspace() for ch in tag)
    assert tag == tag.lower()
