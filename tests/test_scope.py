"""Tag scopes (`--tag-scope`), and the threshold rule that turns probabilities into a predicted tag set."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tagger_eval.scoring.post_score import score
from tagger_eval.scoring.scope import TagScope, scoped_tags
from tagger_eval.taggers.base import normalise_prediction, select_tags
from tagger_eval.tags import ARTIST, CHARACTER, COPYRIGHT, GENERAL, META, RATING

CATEGORIES = {
    "long_hair": GENERAL,
    "smile": GENERAL,
    "hatsune_miku": CHARACTER,
    "vocaloid": COPYRIGHT,
    "some_artist": ARTIST,
    "highres": META,
    "rating:general": RATING,
}
TAGS = {*CATEGORIES, "unknown_tag"}


def test_scopes_are_the_five_documented_ones():
    assert set(TagScope) == {"all", "general", "general+character", "vocabulary", "shared"}


def test_shared_scope_keeps_the_shared_vocabulary():
    shared = frozenset({"long_hair", "rating:general"})
    kept = scoped_tags({"long_hair", "smile", "rating:general"}, {}, "shared", shared)
    assert kept == {"long_hair", "rating:general"}


def test_all_scope_keeps_everything():
    assert scoped_tags(TAGS, CATEGORIES, "all", None) == TAGS
    # a vocabulary does not restrict the `all` scope
    assert scoped_tags(TAGS, CATEGORIES, "all", {"smile"}) == TAGS


def test_general_scope():
    assert scoped_tags(TAGS, CATEGORIES, "general", None) == {
        "long_hair",
        "smile",
        "rating:general",
        "unknown_tag",  # unknown category: kept, so an invented name still counts as a wrong tag
    }


def test_general_plus_character_scope():
    assert scoped_tags(TAGS, CATEGORIES, "general+character", None) == {
        "long_hair",
        "smile",
        "hatsune_miku",
        "rating:general",
        "unknown_tag",
    }


@pytest.mark.parametrize("scope", ["general", "general+character"])
def test_general_scopes_drop_artist_copyright_and_meta(scope):
    kept = scoped_tags(TAGS, CATEGORIES, scope, None)
    assert kept.isdisjoint({"some_artist", "vocaloid", "highres"})


@pytest.mark.parametrize("scope", ["general", "general+character"])
def test_rating_kept_by_prefix_even_without_a_category(scope):
    tags = {"rating:explicit", "rating:safe", "some_artist"}
    assert scoped_tags(tags, {"some_artist": ARTIST}, scope, None) == {"rating:explicit", "rating:safe"}


@pytest.mark.parametrize("scope", ["general", "general+character"])
def test_rating_kept_by_prefix_even_when_categories_say_otherwise(scope):
    # the `rating:` prefix decides, whatever category a mapping gives the name
    assert scoped_tags({"rating:general"}, {"rating:general": ARTIST}, scope, None) == {"rating:general"}


@pytest.mark.parametrize("scope", ["general", "general+character"])
def test_unknown_category_tags_are_kept(scope):
    assert scoped_tags({"invented_tag", "some_artist"}, CATEGORIES, scope, None) == {"invented_tag"}
    assert scoped_tags({"invented_tag"}, {}, scope, None) == {"invented_tag"}


def test_vocabulary_scope_keeps_only_vocabulary_tags():
    vocabulary = {"long_hair", "hatsune_miku", "highres", "rating:general"}
    # categories play no part here: meta and character tags in the vocabulary stay, unknown names go
    assert scoped_tags(TAGS, CATEGORIES, "vocabulary", vocabulary) == vocabulary


def test_vocabulary_scope_drops_ratings_the_tagger_cannot_output():
    vocabulary = {"long_hair"}
    assert scoped_tags({"long_hair", "rating:general"}, CATEGORIES, "vocabulary", vocabulary) == {"long_hair"}


def test_vocabulary_scope_accepts_a_tag_to_category_mapping():
    # Tagger.vocabulary() returns a Mapping; membership is by key
    vocabulary = {"smile": GENERAL, "vocaloid": COPYRIGHT}
    assert scoped_tags(TAGS, CATEGORIES, "vocabulary", vocabulary) == {"smile", "vocaloid"}


def test_vocabulary_scope_with_open_vocabulary_keeps_everything():
    assert scoped_tags(TAGS, CATEGORIES, "vocabulary", None) == TAGS


def test_vocabulary_scope_with_empty_vocabulary_keeps_nothing():
    assert scoped_tags(TAGS, CATEGORIES, "vocabulary", set()) == set()


@pytest.mark.parametrize("scope", ["", "General", "character", "general+copyright", "none"])
def test_unknown_scope_raises(scope):
    with pytest.raises(ValueError, match="unknown tag scope") as excinfo:
        scoped_tags(TAGS, CATEGORIES, scope, None)
    assert repr(scope) in str(excinfo.value)


def test_scoped_tags_returns_a_new_set():
    tags = {"long_hair"}
    result = scoped_tags(tags, CATEGORIES, "all", None)
    assert result == tags
    result.add("smile")
    assert tags == {"long_hair"}


# --- the control property: the same scope on both sides of a perfect prediction scores exactly 1.0 ---------------

RATINGS = ["rating:general", "rating:sensitive", "rating:questionable", "rating:explicit"]
plain_tags = st.text(alphabet="abcdefgh_", min_size=1, max_size=4)
categories_values = st.sampled_from([GENERAL, ARTIST, COPYRIGHT, CHARACTER, META])


@st.composite
def posts(draw):
    """A post's truth tags with their categories (some left unknown), one rating, and a tagger vocabulary."""
    plain = draw(st.frozensets(plain_tags, max_size=12))
    rating = draw(st.sampled_from(RATINGS))
    truth = set(plain) | {rating}
    categories = {tag: draw(categories_values) for tag in sorted(plain) if draw(st.booleans())}
    if draw(st.booleans()):
        categories[rating] = RATING
    vocabulary = draw(st.none() | st.frozensets(st.sampled_from(sorted(truth)) | plain_tags | st.sampled_from(RATINGS)))
    return truth, categories, vocabulary


@given(posts(), st.sampled_from(list(TagScope)))
def test_control_scores_exactly_one_in_every_scope(post, scope):
    truth, categories, vocabulary = post
    scoped_truth = scoped_tags(truth, categories, scope, vocabulary)
    assume(scoped_truth)
    scoped_prediction = scoped_tags(set(truth), categories, scope, vocabulary)
    assert scoped_prediction == scoped_truth
    assert score(scoped_prediction, scoped_truth) == 1.0


@given(posts(), st.sampled_from(list(TagScope)), st.floats(min_value=0.0, max_value=0.99))
def test_control_through_select_tags_scores_exactly_one(post, scope, threshold):
    # what the control tagger does: every truth tag at probability 1.0, then the threshold rule, then the scope
    truth, categories, vocabulary = post
    scoped_truth = scoped_tags(truth, categories, scope, vocabulary)
    assume(scoped_truth)
    selected = select_tags(normalise_prediction(dict.fromkeys(truth, 1.0)), threshold)
    assert selected == truth
    predicted = scoped_tags(selected, categories, scope, vocabulary)
    assert score(predicted, scoped_truth) == 1.0


@given(posts(), st.sampled_from(list(TagScope)))
def test_scoped_tags_is_a_subset_and_idempotent(post, scope):
    truth, categories, vocabulary = post
    once = scoped_tags(truth, categories, scope, vocabulary)
    assert once <= truth
    assert scoped_tags(once, categories, scope, vocabulary) == once


# --- select_tags: the threshold rule ------------------------------------------------------------------------------


def test_select_tags_threshold_is_strict():
    probabilities = {"above": 0.51, "at": 0.5, "below": 0.49}
    assert select_tags(probabilities, 0.5) == {"above"}


def test_select_tags_tag_exactly_at_threshold_not_selected_for_other_thresholds():
    for threshold in (0.0, 0.35, 0.3537, 1.0):
        assert select_tags({"tag": threshold}, threshold) == set()
    assert select_tags({"tag": 0.35}, 0.3499) == {"tag"}


def test_select_tags_one_rating_the_most_probable_even_below_threshold():
    probabilities = {
        "long_hair": 0.9,
        "smile": 0.2,
        "rating:general": 0.1,
        "rating:sensitive": 0.3,
        "rating:questionable": 0.05,
        "rating:explicit": 0.01,
    }
    assert select_tags(probabilities, 0.5) == {"long_hair", "rating:sensitive"}


def test_select_tags_only_one_rating_even_when_several_are_above_threshold():
    probabilities = {"rating:general": 0.8, "rating:sensitive": 0.95, "rating:explicit": 0.7, "smile": 0.6}
    assert select_tags(probabilities, 0.5) == {"rating:sensitive", "smile"}


def test_select_tags_rating_selected_even_at_probability_zero():
    assert select_tags({"rating:general": 0.0, "smile": 0.0}, 0.5) == {"rating:general"}


def test_select_tags_no_rating_when_none_output():
    assert select_tags({"long_hair": 0.9, "smile": 0.6}, 0.5) == {"long_hair", "smile"}
    assert select_tags({"long_hair": 0.1}, 0.5) == set()
    assert select_tags({}, 0.5) == set()


@given(
    st.dictionaries(plain_tags, st.floats(min_value=0.0, max_value=1.0), max_size=10),
    st.dictionaries(st.sampled_from(RATINGS), st.floats(min_value=0.0, max_value=1.0), max_size=4),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_select_tags_property(plain, ratings, threshold):
    selected = select_tags({**plain, **ratings}, threshold)
    selected_plain = {tag for tag in selected if not tag.startswith("rating:")}
    selected_ratings = selected - selected_plain
    assert selected_plain == {tag for tag, p in plain.items() if p > threshold}
    if ratings:
        assert len(selected_ratings) == 1
        (rating,) = selected_ratings
        assert ratings[rating] == max(ratings.values())
    else:
        assert selected_ratings == set()


# --- normalise_prediction -------------------------------------------------------------------------------------


def test_normalise_prediction_merges_spellings_keeping_the_max():
    probabilities = {"Long Hair": 0.4, "long_hair": 0.7, "long hair": 0.2, "smile": 0.3}
    assert normalise_prediction(probabilities) == {"long_hair": 0.7, "smile": 0.3}


def test_normalise_prediction_max_wins_whatever_the_order():
    assert normalise_prediction({"long_hair": 0.9, "Long Hair": 0.1}) == {"long_hair": 0.9}
    assert normalise_prediction({"Long Hair": 0.9, "long_hair": 0.1}) == {"long_hair": 0.9}


def test_normalise_prediction_unescapes_webui_names_and_drops_blank_ones():
    probabilities = {"hatsune miku \\(vocaloid\\)": 0.8, "hatsune_miku_(vocaloid)": 0.6, "": 0.9, "  ": 0.5}
    assert normalise_prediction(probabilities) == {"hatsune_miku_(vocaloid)": 0.8}


def test_normalise_prediction_returns_floats():
    result = normalise_prediction({"smile": 1, "rating:general": 0})
    assert result == {"smile": 1.0, "rating:general": 0.0}
    assert all(type(p) is float for p in result.values())


def test_normalise_prediction_then_select_tags():
    # webui-style output: spaces, escapes, several spellings; the threshold applies to the merged probability
    probabilities = {"Long Hair": 0.3, "long_hair": 0.6, "smile": 0.5, "rating:general": 0.2, "rating:explicit": 0.1}
    assert select_tags(normalise_prediction(probabilities), 0.5) == {"long_hair", "rating:general"}
