"""`tagger-eval rescore` (`tagger_eval.run.rescore`): a grid of thresholds scored from the prediction store gives
the numbers of fresh runs at each, without loading any model, in seconds."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from blocked_imports import refusing
from builders import build_dataset
from PIL import Image
from test_prediction_store import evaluate_all, measure, relations

from tagger_eval import cli
from tagger_eval.config import PerTagger, RunConfig
from tagger_eval.data.dataset import create_schema
from tagger_eval.records import TaggerSummary
from tagger_eval.reports.results import build_document, load
from tagger_eval.run import evaluation as evaluation_module
from tagger_eval.run.evaluation import PROBABILITY_FLOOR
from tagger_eval.run.prediction_store import PredictionStore, StoreEntry
from tagger_eval.run.rescore import pick_entries, rescore
from tagger_eval.run.stored_taggers import scoring_info
from tagger_eval.scoring.scope import TagScope
from tagger_eval.taggers import Tagger
from tagger_eval.tags import GENERAL, RATING

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")
GRID = (0.3, 0.45, 0.6)


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory: pytest.TempPathFactory, wd14_v3_dir: Path) -> tuple[Path, Path, str]:
    """A store filled by one evaluation of demo-pixel, demo-lowres and a WD model on 12 demo posts with a tag
    implication and alias; (store, dataset, taggers option)."""
    from tagger_eval.data.demo_dataset import DEFAULT_DATASET

    root = tmp_path_factory.mktemp("rescore")
    (root / "data" / "images").mkdir(parents=True)
    db_path = root / "data" / "data.db"
    db_path.write_bytes(DEFAULT_DATASET.read_bytes())
    with sqlite3.connect(db_path) as connection:
        connection.execute("DELETE FROM posts WHERE id > 12")
        for (relative,) in connection.execute("SELECT image_path FROM posts"):
            (root / "data" / relative).write_bytes((DEFAULT_DATASET.parent / relative).read_bytes())
    connection.close()
    relations(db_path)
    taggers = f"--tagger=demo-pixel,demo-lowres,wd14-onnx:{wd14_v3_dir}"
    store = root / "predictions.sqlite"
    evaluate_all([taggers, f"--dataset={db_path}", f"--tagger-store={store}"])
    return store, db_path, taggers


def test_rescore_at_three_thresholds_equals_three_fresh_runs(
        pytester: pytest.Pytester, filled_store: tuple[Path, Path, str], wd14_v3_dir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store, db_path, taggers = filled_store
    settings = ["--tag-scope=general", "--expand-implications", "--character-threshold=0.7"]
    fresh = {}
    for threshold in GRID:
        path = pytester.path / f"fresh-{threshold}.json"
        pytester.runpytest_inprocess(taggers, f"--dataset={db_path}", f"--threshold={threshold}", *settings,
                                     "--tagger-metrics=full", "--no-tagger-store", "--benchmark-disable",
                                     f"--tagger-results={path}", f"--score-floor=wd14-onnx:{wd14_v3_dir}=-50")
        fresh[threshold] = load(path)

    def no_model(*args: object) -> None:
        raise AssertionError("rescore created a tagger")

    monkeypatch.setattr(evaluation_module, "create", no_model)
    config = RunConfig(taggers=(), dataset=db_path, scope=TagScope.GENERAL, expand_implications=True,
                       character_thresholds=PerTagger.from_values([(None, 0.7)]))
    rescored = rescore(store, config, GRID)
    labels = ["demo-lowres", "demo-pixel", f"wd14-onnx:{wd14_v3_dir}"]
    assert rescored.labels == labels and rescored.thresholds == list(GRID)
    for threshold in GRID:
        for label in labels:
            expected = fresh[threshold]["taggers"][label]
            # Every post's counts and tags, the summary, F1 micro as the run's metrics give it.
            document = build_document(rescored.results[threshold, label], {}, fresh[threshold]["dataset"], "general")
            posts = {post: {key: value for key, value in entry.items() if key not in ("runtime_s", "from_store")}
                     for post, entry in document["taggers"][label]["posts"].items()}
            assert posts == {post: {key: value for key, value in entry.items() if key != "runtime_s"}
                             for post, entry in expected["posts"].items()}
            summary = rescored.summary(threshold, label)
            assert summary == replace(TaggerSummary.from_dict(expected["summary"]),
                                      mean_runtime_s=summary.mean_runtime_s)  # as measured when inferred
            assert rescored.f1_micro(threshold, label) == expected["metrics"]["all"]["at_threshold"]["micro"]["f1"]

    capsys.readouterr()
    status = cli.main(["rescore", f"--store={store}", f"--dataset={db_path}", "--threshold", *map(str, GRID),
                       *settings])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[:3] == [f"rescored from the prediction store {store} (no model loaded)", f"dataset: {db_path}",
                       "tag scope: general"]
    assert out[3].split() == ["threshold", "tagger", "posts", "mean", "score", "wrong", "tags", "F1", "micro"]
    rows = [line.split() for line in out[5:5 + 3 * len(labels)]]
    for threshold in GRID:
        for label in labels:
            summary = fresh[threshold]["taggers"][label]["summary"]
            f1 = fresh[threshold]["taggers"][label]["metrics"]["all"]["at_threshold"]["micro"]["f1"]
            assert [f"{threshold:g}/c0.7", label, str(summary["posts"]), f"{summary['mean_score']:.3f}",
                    f"{summary['error_rate']:.1%}", f"{f1:.3f}"] in rows
    best = {label: max(GRID, key=lambda t: fresh[t]["taggers"][label]["summary"]["mean_score"]) for label in labels}
    assert out[5 + 3 * len(labels)] == "best threshold by mean score: " + ", ".join(
        f"{label} {best[label]:g} ({fresh[best[label]]['taggers'][label]['summary']['mean_score']:.3f})"
        for label in labels)


def test_rescore_loads_no_backend(filled_store: tuple[Path, Path, str], wd14_v3_dir: Path) -> None:
    store, db_path, _ = filled_store
    blocked = ("onnxruntime", "tensorflow", "tf_keras", "torch")
    runner = refusing(blocked) + "\nfrom tagger_eval.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    completed = subprocess.run([sys.executable, "-c", runner, "rescore", f"--store={store}", f"--dataset={db_path}",
                                f"--tagger=wd14-onnx:{wd14_v3_dir},demo-pixel", "--threshold", "0.2", "0.4"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert f"wd14-onnx:{wd14_v3_dir}" in completed.stdout and "demo-lowres" not in completed.stdout


def test_rescore_says_what_it_cannot_do(filled_store: tuple[Path, Path, str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    store, db_path, _ = filled_store
    cases = {
        (f"--store={tmp_path / 'none.sqlite'}",): "no prediction store at",
        (f"--store={store}", "--tagger=demo-histogram"): "the store holds no outputs of demo-histogram (it holds: "
                                                         "demo-lowres, demo-pixel, wd14-onnx:",
        (f"--store={store}", "--threshold", "0.005"): "threshold 0.005 is below the store's floor 0.01",
        (f"--store={store}", "--threshold-profile=demo-pixel=micro-opt"): "demo-pixel publishes no threshold "
                                                                          "profiles",
    }
    for args, message in cases.items():
        assert cli.main(["rescore", f"--dataset={db_path}", *args]) == 2
        assert message in capsys.readouterr().err
    other = build_dataset(tmp_path / "other", [(1, "g", "red_theme")], {1: Image.new("RGB", (8, 8), (9, 9, 9))})
    assert cli.main(["rescore", f"--store={store}", f"--dataset={other}"]) == 2
    assert f"holds no output for the images of {other}" in capsys.readouterr().err
    # Posts of the dataset the store lacks are counted, not scored.
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE posts SET md5 = 'ffffffffffffffffffffffffffffffff' WHERE id = 12")
    connection.close()
    try:
        assert cli.main(["rescore", f"--store={store}", f"--dataset={db_path}", "--tagger=demo-pixel"]) == 0
        out = capsys.readouterr().out
        assert "demo-pixel     11" in out and "not in the store: demo-pixel 1 posts" in out
    finally:
        with sqlite3.connect(db_path) as connection:
            connection.execute("UPDATE posts SET md5 = (SELECT md5 FROM posts WHERE id = 11) WHERE id = 12")
        connection.close()


def test_rescore_takes_the_identity_last_evaluated_under_each_label() -> None:
    def entry(number: int, label: str, used: str) -> StoreEntry:
        return StoreEntry(number, f"key{number}", label, {}, {}, used, 1)

    entries = [entry(3, "wd14-onnx:m", "2026-02"), entry(2, "demo-pixel", "2026-01"), entry(1, "wd14-onnx:m", "2025")]
    picked, notes = pick_entries(entries, [])
    assert [item.id for item in picked] == [2, 3]
    assert notes == ["wd14-onnx:m: 1 older model identity in the store left out (rescored: the one last evaluated, "
                     "2026-02)"]
    assert [item.id for item in pick_entries(entries, ["wd14-onnx"])[0]] == [3]


class Synthetic(Tagger):
    """A 10,000-tag model's description, for a store filled without running anything."""

    name = "synthetic"
    default_threshold = 0.35

    def __init__(self, tags: int) -> None:
        self.tags = {f"tag_{n}": GENERAL for n in range(tags)} | {
            f"rating:{name}": RATING for name in ("general", "sensitive", "questionable", "explicit")}

    def vocabulary(self) -> dict[str, int]:
        return self.tags

    def predict(self, samples):  # type: ignore[no-untyped-def]
        raise AssertionError("not run")


WORST_CASE = pytest.mark.skipif(not os.environ.get("TAGGER_EVAL_MEASURE_WORST_CASE"),
                                reason="20 s; set TAGGER_EVAL_MEASURE_WORST_CASE=1 to measure it")


@pytest.mark.parametrize("kept", [300, pytest.param(10_000, marks=WORST_CASE)], ids=["300-kept", "10000-kept"])
def test_rescore_of_1000_posts_is_measured(tmp_path: Path, kept: int, capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 posts of a 10,000-tag model, each with 20 truth tags, at 3 thresholds: a trained model keeps a few
    hundred outputs per post at the floor; a random-weight one keeps all of them, and predicts 7,000 tags a post
    at 0.3 (the worst case, measured on demand). Measured and printed, not gated."""
    posts, tags = 1000, 10_000
    rng = np.random.default_rng(1)
    db_path = tmp_path / "data.db"
    connection = sqlite3.connect(db_path)
    create_schema(connection)
    md5s = [hashlib.md5(str(post).encode()).hexdigest() for post in range(posts)]
    for post in range(posts):
        truth = " ".join(f"tag_{n}" for n in rng.choice(tags, 20, replace=False))
        connection.execute("INSERT INTO posts (id, md5, file_ext, rating, tag_string_general, image_path, source) "
                           "VALUES (?, ?, 'png', 'g', ?, ?, 'test')", (post + 1, md5s[post], truth, f"{post}.png"))
    connection.commit()
    connection.close()
    store = PredictionStore(tmp_path / "store.sqlite", PROBABILITY_FLOOR)
    tagger = Synthetic(tags)
    entry = store.register({"implementation": "synthetic", "version": "1"}, "synthetic", scoring_info(tagger))
    names = list(tagger.tags)
    for post in range(posts):
        chosen = rng.choice(tags, kept, replace=False)
        output = {names[n]: value for n, value in zip(chosen, rng.uniform(0.01, 1, kept).astype(np.float32).tolist(),
                                                       strict=True)}
        store.save(entry, md5s[post], output | {"rating:general": 0.9, "rating:explicit": 0.001}, 0.5)
    store.close()
    start = time.perf_counter()
    rescored = rescore(tmp_path / "store.sqlite", RunConfig(taggers=(), dataset=db_path), [0.3, 0.35, 0.5])
    elapsed = time.perf_counter() - start
    assert [rescored.summary(threshold, "synthetic").posts for threshold in rescored.thresholds] == [posts] * 3
    measure(capsys, f"rescore, {posts:,} posts x {kept:,} kept outputs (of {tags:,} tags), 3 thresholds: "
                    f"{elapsed:.2f} s")
