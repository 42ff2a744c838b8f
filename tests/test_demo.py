"""The bundled demo dataset: byte-identical regeneration, its shape, that it separates the demo taggers, and where
`make-demo` writes (never into the package)."""

from __future__ import annotations

import itertools
import random
import sqlite3
import statistics
from collections import Counter
from pathlib import Path

import pytest

import tagger_eval
from tagger_eval.cli import main
from tagger_eval.config import parse_run_config
from tagger_eval.data import demo_dataset as demo
from tagger_eval.data.dataset import Dataset
from tagger_eval.records import PostResult
from tagger_eval.run.evaluation import Evaluation
from tagger_eval.tags import CATEGORY_NAMES, CHARACTER, COPYRIGHT, GENERAL, RATING_LETTERS

BUNDLED = demo.DEFAULT_DIR
PACKAGE = Path(tagger_eval.__file__).resolve().parent
DEMO_TAGGERS = ("demo-pixel", "demo-lowres", "demo-histogram")
# sqlite stamps the library version that last wrote the file at header offsets 92-99.
VERSION_STAMP = slice(92, 100)


def dump(db_path: Path) -> list[str]:
    connection = sqlite3.connect(db_path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def scene_rows(db_path: Path) -> list[tuple]:
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute(
            "SELECT id, md5, rating, tag_string_general, tag_string_character, tag_string_artist, tag_string_meta"
            " FROM posts ORDER BY id").fetchall()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert demo.generate(out) == out / "data.db"
    return out


@pytest.fixture(scope="module")
def bundled() -> Dataset:
    with Dataset(BUNDLED / "data.db") as dataset:
        yield dataset


@pytest.fixture(scope="module")
def evaluation() -> dict[str, tuple[list[PostResult], list[dict[str, float]]]]:
    """Every tagger `all` selects on every bundled post: the results and each raw model output."""
    session = Evaluation(parse_run_config(["--tagger=all"]))
    outcome = {}
    try:
        for spec in session.specs:
            run = session.load(spec)
            outputs: list[dict[str, float]] = []

            def capture(infer, outputs=outputs):
                output, runtime = infer()
                outputs.append(output[0])
                return output, runtime

            results = [run.evaluate(session.dataset, post_id, run_inference=capture)
                       for post_id in session.dataset.post_ids()]
            run.close()
            outcome[spec.label] = (results, outputs)
    finally:
        session.close()
    return outcome


def test_regenerated_images_are_byte_identical(regenerated: Path) -> None:
    ours = sorted(path.name for path in (regenerated / "images").glob("*.png"))
    bundled = sorted(path.name for path in (BUNDLED / "images").glob("*.png"))
    assert ours == bundled
    assert len(ours) == demo.POSTS
    different = [name for name in ours
                 if (regenerated / "images" / name).read_bytes() != (BUNDLED / "images" / name).read_bytes()]
    assert different == []


def test_regenerated_database_dumps_identically(regenerated: Path) -> None:
    ours = dump(regenerated / "data.db")
    assert ours == dump(BUNDLED / "data.db")
    assert sum(line.startswith('INSERT INTO "posts"') for line in ours) == demo.POSTS


def test_regenerated_database_bytes_are_identical_except_the_version_stamp(regenerated: Path) -> None:
    ours = (regenerated / "data.db").read_bytes()
    bundled = (BUNDLED / "data.db").read_bytes()
    assert len(ours) == len(bundled)
    assert ours[: VERSION_STAMP.start] == bundled[: VERSION_STAMP.start]
    assert ours[VERSION_STAMP.stop :] == bundled[VERSION_STAMP.stop :]


def test_generate_replaces_what_was_there(tmp_path: Path) -> None:
    stale = tmp_path / "images" / "9999.png"
    stale.parent.mkdir()
    stale.write_bytes(b"stale")
    (tmp_path / "data.db").write_bytes(b"old")
    demo.generate(tmp_path, posts=4)
    assert not stale.exists()
    assert len(list((tmp_path / "images").glob("*.png"))) == 4
    with Dataset(tmp_path / "data.db") as dataset:
        assert dataset.post_ids() == [1, 2, 3, 4]


def test_metadata_records_how_the_demo_was_made(bundled: Dataset) -> None:
    assert bundled.metadata() == {"source": "synthetic: tagger_eval.data.demo_dataset",
                                  "generator_version": demo.GENERATOR_VERSION, "seed": str(demo.SEED),
                                  "posts": str(demo.POSTS)}


def test_posts_are_stratified_evenly_across_ratings(bundled: Dataset) -> None:
    counts = Counter(post.rating for post in bundled)
    assert counts == dict.fromkeys(RATING_LETTERS, demo.POSTS // len(RATING_LETTERS))


def test_small_generations_are_stratified_too(tmp_path: Path) -> None:
    demo.generate(tmp_path, posts=12, seed=7)
    with Dataset(tmp_path / "data.db") as dataset:
        assert Counter(post.rating for post in dataset) == dict.fromkeys(RATING_LETTERS, 3)


def test_every_tag_is_in_a_danbooru_category(bundled: Dataset) -> None:
    seen = set()
    for post in bundled:
        assert set(post.tags.values()) <= set(CATEGORY_NAMES), post.id
        seen |= set(post.tags.values())
        # Copyright, artist and meta are there on every post, as on Danbooru; nothing in the pixels shows them.
        assert post.tags[demo.COPYRIGHT_TAG] == COPYRIGHT
    assert seen == set(CATEGORY_NAMES)


def test_drawn_truth_tags_are_in_the_vocabulary_with_the_same_category(bundled: Dataset) -> None:
    vocabulary = demo.vocabulary()
    for post in bundled:
        drawn = {tag: category for tag, category in post.tags.items() if category in (GENERAL, CHARACTER)}
        assert {tag: vocabulary.get(tag) for tag in drawn} == drawn, post.id


def test_every_tag_a_demo_tagger_outputs_is_in_the_vocabulary(evaluation) -> None:
    vocabulary = demo.vocabulary()
    for label in DEMO_TAGGERS:
        _, outputs = evaluation[label]
        assert len(outputs) == demo.POSTS
        emitted = set().union(*outputs)
        assert emitted <= set(vocabulary), (label, sorted(emitted - set(vocabulary)))
        # The general and character tags are what the vocabulary is for; they must all be reachable.
        drawn = {tag for tag, category in vocabulary.items() if category in (GENERAL, CHARACTER)}
        assert drawn <= emitted, (label, sorted(drawn - emitted))


def test_generate_rejects_a_post_count_not_a_multiple_of_four(tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="multiple of 4"):
        demo.generate(out, posts=10)
    assert not out.exists()


def test_the_same_seed_gives_the_same_scenes() -> None:
    first = [demo.random_scene(random.Random(123), rating) for rating in "gsqe"]
    again = [demo.random_scene(random.Random(123), rating) for rating in "gsqe"]
    assert first == again
    assert [demo.render(scene).tobytes() for scene in first] == [demo.render(scene).tobytes() for scene in again]


def test_seed_decides_the_generated_posts(tmp_path: Path) -> None:
    demo.generate(tmp_path / "a", posts=8, seed=1)
    demo.generate(tmp_path / "b", posts=8, seed=1)
    demo.generate(tmp_path / "c", posts=8, seed=2)
    a, b, c = (scene_rows(tmp_path / name / "data.db") for name in "abc")
    assert a == b
    assert a != c
    assert [row[3:] for row in a] != [row[3:] for row in c]  # the scenes differ, not only their order


def test_control_scores_exactly_one_on_every_post(evaluation) -> None:
    results, _ = evaluation["control"]
    assert len(results) == demo.POSTS
    assert [result.score for result in results] == [1.0] * demo.POSTS
    assert all(result.missed_tags == [] and result.wrong_tags == [] for result in results)


def test_mean_scores_rank_the_demo_taggers(evaluation) -> None:
    order = ("control", *DEMO_TAGGERS)
    means = {label: statistics.fmean(result.score for result in evaluation[label][0]) for label in order}
    assert means["control"] == 1.0
    for better, worse in itertools.pairwise(order):
        assert means[better] - means[worse] >= 0.1, means


def test_every_post_passes_its_taggers_default_floor(evaluation) -> None:
    for label, (results, _) in evaluation.items():
        assert [result.post for result in results] == list(range(1, demo.POSTS + 1))
        failures = [result.failure_message() for result in results if not result.passed]
        assert failures == [], label
        assert all(result.status == "scored" for result in results)


def test_the_bundled_demo_is_package_data() -> None:
    assert BUNDLED.is_relative_to(PACKAGE)
    assert demo.DEFAULT_DATASET == BUNDLED / "data.db"
    assert demo.is_demo(demo.DEFAULT_DATASET)


def test_is_demo_only_for_a_generated_demo(tmp_path: Path) -> None:
    assert not demo.is_demo(tmp_path / "missing.db")
    (tmp_path / "text.db").write_text("not sqlite")
    assert not demo.is_demo(tmp_path / "text.db")
    connection = sqlite3.connect(tmp_path / "other.db")
    connection.execute("CREATE TABLE metadata (key TEXT, value TEXT)")
    connection.execute("INSERT INTO metadata VALUES ('source', 'danbooru')")
    connection.commit()
    connection.close()
    assert not demo.is_demo(tmp_path / "other.db")
    demo.generate(tmp_path / "small", posts=4)
    assert demo.is_demo(tmp_path / "small" / "data.db")


def test_make_demo_writes_demo_dataset_in_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["make-demo"]) == 0
    assert "--dataset=demo-dataset" in capsys.readouterr().out
    out = tmp_path / "demo-dataset"
    assert dump(out / "data.db") == dump(BUNDLED / "data.db")
    assert sorted(path.name for path in (out / "images").iterdir()) == sorted(
        path.name for path in (BUNDLED / "images").iterdir())
    # An earlier copy is replaced in place.
    assert main(["make-demo"]) == 0
    assert dump(out / "data.db") == dump(BUNDLED / "data.db")


@pytest.mark.parametrize("where", ["bundled", "images", "package"])
def test_make_demo_never_writes_into_the_package(where: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = {"bundled": BUNDLED, "images": BUNDLED / "images" / "new", "package": PACKAGE}[where]
    before = {path: path.stat().st_mtime_ns for path in BUNDLED.rglob("*")}
    assert main(["make-demo", "--out", str(out)]) == 2
    assert "inside the tagger_eval package" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in BUNDLED.rglob("*")} == before
    assert not (BUNDLED / "images" / "new").exists()


def test_make_demo_refuses_a_directory_that_holds_something_else(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0001.png").write_bytes(b"mine")
    assert main(["make-demo", "--out", str(tmp_path)]) == 2
    assert "holds something other than a demo dataset" in capsys.readouterr().err
    assert (tmp_path / "images" / "0001.png").read_bytes() == b"mine"
    (tmp_path / "file").write_text("x")
    assert main(["make-demo", "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err
