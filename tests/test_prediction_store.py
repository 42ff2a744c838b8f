"""The prediction store (`tagger_eval.run.prediction_store`): each tagger's output per image is kept, a run at other
settings is scored from it with exactly a fresh run's numbers and no model call, what changed is inferred again, an
interrupted run resumes, and concurrent or killed writers never leave it corrupt."""

from __future__ import annotations

import importlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from builders import build_wd14_model, without_store_marks
from PIL import Image
from test_dataset import set_md5

from tagger_eval.config import parse_run_config
from tagger_eval.records import PostResult
from tagger_eval.reports.results import load
from tagger_eval.run import stored_taggers
from tagger_eval.run.evaluation import PROBABILITY_FLOOR, Evaluation
from tagger_eval.run.prediction_store import PredictionStore, StoreError, kept, rating_names
from tagger_eval.taggers import Sample, TaggerEntry, registered
from tagger_eval.taggers.demo import PixelTagger
from tagger_eval.taggers.wd14 import WD14Tagger

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")
Calls = list[list[int]]


class CountingPixel(PixelTagger):
    """demo-pixel under another name, recording the post ids of each model call."""

    name = "counting-pixel"

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        self.calls.append([sample.post.id for sample in samples])
        return super().predict(samples)


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Calls]]:
    """Per tagger name, the post ids of each model call: `counting-pixel` (registered here) and every WD model."""
    calls: dict[str, Calls] = {"counting-pixel": [], "wd14": []}
    predict = WD14Tagger.predict

    def counted(self: WD14Tagger, samples: Sequence[Sample]) -> list[dict[str, float]]:
        calls["wd14"].append([sample.post.id for sample in samples])
        return predict(self, samples)

    monkeypatch.setattr(WD14Tagger, "predict", counted)
    entry = TaggerEntry("counting-pixel", "demo-pixel, counted",
                        lambda _arg, _opts: CountingPixel(calls["counting-pixel"]))
    with registered(entry):
        yield calls


def calls_of(calls: dict[str, Calls]) -> dict[str, list[int]]:
    """The posts each tagger predicted, in order; and empties the record for the next run."""
    made = {name: [post for call in made for post in call] for name, made in calls.items()}
    for made_calls in calls.values():
        made_calls.clear()
    return made


def relations(db_path: Path) -> Path:
    """The demo subset with a tag implication and a tag alias, so the truth and the tagger's names both change."""
    with sqlite3.connect(db_path) as connection:
        connection.executemany("INSERT INTO tag_implications VALUES (?, ?, 'active')",
                               [("gradient_background", "abstract_background"), ("red_star", "red_theme")])
        # The WD test model's `blue_theme` is an old name of `aqua_background`: renamed when scored, not stored.
        connection.execute("INSERT INTO tag_aliases VALUES ('blue_theme', 'aqua_background', 'active')")
    connection.close()
    return db_path


# --- what a row keeps --------------------------------------------------------------------------------------------


def test_a_row_keeps_what_any_threshold_from_the_floor_needs_and_gives_it_back_exactly(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "store.sqlite", PROBABILITY_FLOOR)
    # float32(0.01) is 0.00999999977: below the floor, as the run's metrics (p >= 0.01) find it too.
    float32 = {name: float(np.float32(value)) for name, value in (
        ("Long hair", 0.7), ("smile", 0.02), ("hat", 0.01), ("General", 0.002), ("rating:sensitive", 0.001),
        ("rating:safe", 0.003))}
    float64 = {"a": 0.123456789012345, "b": 0.5, "c": 1e-9}
    tagger = store.register({"implementation": "x", "version": "1"}, "x", {"name": "x"})
    ratings = rating_names(float32, coarse={"rating:safe"})
    assert ratings == {"rating:sensitive", "rating:safe"}  # `General` is a tag, not a rating, until aliased
    assert store.save(tagger, "ABCDEF", float32, 0.25, ratings=ratings)
    assert store.save(tagger, "0123", float64, 0.5)
    assert not store.save(tagger, "nan", {"a": float("nan")}, 0.1)  # its post errors; a rerun infers it again
    # Below the floor: gone, unless a rating (by its normalised name, or one of the tagger's coarse ratings).
    assert store.get(tagger, "abcdef") == ({"Long hair": float32["Long hair"], "smile": float32["smile"],
                                             "rating:sensitive": float32["rating:sensitive"],
                                             "rating:safe": float32["rating:safe"]}, 0.25)
    assert list(store.get(tagger, "abcdef")[0]) == ["Long hair", "smile", "rating:sensitive", "rating:safe"]
    assert store.get(tagger, "0123") == ({"a": 0.123456789012345, "b": 0.5}, 0.5)
    assert store.get(tagger, "nan") is None and store.get(tagger, "missing") is None
    sizes = dict(store._db.execute("SELECT md5, length(probabilities) FROM predictions"))
    assert sizes == {"abcdef": 4 * 4, "0123": 2 * 8}  # float32 outputs in 4 bytes; not-float32 ones in 8
    store.close()


def test_kept_outputs_are_those_at_or_above_the_floor_and_every_rating() -> None:
    assert kept({"x": 0.01, "y": 0.00999, "rating:general": 0.0, "Rating:Explicit": 0.0}, 0.01) == (
        ["x", "rating:general", "Rating:Explicit"], [0.01, 0.0, 0.0])


def test_a_file_that_is_not_a_store_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE mine (x)")
    connection.close()
    (tmp_path / "text").write_text("not sqlite at all, but long enough to be read as a header" * 20)
    for path, message in ((other, "is a database of something else (tables mine)"),
                          (tmp_path / "text", "is not a usable prediction store"),
                          (tmp_path, "is a directory")):
        result = pytester.runpytest("--tagger=demo-pixel", f"--tagger-store={path}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--tagger-store: *{message}*--no-tagger-store*"])
    with pytest.raises(StoreError, match="something else"):
        PredictionStore(other, PROBABILITY_FLOOR)


def test_a_default_store_that_cannot_be_used_is_a_warning(pytester: pytest.Pytester, demo_subset) -> None:
    (pytester.path / ".tagger-eval" / "predictions.sqlite").mkdir(parents=True)  # a read-only checkout, say
    with pytest.warns(RuntimeWarning, match=r"prediction store not used: .*predictions.sqlite is a directory"):
        result = pytester.runpytest_inprocess("--tagger=demo-pixel", f"--dataset={demo_subset(posts=2)}",
                                              "--benchmark-disable", "--no-tagger-results")
    assert result.ret == pytest.ExitCode.OK


# --- a run served from the store ---------------------------------------------------------------------------------


def test_a_stored_run_at_new_settings_equals_a_fresh_run_without_a_model_call(
        pytester: pytest.Pytester, demo_subset, wd14_v3_dir: Path, model_calls: dict[str, Calls]) -> None:
    db_path = relations(demo_subset(posts=12))
    taggers = f"--tagger=counting-pixel,wd14-onnx:{wd14_v3_dir},control"
    common = [taggers, f"--dataset={db_path}", "--benchmark-disable", "--tagger-metrics=full",
              f"--score-floor=wd14-onnx:{wd14_v3_dir}=-50", "--tagger-batch-size=5"]
    first = pytester.runpytest_inprocess(*common, f"--tagger-results={pytester.path / 'first.json'}")
    assert first.ret == pytest.ExitCode.OK
    assert calls_of(model_calls) == {"counting-pixel": list(range(1, 13)), "wd14": list(range(1, 13))}
    assert (pytester.path / ".tagger-eval" / "predictions.sqlite").is_file()  # the default: in the rootdir
    assert "from the prediction store" not in first.stdout.str()

    changed = ["--threshold=0.3", "--character-threshold=0.6", "--tag-scope=general", "--expand-implications"]
    stored = pytester.runpytest_inprocess(*common, *changed, f"--tagger-results={pytester.path / 'stored.json'}")
    assert calls_of(model_calls) == {"counting-pixel": [], "wd14": []}  # no model call at all
    fresh = pytester.runpytest_inprocess(*common, *changed, "--no-tagger-store",
                                         f"--tagger-results={pytester.path / 'fresh.json'}")
    assert calls_of(model_calls) == {"counting-pixel": list(range(1, 13)), "wd14": list(range(1, 13))}
    assert stored.ret == fresh.ret

    stored_doc, fresh_doc = load(pytester.path / "stored.json"), load(pytester.path / "fresh.json")
    # Per-post counts and tags, summaries, metrics (P=R, AP, best threshold, soft score): all equal.
    assert without_store_marks(stored_doc) == without_store_marks(fresh_doc)
    assert stored_doc["taggers"]["counting-pixel"]["metrics"] == fresh_doc["taggers"]["counting-pixel"]["metrics"]
    stored.stdout.fnmatch_lines([f"from the prediction store: counting-pixel 12 of 12 posts, wd14-onnx:{wd14_v3_dir} "
                                 "12 of 12 posts (runtimes as measured when inferred)"])
    assert "from the prediction store" not in fresh.stdout.str()
    # A stored post reports the runtime measured when it was inferred (by the first run); the control tagger,
    # whose output is the truth the options change, is never stored.
    first_doc = load(pytester.path / "first.json")
    for label in ("counting-pixel", f"wd14-onnx:{wd14_v3_dir}"):
        runtimes = {post: entry["runtime_s"] for post, entry in first_doc["taggers"][label]["posts"].items()}
        assert {post: entry["runtime_s"] for post, entry in stored_doc["taggers"][label]["posts"].items()} == runtimes
        assert stored_doc["taggers"][label]["posts_from_store"] == 12
        assert all(entry["from_store"] for entry in stored_doc["taggers"][label]["posts"].values())
    assert "posts_from_store" not in stored_doc["taggers"]["control"]
    assert not any("from_store" in entry for entry in fresh_doc["taggers"]["counting-pixel"]["posts"].values())


def test_a_threshold_below_the_floor_is_inferred_afresh(pytester: pytest.Pytester, demo_subset,
                                                         model_calls: dict[str, Calls]) -> None:
    common = ["--tagger=counting-pixel", f"--dataset={demo_subset(posts=4)}", "--benchmark-disable",
              "--no-tagger-results"]
    assert pytester.runpytest_inprocess(*common).ret == pytest.ExitCode.OK
    calls_of(model_calls)
    below = pytester.runpytest_inprocess(*common, "--threshold=0.005", "--score-floor=-50")
    assert calls_of(model_calls)["counting-pixel"] == [1, 2, 3, 4]
    below.stdout.fnmatch_lines(["prediction store not read for counting-pixel: its threshold 0.005 is below the "
                                "store's floor 0.01 (a threshold below the floor needs fresh inference)"])
    at_floor = pytester.runpytest_inprocess(*common, "--threshold=0.01", "--score-floor=-50")
    assert calls_of(model_calls)["counting-pixel"] == []
    at_floor.stdout.fnmatch_lines(["from the prediction store: counting-pixel 4 of 4 posts*"])


def test_no_store_option_neither_reads_nor_writes_one(pytester: pytest.Pytester, demo_subset,
                                                      model_calls: dict[str, Calls]) -> None:
    common = ["--tagger=counting-pixel", f"--dataset={demo_subset(posts=3)}", "--benchmark-disable",
              "--no-tagger-results", "--no-tagger-store"]
    for _ in range(2):
        assert pytester.runpytest_inprocess(*common).ret == pytest.ExitCode.OK
        assert calls_of(model_calls)["counting-pixel"] == [1, 2, 3]
    assert not (pytester.path / ".tagger-eval" / "predictions.sqlite").exists()


def test_a_batch_infers_only_the_posts_the_store_lacks(pytester: pytest.Pytester, demo_subset,
                                                       model_calls: dict[str, Calls]) -> None:
    db_path = demo_subset(posts=10)
    common = ["--tagger=counting-pixel", f"--dataset={db_path}", "--benchmark-disable", "--no-tagger-results"]
    pytester.runpytest_inprocess(*common, "-k", "post3 or post4 or post8")
    assert calls_of(model_calls)["counting-pixel"] == [3, 4, 8]
    result = pytester.runpytest_inprocess(*common, "--tagger-batch-size=4")
    assert result.ret == pytest.ExitCode.OK
    assert model_calls["counting-pixel"] == [[1, 2], [5, 6, 7], [9, 10]]
    result.stdout.fnmatch_lines(["from the prediction store: counting-pixel 3 of 10 posts*"])


# --- what invalidates an entry -----------------------------------------------------------------------------------


def evaluate_all(argv: list[str]) -> dict[str, list[PostResult]]:
    """Every post of every selected tagger, through `Evaluation` as a script runs it."""
    evaluation = Evaluation(parse_run_config(argv))
    try:
        results = {}
        for spec in evaluation.specs:
            run = evaluation.load(spec)
            try:
                results[spec.label] = [run.evaluate(evaluation.dataset, post_id)
                                       for post_id in evaluation.dataset.post_ids()]
            finally:
                run.close()
        return results
    finally:
        evaluation.close()


def test_a_changed_model_tag_file_or_image_misses_only_what_it_changed(
        tmp_path: Path, demo_subset, model_calls: dict[str, Calls]) -> None:
    model = build_wd14_model(tmp_path / "model", dynamic_batch=True)
    db_path = demo_subset(posts=6)
    argv = [f"--tagger=counting-pixel,wd14-onnx:{model}", f"--dataset={db_path}",
            f"--tagger-store={tmp_path / 'store.sqlite'}"]
    evaluate_all(argv)
    assert calls_of(model_calls) == {"counting-pixel": [1, 2, 3, 4, 5, 6], "wd14": [1, 2, 3, 4, 5, 6]}
    evaluate_all(argv)
    assert calls_of(model_calls) == {"counting-pixel": [], "wd14": []}

    tags = model / "selected_tags.csv"
    tags.write_text(tags.read_text(encoding="utf-8").replace("red_theme", "red_themed"), encoding="utf-8")
    evaluate_all(argv)
    assert calls_of(model_calls) == {"counting-pixel": [], "wd14": [1, 2, 3, 4, 5, 6]}

    build_wd14_model(tmp_path / "other", dynamic_batch=True, size=224)  # other weights: another model file
    shutil.copyfile(tmp_path / "other" / "model.onnx", model / "model.onnx")
    evaluate_all(argv)
    assert calls_of(model_calls) == {"counting-pixel": [], "wd14": [1, 2, 3, 4, 5, 6]}

    image = db_path.parent / "images" / "0004.png"  # post 4 gets another image (and its md5)
    Image.open(db_path.parent / "images" / "0002.png").save(image)
    set_md5(db_path, 4, image)
    evaluate_all(argv)
    assert calls_of(model_calls) == {"counting-pixel": [4], "wd14": [4]}
    evaluate_all(argv)
    assert calls_of(model_calls) == {"counting-pixel": [], "wd14": []}


def test_changed_tagger_code_or_libraries_miss_every_output_of_the_tagger(
        tmp_path: Path, demo_subset, model_calls: dict[str, Calls], monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--tagger=counting-pixel", f"--dataset={demo_subset(posts=3)}", f"--tagger-store={tmp_path / 's.sqlite'}"]
    evaluate_all(argv)
    calls_of(model_calls)
    monkeypatch.setattr(stored_taggers, "code_digest", lambda tagger: "edited preprocessing")
    evaluate_all(argv)
    assert calls_of(model_calls)["counting-pixel"] == [1, 2, 3]
    evaluate_all(argv)
    assert calls_of(model_calls)["counting-pixel"] == []
    monkeypatch.setattr(stored_taggers, "_version", lambda name: "99" if name == "pillow" else None)
    evaluate_all(argv)
    assert calls_of(model_calls)["counting-pixel"] == [1, 2, 3]
    evaluate_all([*argv, "--execution-provider=cpu"])
    assert calls_of(model_calls)["counting-pixel"] == [1, 2, 3]


def test_the_code_digest_follows_the_source_of_the_tagger_and_what_it_uses(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "edited_tagger.py"
    module.write_text("from tagger_eval.taggers.demo import PixelTagger\n\n\nclass Edited(PixelTagger):\n"
                      "    name = 'edited'\n", encoding="utf-8")
    monkeypatch.syspath_prepend(tmp_path)
    edited = importlib.import_module("edited_tagger").Edited()
    before = stored_taggers.code_digest(edited)
    modules = set(stored_taggers._modules(edited))
    assert {"edited_tagger", "tagger_eval.taggers.demo", "tagger_eval.data.dataset"} <= modules
    assert "tagger_eval.config" not in modules  # it locates and configures, and computes nothing
    assert stored_taggers.code_digest(edited) == before
    module.write_text(module.read_text(encoding="utf-8") + "# a change\n", encoding="utf-8")
    assert stored_taggers.code_digest(edited) != before
    assert stored_taggers.code_digest(PixelTagger()) != before


def test_a_stored_post_whose_image_no_longer_matches_is_skipped_as_a_fresh_run_skips_it(
        tmp_path: Path, demo_subset, model_calls: dict[str, Calls]) -> None:
    db_path = demo_subset(posts=3)
    argv = ["--tagger=counting-pixel", f"--dataset={db_path}", f"--tagger-store={tmp_path / 'store.sqlite'}",
            "--max-image-pixels=100000"]
    evaluate_all(argv)
    calls_of(model_calls)
    (db_path.parent / "images" / "0002.png").write_bytes(b"damaged")  # the row's md5 no longer names this file
    with pytest.raises(Exception, match="does not match the post's md5"):
        evaluate_all(argv)
    with pytest.raises(Exception, match="more than the limit of 100"):  # a stored post, refused from its header
        evaluate_all(["--tagger=counting-pixel", f"--dataset={db_path}", f"--tagger-store={tmp_path / 'store.sqlite'}",
                      "--max-image-pixels=100"])
    assert calls_of(model_calls)["counting-pixel"] == []


# --- interrupted and concurrent runs -----------------------------------------------------------------------------

CONFTEST = '''
import os
import signal

from tagger_eval.taggers import TaggerEntry, register
from tagger_eval.taggers.demo import PixelTagger


class KillablePixel(PixelTagger):
    """demo-pixel, writing each call's posts to CALLS, and killing its own process (kill -9) in the call after it
    has predicted KILL_AFTER posts."""

    name = "killable-pixel"

    def predict(self, samples):
        calls = os.environ["CALLS"]
        done = sum(len(line.split()) for line in open(calls)) if os.path.exists(calls) else 0
        if os.environ.get("KILL_AFTER") and done >= int(os.environ["KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)
        with open(calls, "a") as file:
            file.write(" ".join(str(sample.post.id) for sample in samples) + "\\n")
        return super().predict(samples)


register(TaggerEntry("killable-pixel", "demo-pixel, killed on demand", lambda argument, options: KillablePixel()))
'''


def check_store(path: Path) -> dict[str, int]:
    """The store is whole (sqlite's integrity check) and every row decodes; its row count per tagger label."""
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    connection.close()
    store = PredictionStore(path, PROBABILITY_FLOOR)
    try:
        counts = {}
        for entry in store.entries():
            outputs = store.all(entry.id)
            assert all(output and runtime >= 0 for output, runtime in outputs.values())
            counts[entry.label] = len(outputs)
        return counts
    finally:
        store.close()


def test_a_killed_evaluation_resumes_with_the_posts_it_had_not_stored(pytester: pytest.Pytester, demo_subset,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST)
    calls, store = pytester.path / "calls.txt", pytester.path / ".tagger-eval" / "predictions.sqlite"
    common = ["--tagger=killable-pixel", f"--dataset={demo_subset(posts=12)}", "--benchmark-disable",
              "--tagger-batch-size=2", "-p", "no:cacheprovider"]
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("KILL_AFTER", "5")
    killed = pytester.runpytest_subprocess(*common, "--no-tagger-results")
    assert killed.ret == -signal.SIGKILL
    assert calls.read_text().split() == [str(n) for n in range(1, 7)]  # killed in its 4th model call
    assert check_store(store) == {"killable-pixel": 6}
    monkeypatch.delenv("KILL_AFTER")
    calls.unlink()
    resumed = pytester.runpytest_subprocess(*common, f"--tagger-results={pytester.path / 'resumed.json'}")
    assert resumed.ret == pytest.ExitCode.OK
    assert calls.read_text().splitlines() == ["7 8", "9 10", "11 12"]  # only the posts not yet stored
    resumed.stdout.fnmatch_lines(["from the prediction store: killable-pixel 6 of 12 posts*"])
    calls.unlink()
    fresh = pytester.runpytest_subprocess(*common, "--no-tagger-store",
                                          f"--tagger-results={pytester.path / 'fresh.json'}")
    assert fresh.ret == pytest.ExitCode.OK and len(calls.read_text().split()) == 12
    assert without_store_marks(load(pytester.path / "resumed.json")) == without_store_marks(
        load(pytester.path / "fresh.json"))
    assert check_store(store) == {"killable-pixel": 12}


WRITER = '''
import sys
import numpy as np
from tagger_eval.run.prediction_store import PredictionStore

path, first, last, tags = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = PredictionStore(path, 0.01)
tagger = store.register({"implementation": "writer", "version": "1"}, "writer", {"name": "writer"})
names = [f"tag_{n}" for n in range(tags)]
for post in range(first, last):
    values = np.random.default_rng(post).random(tags, dtype=np.float32).tolist()
    store.save(tagger, f"{post:032x}", dict(zip(names, values)), post / 1000)
    print(post, flush=True)
store.close()
'''


def expected_output(post: int, tags: int) -> dict[str, float]:
    values = np.random.default_rng(post).random(tags, dtype=np.float32).tolist()
    return {f"tag_{n}": value for n, value in enumerate(values) if value >= 0.01}


def test_concurrent_and_killed_writers_leave_a_consistent_store(tmp_path: Path) -> None:
    path, tags = tmp_path / "store.sqlite", 2000
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(first), str(last), str(tags)],
                                stdout=subprocess.PIPE, text=True) for first, last in ((0, 120), (60, 180))]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    # A third one killed while it writes, whenever that falls.
    killed = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "180", "100000", str(tags)],
                              stdout=subprocess.PIPE, text=True)
    assert killed.stdout is not None
    for _ in range(40):
        killed.stdout.readline()
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert check_store(path)["writer"] >= 180 + 40
    store = PredictionStore(path, PROBABILITY_FLOOR)
    try:
        (entry,) = store.entries()
        outputs = store.all(entry.id)
        for post in (0, 59, 60, 119, 120, 179, 180, 219):  # each writer's, both writers', the killed one's
            assert outputs[f"{post:032x}"] == (expected_output(post, tags), post / 1000)
    finally:
        store.close()


# --- speed -------------------------------------------------------------------------------------------------------


def measure(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


def test_the_store_speed_at_its_worst_is_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 posts x 10,000 tags, every one at or above the floor (a random-weight model's worst case; a trained
    model keeps a few hundred): written post by post as a run writes them, then read back. Measured, not gated."""
    posts, tags = 1000, 10_000
    names = [f"tag_{n}" for n in range(tags)]
    rng = np.random.default_rng(0)
    store = PredictionStore(tmp_path / "store.sqlite", PROBABILITY_FLOOR)
    tagger = store.register({"implementation": "speed", "version": "1"}, "speed", {"name": "speed"})
    outputs = [dict(zip(names, rng.uniform(0.01, 1.0, tags).astype(np.float32).tolist(), strict=True))
               for _ in range(20)]
    start = time.perf_counter()
    for post in range(posts):
        store.save(tagger, f"{post:032x}", outputs[post % len(outputs)], 0.1, ratings=())  # found once per run
    written = time.perf_counter() - start
    start = time.perf_counter()
    everything = store.all(tagger)
    read_all = time.perf_counter() - start
    start = time.perf_counter()
    for post in range(0, posts, 10):
        store.get(tagger, f"{post:032x}")
    read_one = (time.perf_counter() - start) / (posts // 10)
    store.close()
    size = sum(file.stat().st_size for file in tmp_path.iterdir())
    assert len(everything) == posts and everything[f"{7:032x}"][0] == outputs[7]
    measure(capsys, f"prediction store, {posts:,} posts x {tags:,} tags at the floor: write {written:.2f} s "
                    f"({written / posts * 1000:.1f} ms/post), read all {read_all:.2f} s, read one "
                    f"{read_one * 1000:.1f} ms, {size / 2**20:.0f} MiB")
