"""Tag-name normalisation, ratings, Danbooru's tag strings, and names escaped on their way to a terminal."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from builders import build_dataset
from hypothesis import given
from hypothesis import strategies as st

from tagger_eval.data.dataset import Dataset
from tagger_eval.records import PostResult
from tagger_eval.reports.leaderboard import summary_lines
from tagger_eval.scoring.post_score import score_post
from tagger_eval.taggers.base import normalise_prediction
from tagger_eval.tags import (
    RATING_TAGS,
    is_rating,
    normalise_tag,
    printable,
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



# Unicode that looks like nothing, or like something else: each case below is one class of trick.
NBSP, ZWSP, ZWNJ, ZWJ, BOM, SOFT_HYPHEN, RLO, LRI, LRM = (
    "\u00a0", "\u200b", "\u200c", "\u200d", "\ufeff", "\u00ad", "\u202e", "\u2066", "\u200e")
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji drawn from three, joined by ZWJ
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a ZWNJ inside a word changes how it is written


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"long{NBSP}hair", "long_hair"),  # every Unicode space is a space
        ("long\u3000hair", "long_hair"),
        ("long\u2028hair\u2029", "long_hair"),
        ("long\x85hair", "long_hair"),
        ("cafe\u0301", "caf\u00e9"),  # decomposed is composed (NFC)
        ("CAFE\u0301", "caf\u00e9"),
        (f"long{ZWSP}_hair", "long_hair"),  # invisible format characters are dropped
        (f"{BOM}long_hair", "long_hair"),
        (f"long{SOFT_HYPHEN}_hair", "long_hair"),
        (f"{RLO}riah_gnol", "riah_gnol"),
        (f"{LRI}long_hair{LRM}", "long_hair"),
        ("\x1b[31mlong_hair\x00", "[31mlong_hair"),  # so are control characters
        ("\ud800long_hair", "long_hair"),  # and lone surrogates (not even writable as UTF-8)
        (f"long{ZWJ}_hair{ZWNJ}", "long_hair"),  # a joiner next to ASCII joins nothing
        (f"{ZWJ}{FAMILY}{ZWJ}", FAMILY),  # ... but one inside an emoji sequence is kept
        (FAMILY.replace(ZWJ, ZWJ * 3), FAMILY),
        (PERSIAN, PERSIAN),  # ... and in a word of a script that needs it
        (f"e{ZWJ}\u0301", "\u00e9"),  # a dropped joiner lets the accent compose
        (f"hatsune{NBSP}miku \\(vocaloid\\){ZWSP}", "hatsune_miku_(vocaloid)"),
    ],
)
def test_normalise_tag_unicode(name, expected):
    assert normalise_tag(name) == expected


@pytest.mark.parametrize("name", [ZWSP, BOM + RLO, "\x1b", f"{ZWJ} {ZWNJ}", f" {NBSP}\u3000"])
def test_normalise_tag_invisible_is_empty(name):
    assert normalise_tag(name) == ""


@pytest.mark.parametrize(
    ("tag_string", "expected"),
    [
        (f"long{NBSP}hair solo", [f"long{NBSP}hair", "solo"]),  # Danbooru separates tags by ASCII spaces only
        ("long\u3000hair\u2028solo", ["long\u3000hair\u2028solo"]),
        (f"solo {ZWSP} {BOM}{RLO}\t1girl", ["solo", "1girl"]),  # a piece with nothing visible is no tag
    ],
)
def test_split_tag_string_unicode(tag_string, expected):
    assert split_tag_string(tag_string) == expected


def test_dataset_truth_and_tagger_output_meet_whatever_their_unicode(tmp_path: Path):
    """A hand-made data.db (real sqlite) and a tagger spelling the same tags differently still score 1.0."""
    general = f"long{NBSP}hair cafe\u0301 zero{ZWSP}width {ZWSP} {RLO}smile"
    with Dataset(build_dataset(tmp_path, [(1, "g", general)], {})) as dataset:
        truth = set(dataset.get(1).tags)
    assert truth == {"long_hair", "caf\u00e9", "zerowidth", "smile", "rating:general"}
    predicted = normalise_prediction(
        {"Long Hair": 0.9, "caf\u00e9": 0.9, "zerowidth": 0.9, f"smile{LRM}": 0.9, "rating:general": 0.9})
    assert score_post(predicted, truth).score == 1.0


# Text built to hit the cases that matter: any character, plus the invisible, spacing, joining and combining ones.
TRICKY = [NBSP, ZWSP, ZWNJ, ZWJ, BOM, SOFT_HYPHEN, RLO, LRI, LRM, "\u3000", "\u2028", "\x85", "\x1b", "\x00",
          "\u0301", "\u0308", "\u0327", "\u094d", "\ufe0f", "\U0001f3fb", "\U0001f468", "\u0915", "\u06cc",
          "e", "E", "c", "\u212a", "\u0130", "_", " ", "(", ")"]
unicode_names = st.one_of(
    st.text(st.sampled_from(TRICKY), max_size=12),  # dense: accents next to letters, joiners next to emoji
    st.text(st.one_of(st.characters(exclude_characters="\\"), st.sampled_from(TRICKY)), max_size=20),
)


def _is_meaningful_joiner(tag: str, index: int) -> bool:
    def joins(ch: str) -> bool:
        return not ch.isascii() and unicodedata.category(ch)[0] in "LMS"

    return tag[index] in (ZWJ, ZWNJ) and 0 < index < len(tag) - 1 and joins(tag[index - 1]) and joins(tag[index + 1])


@given(unicode_names)
def test_normalise_tag_is_idempotent_and_nfc_stable_on_unicode(name):
    once = normalise_tag(name)
    assert normalise_tag(once) == once
    assert unicodedata.is_normalized("NFC", once)


@given(unicode_names)
def test_normalise_tag_output_has_no_whitespace_control_or_stray_format_characters(name):
    tag = normalise_tag(name)
    assert tag == tag.lower()
    assert not any(ch.isspace() for ch in tag)
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in tag)
    assert all(_is_meaningful_joiner(tag, i) for i, ch in enumerate(tag) if unicodedata.category(ch) == "Cf")


@given(st.text(st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(TRICKY))))
def test_printable_leaves_no_control_bidi_or_line_breaking_character(text):
    shown = printable(text)
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in shown)
    shown.encode("utf-8")  # a lone surrogate would raise here, and in the terminal's encoder
    if text.isprintable():
        assert shown == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{RLO}txt.exe", "\\u202etxt.exe"),
        ("\x1b[2J\n", "\\x1b[2J\\n"),
        (f"a{ZWSP}b{NBSP}c\u3000\u00e9\\m/", f"a\\u200bb{NBSP}c\u3000\u00e9\\m/"),  # visible text stays as it is
    ],
)
def test_printable_escapes_like_python(text, expected):
    assert printable(text) == expected


HOSTILE = f"{RLO}\x1b[31m"


def _raw_control_characters(text: str) -> list[str]:
    """Characters a terminal would act on rather than show (newlines between lines excepted)."""
    return [ch for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


def test_failure_message_escapes_label_and_tags():
    result = PostResult(f"webui:http://127.0.0.1:1#{HOSTILE}", 5, "scored", floor=0.9, threshold=0.5,
                        counts={"score": 0.5}, missed_tags=[f"a{HOSTILE}"], wrong_tags=[f"{LRI}b"])
    message = result.failure_message()
    assert _raw_control_characters(message) == []
    assert "webui:http://127.0.0.1:1#\\u202e\\x1b[31m scored 0.500 on post 5" in message
    assert "missed (1): a\\u202e\\x1b[31m\n" in message
    assert message.endswith("wrong (1): \\u2066b")


def test_summary_escapes_labels_paths_and_reasons():
    result = PostResult(f"hydrus-dd:http://host{HOSTILE}", 1, "scored", floor=0.0, threshold=None,
                        counts=score_post({"a"}, {"a"}).to_dict())
    lines = summary_lines([result], f"data{HOSTILE}.db", "all", {f"x{RLO}": f"missing{HOSTILE}"})
    assert all(_raw_control_characters(line) == [] for line in lines)
    assert lines[0] == "dataset: data\\u202e\\x1b[31m.db"
    assert any(line.startswith("hydrus-dd:http://host\\u202e\\x1b[31m ") for line in lines)
    assert lines[-1] == "not run: x\\u202e: missing\\u202e\\x1b[31m"
