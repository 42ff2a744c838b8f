"""Taggers without ratings, categories or today's tag names (JoyTag, PixAI, ML-Danbooru, Camie), judged fairly.

Every run here is real: a data.db built with chosen tags, in-process taggers with fixed outputs registered for the
test, and `Evaluation` / `parse_run_config` as a pytest run drives them. The expected numbers are worked out by
hand from the seed formula `score = (|P & T| - |P - T|) / |T|`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import pytest
from builders import build_dataset
from huggingface_hub import constants as hub_constants
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tagger_eval.cli import main as cli_main
from tagger_eval.config import ConfigError, parse_run_config
from tagger_eval.records import PostResult, TaggerSummary
from tagger_eval.reports.leaderboard import format_table, summarise
from tagger_eval.reports.results import ResultsError, build_document, load, save
from tagger_eval.run.evaluation import Evaluation, TaggerRun
from tagger_eval.taggers import Sample, Tagger, TaggerEntry, registered, select_tags
from tagger_eval.taggers.base import TaggerError
from tagger_eval.taggers.hub import PublishedModel
from tagger_eval.tags import CHARACTER, COPYRIGHT, GENERAL, RATING, RATING_TAGS, UNKNOWN_CATEGORY

RATINGS = dict.fromkeys(RATING_TAGS, RATING)


class ScriptedTagger(Tagger):
    """A tagger with a chosen vocabulary that gives every image the same probabilities."""

    def __init__(self, name: str, vocabulary: Mapping[str, int] | None, output: Mapping[str, float]) -> None:
        self.name = name
        self._vocabulary = dict(vocabulary) if vocabulary is not None else None
        self.output = dict(output)

    def vocabulary(self) -> Mapping[str, int] | None:
        return self._vocabulary

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        return [dict(self.output) for _ in samples]


def scripted(name: str, vocabulary: Mapping[str, int] | None, output: Mapping[str, float]) -> TaggerEntry:
    """The registry entry of a `ScriptedTagger`: each run builds a fresh one."""
    return TaggerEntry(name, "a test's scripted tagger",
                       lambda _argument, _options: ScriptedTagger(name, vocabulary, output))


def make_dataset(root: Path, posts: Sequence[tuple[int, str, str]], *, characters: Mapping[int, str] | None = None,
                 tags: Mapping[str, int] | None = None, aliases: Sequence[tuple[str, str, str]] = ()) -> Path:
    """A data.db of `(id, rating, general tags)` posts with an image each, plus character tags per post, a `tags`
    table (name -> category) and `tag_aliases` rows `(old, new, status)`, as Danbooru's exports store them."""
    images = {post_id: Image.new("RGB", (8, 8), (post_id * 40 % 256, 90, 160)) for post_id, _, _ in posts}
    db_path = build_dataset(root, posts, images)
    with sqlite3.connect(db_path) as connection:
        for post_id, names in (characters or {}).items():
            connection.execute("UPDATE posts SET tag_string_character = ? WHERE id = ?", (names, post_id))
        connection.executemany("INSERT INTO tags (name, category, post_count) VALUES (?, ?, 1)",
                               list((tags or {}).items()))
        connection.executemany("INSERT INTO tag_aliases (antecedent_name, consequent_name, status) VALUES (?, ?, ?)",
                               list(aliases))
    connection.close()
    return db_path


@contextmanager
def evaluation_of(db_path: Path, entries: Sequence[TaggerEntry], *options: str) -> Iterator[Evaluation]:
    """A run of the entries on the dataset, as `pytest --tagger=... --dataset=...` would set it up."""
    names = ",".join(entry.name for entry in entries)
    with registered(*entries):
        evaluation = Evaluation(parse_run_config([f"--tagger={names}", f"--dataset={db_path}", *options]))
        try:
            yield evaluation
        finally:
            evaluation.close()


def evaluate(db_path: Path, entries: Sequence[TaggerEntry], *options: str,
             posts: Sequence[int] = (1,)) -> dict[str, list[PostResult]]:
    """Each tagger's results on the posts, loaded and scored through the run's own code."""
    results: dict[str, list[PostResult]] = {}
    with evaluation_of(db_path, entries, *options) as evaluation:
        for spec in evaluation.specs:
            run = evaluation.load(spec)
            try:
                results[spec.label] = [run.evaluate(evaluation.dataset, post_id) for post_id in posts]
            finally:
                run.close()
    return results


def loaded(db_path: Path, entries: Sequence[TaggerEntry], *options: str) -> dict[str, TaggerRun]:
    """Each tagger's `TaggerRun` (its settings and aligned vocabulary), closed again before returning."""
    runs: dict[str, TaggerRun] = {}
    with evaluation_of(db_path, entries, *options) as evaluation:
        for spec in evaluation.specs:
            runs[spec.label] = run = evaluation.load(spec)
            run.close()
    return runs


# Post 1 is the brief's post: truth {tag_a, tag_b, rating:general}.
POST_AB = (1, "g", "tag_a tag_b")
GENERAL_VOCABULARY = {"tag_a": GENERAL, "tag_b": GENERAL, "tag_c": GENERAL}
# tag_a certain, tag_b below every threshold used here, no rating among the outputs.
A_ONLY = {"tag_a": 0.9, "tag_b": 0.2}


# --- 1. a tagger without a rating output is not charged for the post's rating ---------------------------------------


@pytest.mark.parametrize("scope", ["all", "general", "vocabulary"])
def test_a_tagger_without_ratings_is_not_charged_a_missed_rating(tmp_path: Path, scope: str) -> None:
    """JoyTag-like vocabularies hold no rating: charging one miss per post would rank them below what they earn."""
    db_path = make_dataset(tmp_path, [POST_AB])
    unrated = scripted("unrated", GENERAL_VOCABULARY, A_ONLY)
    rated = scripted("rated", {**GENERAL_VOCABULARY, **RATINGS}, A_ONLY)  # can output a rating, gave none
    runs = loaded(db_path, [unrated, rated], f"--tag-scope={scope}")
    assert (runs["unrated"].scores_ratings, runs["rated"].scores_ratings) == (False, True)

    results = evaluate(db_path, [unrated, rated], f"--tag-scope={scope}")
    [without], [with_ratings] = results["unrated"], results["rated"]
    # Unrated: T = {tag_a, tag_b}, P = {tag_a}: (1 - 0) / 2 = 0.5, one miss (tag_b).
    assert without.score == 0.5
    assert without.counts is not None
    assert (without.counts["truth_size"], without.counts["missed"]) == (2, 1)
    assert without.missed_tags == ["tag_b"] and without.wrong_tags == []
    # Rated, same output: T = {tag_a, tag_b, rating:general}, P = {tag_a}: (1 - 0) / 3, two misses.
    assert with_ratings.score == pytest.approx(1 / 3)
    assert with_ratings.counts is not None
    assert (with_ratings.counts["truth_size"], with_ratings.counts["missed"]) == (3, 2)
    assert with_ratings.missed_tags == ["rating:general", "tag_b"]


def test_the_summary_says_n_a_for_the_rating_error_of_a_tagger_without_ratings(tmp_path: Path) -> None:
    """`0.0%` would claim every rating right; the tagger gave none, so the leaderboard says so."""
    db_path = make_dataset(tmp_path, [POST_AB, (2, "s", "tag_a tag_b hat")])
    unrated = scripted("unrated", GENERAL_VOCABULARY, A_ONLY)
    wrong_rating = scripted("wrong-rating", {**GENERAL_VOCABULARY, **RATINGS},
                            {**A_ONLY, "rating:explicit": 0.7, "rating:general": 0.2})
    results = evaluate(db_path, [unrated, wrong_rating], posts=(1, 2))
    lines = format_table(summarise([result for group in results.values() for result in group]))
    header = lines[0].split("  ")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == ["unrated", "wrong-rating"]  # best first
    column = [cell.strip() for cell in header if cell.strip()].index("rating err")
    # unrated: post 1 (1 - 0) / 2 = 0.5, post 2 T = {tag_a, tag_b, hat}: 1/3; mean 0.417; no rating predicted.
    assert rows["unrated"][3] == "0.417" and rows["unrated"][column] == "n/a"
    # wrong-rating: post 1 P = {tag_a, rating:explicit}: (1 - 1) / 3 = 0, post 2 (1 - 1) / 4 = 0; 2 of 2 wrong.
    assert rows["wrong-rating"][3] == "0.000" and rows["wrong-rating"][column] == "100.0%"
    # Wrong tags: 2 wrong of 4 predicted = 50.0%; practical (ratings left out): 0 of 2 = 0.0%.
    assert rows["wrong-rating"][column - 2 : column] == ["50.0%", "0.0%"]


# --- 2. shared scope: ratings count only when every tagger outputs one ----------------------------------------------


def test_shared_scope_drops_ratings_when_one_tagger_has_none(tmp_path: Path) -> None:
    """A comparison where one tagger cannot output a rating must not charge the other's rating either."""
    db_path = make_dataset(tmp_path, [POST_AB])
    rated_output = {**A_ONLY, "rating:general": 0.8, "rating:explicit": 0.1}  # the right rating
    rated = scripted("rated", {**GENERAL_VOCABULARY, **RATINGS}, rated_output)
    unrated = scripted("unrated", {"tag_a": GENERAL, "tag_b": GENERAL}, A_ONLY)
    with evaluation_of(db_path, [rated, unrated], "--tag-scope=shared") as evaluation:
        assert evaluation.truth_options().shared_vocabulary == {"tag_a", "tag_b"}
    results = evaluate(db_path, [rated, unrated], "--tag-scope=shared")
    for label in ("rated", "unrated"):
        [result] = results[label]
        # T = {tag_a, tag_b} for both (the rated one's right rating is out of scope too): (1 - 0) / 2.
        assert result.score == 0.5, label
        assert result.counts is not None and result.counts["truth_size"] == 2, label
        assert result.missed_tags == ["tag_b"] and result.wrong_tags == [], label


def test_shared_scope_keeps_ratings_when_every_tagger_has_them(tmp_path: Path) -> None:
    """Between taggers that all output ratings, the rating is part of the comparison."""
    db_path = make_dataset(tmp_path, [POST_AB])
    rated_output = {**A_ONLY, "rating:general": 0.8, "rating:explicit": 0.1}
    first = scripted("rated-one", {**GENERAL_VOCABULARY, **RATINGS}, rated_output)
    second = scripted("rated-two", {"tag_a": GENERAL, "tag_b": GENERAL, **RATINGS}, rated_output)
    with evaluation_of(db_path, [first, second], "--tag-scope=shared") as evaluation:
        assert evaluation.truth_options().shared_vocabulary == {"tag_a", "tag_b"} | RATING_TAGS
    results = evaluate(db_path, [first, second], "--tag-scope=shared")
    for label in ("rated-one", "rated-two"):
        [result] = results[label]
        # T = {tag_a, tag_b, rating:general}, P = {tag_a, rating:general}: (2 - 0) / 3, one miss.
        assert result.score == pytest.approx(2 / 3), label
        assert result.counts is not None
        assert (result.counts["truth_size"], result.counts["missed"]) == (3, 1), label
        assert result.missed_tags == ["tag_b"], label


@pytest.mark.parametrize("scope", ["all", "vocabulary", "shared"])
def test_a_tagger_without_characters_is_not_charged_for_them_in_its_vocabulary(tmp_path: Path, scope: str) -> None:
    """ML-Danbooru outputs general tags only: a character it cannot name is no miss in a fair comparison."""
    db_path = make_dataset(tmp_path, [POST_AB], characters={1: "hatsune_miku"})
    general_only = scripted("general-only", {"tag_a": GENERAL, "tag_b": GENERAL}, {"tag_a": 0.9, "tag_b": 0.9})
    with_characters = scripted("with-characters", {"tag_a": GENERAL, "tag_b": GENERAL, "hatsune_miku": CHARACTER},
                               {"tag_a": 0.9, "tag_b": 0.9, "hatsune_miku": 0.95})
    results = evaluate(db_path, [general_only, with_characters], f"--tag-scope={scope}")
    [result] = results["general-only"]
    assert result.counts is not None
    if scope == "all":
        # T = {tag_a, tag_b, hatsune_miku} (no rating: it has none), P = {tag_a, tag_b}: (2 - 0) / 3.
        assert result.score == pytest.approx(2 / 3)
        assert result.missed_tags == ["hatsune_miku"]
    else:
        # T = {tag_a, tag_b}, both found: (2 - 0) / 2.
        assert result.score == 1.0
        assert (result.counts["truth_size"], result.counts["missed"]) == (2, 0)
    [other] = results["with-characters"]
    # vocabulary: its T = {tag_a, tag_b, hatsune_miku}, all found; shared: hatsune_miku out on both sides.
    assert other.score == 1.0
    assert other.counts is not None and other.counts["truth_size"] == (2 if scope == "shared" else 3)


# --- 3. categories of models without categories come from the dataset ---------------------------------------------


MYSTERY_VOCABULARY = {"tag_a": UNKNOWN_CATEGORY, "tag_b": GENERAL, "hatsune_miku": UNKNOWN_CATEGORY,
                      "mystery_tag": UNKNOWN_CATEGORY}
MYSTERY_OUTPUT = {"tag_a": 0.9, "tag_b": 0.1, "hatsune_miku": 0.9, "mystery_tag": 0.9}


def test_unknown_categories_take_the_datasets(tmp_path: Path) -> None:
    """JoyTag's tag list names no categories: the dataset's tags table says which are characters."""
    db_path = make_dataset(tmp_path, [POST_AB], tags={"hatsune_miku": CHARACTER, "tag_a": GENERAL})
    entry = scripted("uncategorised", MYSTERY_VOCABULARY, MYSTERY_OUTPUT)
    run = loaded(db_path, [entry])["uncategorised"]
    assert run.vocabulary == {"tag_a": GENERAL, "tag_b": GENERAL, "hatsune_miku": CHARACTER,
                              "mystery_tag": UNKNOWN_CATEGORY}
    [result] = evaluate(db_path, [entry], "--tag-scope=general")["uncategorised"]
    # hatsune_miku, a character by the dataset, is out of the general scope: never a wrong general tag.
    assert "hatsune_miku" not in result.wrong_tags
    assert result.missed_tags == ["tag_b"]


def test_an_uncategorised_tag_the_dataset_does_not_know_stays_wrong_in_general_scope(tmp_path: Path) -> None:
    """scoped_tags' rule: a tagger can never escape a wrong tag by giving it no category."""
    db_path = make_dataset(tmp_path, [POST_AB], tags={"hatsune_miku": CHARACTER, "tag_a": GENERAL})
    entry = scripted("uncategorised", MYSTERY_VOCABULARY, MYSTERY_OUTPUT)
    [result] = evaluate(db_path, [entry], "--tag-scope=general")["uncategorised"]
    # T = {tag_a, tag_b} (no rating output), P = {tag_a, mystery_tag} (hatsune_miku a character, out):
    # (1 - 1) / 2 = 0.
    assert result.wrong_tags == ["mystery_tag"]
    assert result.score == 0.0


# --- 4. old names follow the dataset's tag aliases --------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["all", "vocabulary"])
def test_an_old_tag_name_counts_as_todays(tmp_path: Path, scope: str) -> None:
    """JoyTag and ML-Danbooru learnt danbooru2021 names: `black_legwear` is today's `black_thighhighs`."""
    posts = [(1, "g", "black_thighhighs tag_a")]
    old_names = scripted("old-names", {"black_legwear": GENERAL, "tag_a": GENERAL},
                         {"black_legwear": 0.9, "tag_a": 0.9})
    aliased = make_dataset(tmp_path / "aliased", posts,
                           aliases=[("black_legwear", "black_thighhighs", "active")])
    assert "black_thighhighs" in (loaded(aliased, [old_names])["old-names"].vocabulary or {})
    [result] = evaluate(aliased, [old_names], f"--tag-scope={scope}")["old-names"]
    # T = {black_thighhighs, tag_a}, P = {black_thighhighs, tag_a}: (2 - 0) / 2.
    assert result.score == 1.0 and result.wrong_tags == [] and result.missed_tags == []

    # A deleted alias renames nothing: P = {black_legwear, tag_a}, wrong and right. Under `all`
    # T = {black_thighhighs, tag_a}: (1 - 1) / 2 = 0; under `vocabulary` black_thighhighs is not in the tagger's
    # vocabulary, so T = {tag_a}: (1 - 1) / 1 = 0.
    deleted = make_dataset(tmp_path / "deleted", posts, aliases=[("black_legwear", "black_thighhighs", "deleted")])
    [unaliased] = evaluate(deleted, [old_names], f"--tag-scope={scope}")["old-names"]
    assert unaliased.score == 0.0 and unaliased.wrong_tags == ["black_legwear"]
    assert unaliased.counts is not None and unaliased.counts["truth_size"] == (2 if scope == "all" else 1)


# --- 5. which categories take the character threshold ---------------------------------------------------------------


def test_the_character_threshold_applies_to_the_character_categories_given() -> None:
    """PixAI derives copyrights from its characters, so its copyrights need the character's confidence."""
    categories = {"some_series": COPYRIGHT, "some_girl": CHARACTER, "smile": GENERAL}
    pixai = frozenset({CHARACTER, COPYRIGHT})
    at_half = {"some_series": 0.5, "some_girl": 0.5, "smile": 0.5}
    assert select_tags(at_half, 0.35, 0.85, categories, pixai) == {"smile"}
    assert select_tags({**at_half, "some_series": 0.9}, 0.35, 0.85, categories, pixai) == {"smile", "some_series"}
    # The default: only characters take 0.85, the copyright at 0.5 passes the general 0.35.
    assert select_tags(at_half, 0.35, 0.85, categories) == {"smile", "some_series"}


class PixaiLikeTagger(ScriptedTagger):
    character_categories = frozenset({CHARACTER, COPYRIGHT})
    default_threshold = 0.35
    default_character_threshold = 0.85


def test_a_run_uses_the_taggers_character_categories(tmp_path: Path) -> None:
    """The run passes the tagger's own character categories to the threshold rule."""
    db_path = make_dataset(tmp_path, [POST_AB])
    vocabulary = {"tag_a": GENERAL, "tag_b": GENERAL, "some_series": COPYRIGHT}
    output = {"tag_a": 0.9, "tag_b": 0.2, "some_series": 0.5}
    entry = TaggerEntry("pixai-like", "copyrights at the character threshold",
                        lambda _argument, _options: PixaiLikeTagger("pixai-like", vocabulary, output))
    [result] = evaluate(db_path, [entry])["pixai-like"]
    # some_series at 0.5 stays under 0.85: P = {tag_a}, T = {tag_a, tag_b} (no rating output): 0.5, nothing wrong.
    assert result.wrong_tags == [] and result.score == 0.5
    [lowered] = evaluate(db_path, [entry], "--character-threshold=0.4")["pixai-like"]
    # At 0.4 it is predicted and wrong: P = {tag_a, some_series}: (1 - 1) / 2 = 0.
    assert lowered.wrong_tags == ["some_series"] and lowered.score == 0.0


def reference_selection(probabilities: Mapping[str, float], threshold: float, character_threshold: float | None,
                        categories: Mapping[str, int], character_categories: frozenset[int]) -> set[str]:
    """The README's rule, written out plainly: strictly above the tag's threshold; the first most probable rating."""
    selected: set[str] = set()
    best_rating: str | None = None
    for tag, probability in probabilities.items():
        if tag.startswith("rating:"):
            if best_rating is None or probability > probabilities[best_rating]:
                best_rating = tag
            continue
        uses_character = (character_threshold is not None and len(categories) > 0
                          and categories.get(tag) in character_categories)
        limit = character_threshold if uses_character and character_threshold is not None else threshold
        if probability > limit:
            selected.add(tag)
    return selected | ({best_rating} if best_rating is not None else set())


TAG_NAMES = ["smile", "hat", "some_girl", "some_series", "rating:general", "rating:sensitive", "rating:explicit"]
PROBABILITY = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(
    probabilities=st.dictionaries(st.sampled_from(TAG_NAMES), st.one_of(PROBABILITY, st.sampled_from([0.35, 0.85]))),
    threshold=st.one_of(st.floats(min_value=0.0, max_value=0.999), st.just(0.35)),
    character_threshold=st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.999), st.just(0.85)),
    categories=st.dictionaries(st.sampled_from(TAG_NAMES),
                               st.sampled_from([GENERAL, COPYRIGHT, CHARACTER, RATING, UNKNOWN_CATEGORY])),
    character_categories=st.frozensets(st.sampled_from([GENERAL, COPYRIGHT, CHARACTER]), min_size=1),
)
def test_select_tags_agrees_with_a_plain_reference(probabilities: dict[str, float], threshold: float,
                                                   character_threshold: float | None, categories: dict[str, int],
                                                   character_categories: frozenset[int]) -> None:
    """Any threshold, category and tie (values exactly at a threshold are drawn often): the same selection."""
    expected = reference_selection(probabilities, threshold, character_threshold, categories, character_categories)
    assert select_tags(probabilities, threshold, character_threshold, categories, character_categories) == expected


# --- 6. threshold profiles -------------------------------------------------------------------------------------------


class ProfiledTagger(ScriptedTagger):
    """Camie-like: the authors publish named thresholds rather than one."""

    threshold_profiles = MappingProxyType({"micro-opt": 0.6, "macro-opt": 0.45})
    default_profile = "micro-opt"


PROFILED_VOCABULARY = {"tag_a": GENERAL, "tag_b": GENERAL, "tag_c": GENERAL, **RATINGS}
# tag_a above every threshold, tag_b between 0.45 and 0.6, tag_c (not in the truth) between 0.3 and 0.45.
PROFILED_OUTPUT = {"tag_a": 0.7, "tag_b": 0.5, "tag_c": 0.4, "rating:general": 0.9, "rating:explicit": 0.05}


def profiled_entry() -> TaggerEntry:
    return TaggerEntry("profiled", "a tagger publishing threshold profiles",
                       lambda _argument, _options: ProfiledTagger("profiled", PROFILED_VOCABULARY, PROFILED_OUTPUT))


PLAIN = scripted("plain", PROFILED_VOCABULARY, PROFILED_OUTPUT)  # the default threshold 0.5, no profiles


@pytest.mark.parametrize(("options", "threshold", "profile", "score"), [
    # micro-opt 0.6: P = {tag_a, rating:general}, T = {tag_a, tag_b, rating:general}: (2 - 0) / 3.
    ((), 0.6, "micro-opt", 2 / 3),
    # macro-opt 0.45: P = {tag_a, tag_b, rating:general}: (3 - 0) / 3.
    (("--threshold-profile=macro-opt",), 0.45, "macro-opt", 1.0),
    (("--threshold-profile=profiled=macro-opt",), 0.45, "macro-opt", 1.0),
    # A threshold given wins over any profile: 0.3 adds the wrong tag_c: (3 - 1) / 3.
    (("--threshold=0.3",), 0.3, None, 2 / 3),
    (("--threshold=profiled=0.3", "--threshold-profile=macro-opt"), 0.3, None, 2 / 3),
])
def test_a_threshold_profile_sets_the_threshold(tmp_path: Path, options: tuple[str, ...], threshold: float,
                                                profile: str | None, score: float) -> None:
    """`--threshold-profile` picks the authors' named threshold; the run records which."""
    db_path = make_dataset(tmp_path, [POST_AB])
    settings = loaded(db_path, [profiled_entry()], *options)["profiled"].settings
    assert (settings.threshold, settings.threshold_profile) == (threshold, profile)
    [result] = evaluate(db_path, [profiled_entry()], *options)["profiled"]
    assert result.score == pytest.approx(score)
    assert (result.threshold, result.threshold_profile) == (threshold, profile)


def test_an_unpublished_profile_is_an_error_naming_the_published_ones(tmp_path: Path) -> None:
    """A misspelt profile must not silently fall back to the default threshold."""
    db_path = make_dataset(tmp_path, [POST_AB])
    for option in ("--threshold-profile=profiled=unknown", "--threshold-profile=unknown"):
        with evaluation_of(db_path, [profiled_entry()], option) as evaluation, pytest.raises(TaggerError) as error:
            evaluation.load(evaluation.specs[0])
        assert str(error.value) == ("--threshold-profile: profiled has no profile 'unknown'; it publishes micro-opt, "
                                    "macro-opt")


def test_a_global_profile_skips_taggers_without_profiles_and_a_named_one_is_an_error(tmp_path: Path) -> None:
    """`--threshold-profile=macro-opt` with `--tagger=profiled,plain` means the taggers that publish profiles."""
    db_path = make_dataset(tmp_path, [POST_AB])
    runs = loaded(db_path, [profiled_entry(), PLAIN], "--threshold-profile=macro-opt")
    assert (runs["profiled"].settings.threshold, runs["profiled"].settings.threshold_profile) == (0.45, "macro-opt")
    assert (runs["plain"].settings.threshold, runs["plain"].settings.threshold_profile) == (0.5, None)
    with evaluation_of(db_path, [profiled_entry(), PLAIN], "--threshold-profile=plain=macro-opt") as evaluation:
        profiled, plain = evaluation.specs
        evaluation.load(profiled).close()  # the other tagger is unaffected
        with pytest.raises(TaggerError, match=r"^--threshold-profile: plain publishes no threshold profiles$"):
            evaluation.load(plain)


def test_a_profile_for_a_tagger_not_selected_is_a_config_error() -> None:
    """As for --threshold: a name that selects nothing is a slip, caught before any test runs."""
    with registered(profiled_entry()), pytest.raises(ConfigError) as error:
        parse_run_config(["--tagger=profiled", "--threshold-profile=nosuchtagger=x"])
    assert str(error.value) == "--threshold-profile: 'nosuchtagger' is not a selected tagger (profiled)"


def test_the_profile_is_shown_and_saved_and_older_documents_still_load(tmp_path: Path) -> None:
    """The leaderboard and the results say where the threshold came from; files written before profiles load."""
    db_path = make_dataset(tmp_path / "data", [POST_AB, (2, "g", "tag_a tag_c")])
    results = evaluate(db_path, [profiled_entry(), PLAIN], posts=(1, 2))
    flat = [result for group in results.values() for result in group]
    rows = {line.split()[0]: line.split() for line in format_table(summarise(flat))[2:]}
    assert rows["profiled"][1:3] == ["0.60", "micro-opt"]
    assert rows["plain"][1:3] == ["0.50", "2"]  # no profile: the next cell is the post count

    with evaluation_of(db_path, [profiled_entry()]) as evaluation:
        identity = evaluation.identity
    document = build_document(flat, {}, identity, "all")
    assert document["taggers"]["profiled"]["summary"]["threshold_profile"] == "micro-opt"
    assert document["taggers"]["plain"]["summary"]["threshold_profile"] is None
    assert "threshold_profile" not in document["taggers"]["profiled"]["posts"]["1"]  # said once, per tagger
    saved = load(save(document, tmp_path / "results.json"))
    assert TaggerSummary.from_dict(saved["taggers"]["profiled"]["summary"]).threshold_profile == "micro-opt"

    for tagger in document["taggers"].values():
        del tagger["summary"]["threshold_profile"]
    older = load(save(document, tmp_path / "older.json"))
    assert TaggerSummary.from_dict(older["taggers"]["profiled"]["summary"]).threshold_profile is None

    broken = json.loads((tmp_path / "results.json").read_text())
    broken["taggers"]["profiled"]["summary"]["threshold_profile"] = 0.6
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ResultsError, match=r"taggers\.profiled\.summary\.threshold_profile"):
        load(tmp_path / "broken.json")


# --- 7. published models: licence, onnxruntime minimum, gated repositories, the listing -----------------------------


def published(**fields: object) -> PublishedModel:
    return PublishedModel("test-model", "someone/test-tagger", "model.onnx", "tags.txt", input_size=448,
                          threshold=0.4, **fields)  # type: ignore[arg-type]


def test_a_published_models_summary_names_its_licence() -> None:
    """Users choose models by licence (Camie v2 is GPL-3.0): the listing says which."""
    assert published(licence="gpl-3.0").summary == "someone/test-tagger (448px; threshold 0.4; gpl-3.0)"
    assert published().summary == "someone/test-tagger (448px; threshold 0.4)"


def test_an_onnxruntime_older_than_the_model_needs_is_named() -> None:
    """WD EVA02-large needs onnxruntime >= 1.17: an older one would fail in the model, not say why."""
    reason = published(min_onnxruntime=(99, 0)).onnxruntime_too_old()
    assert reason is not None and reason.startswith("needs onnxruntime >= 99.0 (installed: ")
    assert reason.endswith("pip install -U 'onnxruntime>=99.0'")
    assert published(min_onnxruntime=(99, 0)).unavailable_reason() == reason  # before the files are looked for
    assert published(min_onnxruntime=(1, 0)).onnxruntime_too_old() is None
    assert published().onnxruntime_too_old() is None


def test_a_gated_models_missing_message_mentions_hf_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gated repository refuses anonymous downloads: the hint must say what to set."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    gated = published(gated=True, extra_files=("thresholds.csv",))
    assert gated.missing_message() == (
        "model.onnx, tags.txt, thresholds.csv of someone/test-tagger not in the Hugging Face cache; run "
        "`tagger-eval fetch test-model` where the hub is reachable; someone/test-tagger is gated: accept its "
        "conditions on the hub and set HF_TOKEN before fetching")
    assert gated.unavailable_reason() == gated.missing_message()
    assert "HF_TOKEN" not in published().missing_message()


NEW_TAGGERS = {"camie-v2": "gpl-3.0", "pixai-v0.9": "apache-2.0", "joytag": "apache-2.0",
               "ml-danbooru-caformer": "mit", "ml-danbooru-tresnet": "mit"}


def test_the_listing_shows_the_new_taggers_with_licence_and_fetch_hint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`tagger-eval list` is how users find the new models and learn how to get them."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))  # nothing downloaded
    assert cli_main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, licence in NEW_TAGGERS.items():
        [index] = [i for i, line in enumerate(lines) if line.startswith(f"{name}[:REVISION] ")]
        row, hint = lines[index].split(), lines[index + 1].strip()
        assert row[1:3] == ["no", "-"], name
        assert lines[index].endswith(f"; {licence})"), name
        assert hint.startswith("-> ") and hint.endswith(f"run `tagger-eval fetch {name}` where the hub is reachable")
