"""The pytest plugin end to end, run through pytester as a user would run it."""

from __future__ import annotations

import json
import re
import sqlite3
from itertools import pairwise
from pathlib import Path
from typing import NoReturn

import pytest
from builders import build_dataset, build_wd14_model, comparable_results
from hooked_tagger import hooked_entry
from test_dataset import set_md5

from tagger_eval.config import parse_run_config
from tagger_eval.data import dataset as dataset_module
from tagger_eval.reports.results import load
from tagger_eval.run.evaluation import Evaluation
from tagger_eval.taggers import TaggerEntry, registered

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")


def summary_rows(result: pytest.RunResult) -> dict[str, list[str]]:
    """The summary table's rows by tagger, split into cells."""
    lines = result.outlines
    start = lines.index(next(line for line in lines if "tagger-eval summary" in line))
    rows = {}
    for line in lines[start + 5 :]:
        if not line or line.startswith(("=", "not run:")):
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def expected_scores(tagger: str, *options: str) -> dict[int, float]:
    """Each post's score computed by the library directly, outside pytest, with the same options."""
    session = Evaluation(parse_run_config([f"--tagger={tagger}", *options]))
    run = session.load(session.specs[0])
    try:
        return {post_id: run.evaluate(session.dataset, post_id).score for post_id in session.dataset.post_ids()}
    finally:
        session.close()


def test_all_taggers_on_the_demo_dataset(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=all", "--benchmark-disable")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=4 * 96)
    rows = summary_rows(result)
    assert list(rows) == ["control", "demo-pixel", "demo-lowres", "demo-histogram"]  # best first
    assert rows["control"][3] == "1.000"
    means = [float(rows[name][3]) for name in rows]
    assert all(better - worse >= 0.1 for better, worse in pairwise(means))
    for name in ("demo-pixel", "demo-lowres", "demo-histogram"):
        scores = expected_scores(name)
        assert float(rows[name][3]) == pytest.approx(sum(scores.values()) / len(scores), abs=5e-4)
        assert rows[name][2] == "96"


def test_readable_test_ids(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=control,demo-pixel", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_post_score[[]control-post1[]]", "*test_post_score[[]demo-pixel-post96[]]"])


def test_a_floor_above_ability_fails_exactly_the_posts_below_it(pytester: pytest.Pytester) -> None:
    floor = 0.8
    scores = expected_scores("demo-pixel")
    below = {post_id for post_id, score in scores.items() if score < floor}
    assert 0 < len(below) < len(scores), "the floor must split the demo posts for this test to mean anything"

    result = pytester.runpytest("--tagger=demo-pixel", f"--score-floor={floor}", "--benchmark-disable", "-rf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=len(scores) - len(below), failed=len(below))
    failed = {int(m) for m in re.findall(r"FAILED \S+\[demo-pixel-post(\d+)\]", result.stdout.str())}
    assert failed == below
    post = min(below)
    result.stdout.fnmatch_lines([
        f"*demo-pixel scored {scores[post]:.3f} on post {post}, below the floor 0.800",
        "*missed (*",
        "*wrong (*",
    ])


def test_per_tagger_floor_and_threshold(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "--tagger=control,demo-histogram", "--score-floor=demo-histogram=2", "--threshold=demo-histogram=0.9",
        "--benchmark-disable",
    )
    result.assert_outcomes(passed=96, failed=96)
    rows = summary_rows(result)
    assert rows["demo-histogram"][1] == "0.90"
    assert rows["control"][1] == "0.50"
    assert (rows["demo-histogram"][9], rows["demo-histogram"][10]) == ("0", "96")


def test_unknown_tagger_is_a_usage_error_listing_known_ones(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=wd99-imaginary")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*unknown tagger 'wd99-imaginary'; known taggers: camie-v2, control, *demo-histogram*"])


def test_malformed_dataset_is_a_usage_error(pytester: pytest.Pytester) -> None:
    bad = pytester.path / "data.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = pytester.runpytest("--tagger=control", f"--dataset={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*data.db is not a readable sqlite database*"])


def test_missing_corrupt_and_swapped_images_are_skipped_with_a_reason(pytester: pytest.Pytester,
                                                                       demo_subset) -> None:
    db_path = demo_subset(posts=6)
    images = db_path.parent / "images"
    (images / "0002.png").unlink()
    corrupt = images / "0003.png"
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    set_md5(db_path, 3, corrupt)  # a file Danbooru itself serves broken: its md5 is right, its pixels are not
    (images / "0004.png").rename(images / "swap.png")
    (images / "0005.png").rename(images / "0004.png")
    (images / "swap.png").rename(images / "0005.png")

    result = pytester.runpytest("--tagger=control,demo-pixel", f"--dataset={db_path}", "--benchmark-disable", "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=4, skipped=8)
    result.stdout.fnmatch_lines(["*post 2: image file missing:*0002.png*", "*post 3: image*0003.png is unreadable*",
                                 "*post 4: image*0004.png does not match the post's md5 (expected *, the file's is *)*",
                                 "*post 5: image*0005.png does not match the post's md5*"])
    rows = summary_rows(result)
    assert rows["control"][2] == "2" and rows["control"][11] == "4"


def test_posts_with_no_truth_but_their_rating_are_skipped(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=3)
    with sqlite3.connect(db_path) as connection:
        # Post 1 keeps only copyright and artist tags, out of `general` scope; post 2 has no tag but its rating.
        connection.execute("UPDATE posts SET tag_string_general = '', tag_string_character = '' WHERE id = 1")
        connection.execute("UPDATE posts SET tag_string_general = '', tag_string_character = '', "
                           "tag_string_copyright = '', tag_string_artist = '', tag_string_meta = '' WHERE id = 2")
    connection.close()
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--tag-scope=general",
                                "--benchmark-disable", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "SKIPPED*post 1 has no truth tags in tag scope 'general' besides its rating: a rating alone is not scored",
        "SKIPPED*post 2 has no tags besides its rating: a rating alone is not scored",
    ])
    assert summary_rows(result)["control"][2] == "1"


def test_tag_scope_changes_the_scores(pytester: pytest.Pytester) -> None:
    result_all = pytester.runpytest("--tagger=control,demo-pixel", "--benchmark-disable")
    result_general = pytester.runpytest("--tagger=control,demo-pixel", "--tag-scope=general", "--benchmark-disable")
    all_rows, general_rows = summary_rows(result_all), summary_rows(result_general)
    assert all_rows["control"][3] == general_rows["control"][3] == "1.000"
    # Without the unseeable copyright/artist/meta tags the demo tagger scores higher.
    expected = expected_scores("demo-pixel", "--tag-scope=general")
    assert float(general_rows["demo-pixel"][3]) == pytest.approx(sum(expected.values()) / len(expected), abs=5e-4)
    assert float(general_rows["demo-pixel"][3]) > float(all_rows["demo-pixel"][3])
    result_general.stdout.fnmatch_lines(["tag scope: general"])


def test_summary_state_does_not_leak_between_sessions(pytester: pytest.Pytester) -> None:
    pytester.runpytest("--tagger=demo-lowres", "--benchmark-disable")
    second = pytester.runpytest("--tagger=control", "--benchmark-disable")
    assert list(summary_rows(second)) == ["control"]
    assert summary_rows(second)["control"][2] == "96"


def test_without_tagger_the_plugin_stays_out_of_the_way(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ordinary():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "tagger-eval summary" not in result.stdout.str()


def test_explicit_paths_run_beside_the_evaluation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_mine():\n    assert True\n")
    result = pytester.runpytest("test_mine.py", "--tagger=control", "--benchmark-disable")
    result.assert_outcomes(passed=97)


def test_inference_runs_once_per_post_and_is_benchmarked_per_tagger(pytester: pytest.Pytester, demo_subset,
                                                                     monkeypatch) -> None:
    # pytest-benchmark turns itself off inside an xdist worker, which this suite may itself run in.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    db_path = demo_subset(posts=5)
    calls: list[int] = []
    json_path = pytester.path / "bench.json"
    with registered(hooked_entry("counting", lambda samples: calls.append(len(samples)))):
        result = pytester.runpytest_inprocess("--tagger=counting,control", f"--dataset={db_path}",
                                              f"--benchmark-json={json_path}")
    assert result.ret == pytest.ExitCode.OK
    assert calls == [1] * 5
    benchmarks = json.loads(json_path.read_text())["benchmarks"]
    assert len(benchmarks) == 10
    assert {b["group"] for b in benchmarks} == {"counting", "control"}
    assert all(b["stats"]["rounds"] == 1 and b["stats"]["iterations"] == 1 for b in benchmarks)


def test_an_empty_dataset_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    db_path = build_dataset(tmp_path / "empty", [], {})
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{db_path} has no posts, so there is nothing to evaluate (an interrupted or "
                                 "failed download? run the same `tagger-eval download` command again to fill it)"])


def test_a_run_that_scores_no_post_fails(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=3)
    # The demo images are 128x128: one pixel over the limit.
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--max-image-pixels=16383",
                                "--benchmark-disable", "-rs")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines([
        "no post was scored: each one was skipped or errored (`pytest -rs` says why), so the run fails",
        "SKIPPED*post 1: image *0001.png is 128x128 (16,384 pixels), more than the limit of 16,383; raise it with "
        "--max-image-pixels=16384 to evaluate this post",
    ])


def test_a_dataset_directory_reads_the_data_db_in_it(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=2)
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path.parent}", "--benchmark-disable")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"dataset: {db_path}"])


def failing_to_load(_argument: str | None, _options: object) -> NoReturn:
    raise RuntimeError("the weights are corrupt\n  (second line of the error)")


def test_a_tagger_that_does_not_load_fails_once_in_one_line(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=4)
    with registered(TaggerEntry("broken", "a tagger whose model cannot be loaded", failing_to_load)):
        result = pytester.runpytest_inprocess("--tagger=control,broken", f"--dataset={db_path}",
                                              "--benchmark-disable", "-rs")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=4, failed=1, skipped=3)
    error = "RuntimeError: the weights are corrupt / (second line of the error)"
    result.stdout.fnmatch_lines([
        "*_ test_post_score[[]broken-post1[]] _*",
        f"tagger broken could not be loaded: {error}",
        f"could not load: broken (4 tests not evaluated): {error}",
        "SKIPPED [[]3[]] *: tagger broken did not load (see the first error)",
    ])
    assert "Traceback" not in result.stdout.str() and "failing_to_load" not in result.stdout.str()


def test_a_lock_taken_mid_run_stops_it_naming_the_file(pytester: pytest.Pytester, demo_subset,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "BUSY_TIMEOUT_S", 0.05)
    db_path = demo_subset(posts=4)
    writers: list[sqlite3.Connection] = []

    def lock_the_dataset(_samples: object) -> None:
        if not writers:  # during post 1's test, another process starts writing and keeps the lock
            writers.append(sqlite3.connect(db_path))
            writers[0].execute("BEGIN EXCLUSIVE")

    try:
        with registered(hooked_entry("locked-out", lock_the_dataset)):
            result = pytester.runpytest_inprocess("--tagger=locked-out", f"--dataset={db_path}",
                                                  "--benchmark-disable", "--no-tagger-results")
    finally:
        for writer in writers:
            writer.close()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    # Post 2 was read (ahead) before the lock; post 3, read ahead while it was held, fails; post 4 is not run.
    result.assert_outcomes(passed=2, failed=1)
    message = (f"another process holds a lock on {db_path} (a download writing to it?); wait for it to finish or "
               "evaluate a copy of the dataset (gave up after waiting 0.05 s: database is locked)")
    result.stdout.fnmatch_lines(["*_ test_post_score[[]locked-out-post3[]] _*", message, f"*Interrupted: {message}*"])
    assert "Traceback" not in result.stdout.str() and "OperationalError" not in result.stdout.str()


def test_an_xdist_run_skips_and_fails_as_a_serial_one(pytester: pytest.Pytester, demo_subset, tmp_path: Path) -> None:
    """Skip reasons and a tagger that does not load reach the controller from the workers as they do serially."""
    db_path = demo_subset(posts=5)
    images = db_path.parent / "images"
    (images / "0003.png").write_bytes((images / "0002.png").read_bytes())
    with sqlite3.connect(db_path) as connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute("UPDATE posts SET rating = 'x' WHERE id = 4")
    connection.close()
    broken = build_wd14_model(tmp_path / "broken", dynamic_batch=True)
    (broken / "model.onnx").write_bytes(b"truncated")
    serial, parallel = pytester.path / "serial.json", pytester.path / "parallel.json"
    common = [f"--tagger=control,wd14-onnx:{broken}", f"--dataset={db_path}", "--tagger-batch-size=2",
              "--benchmark-disable"]
    first = pytester.runpytest_inprocess(*common, f"--tagger-results={serial}")
    second = pytester.runpytest_subprocess(*common, f"--tagger-results={parallel}", "-n", "2", "--dist", "loadgroup")
    assert first.ret == second.ret == pytest.ExitCode.TESTS_FAILED
    first.assert_outcomes(passed=3, skipped=6, failed=1)
    # With pytest 9.2, xdist 3.8's loadgroup no longer keeps a group on one worker (pytest-xdist#1386): each worker
    # that runs the broken tagger's tests fails its first one.
    outcomes = second.parseoutcomes()
    assert outcomes["passed"] == 3 and outcomes["skipped"] + outcomes["failed"] == 7 and outcomes["failed"] <= 2
    for result in (first, second):
        result.stdout.fnmatch_lines([f"could not load: wd14-onnx:{broken} (5 tests not evaluated): ModelLoadError: *"])
    assert comparable_results(load(parallel)) == comparable_results(load(serial))
    reasons = {post: entry["reason"] for post, entry in load(serial)["taggers"]["control"]["posts"].items()}
    assert "does not match the post's md5" in reasons["3"] and "invalid rating" in reasons["4"]


def test_an_error_the_tagger_explains_is_one_line_per_post(pytester: pytest.Pytester, demo_subset) -> None:
    """A model that outputs logits (or a server that will not answer) fails each post with its message, not with a
    traceback through the suite's code each time; an unexpected bug keeps its traceback."""
    from hooked_tagger import hooked_entry

    from tagger_eval.taggers import registered
    from tagger_eval.taggers.base import ModelOutputError

    def logits(samples: object) -> None:
        raise ModelOutputError("model.onnx outputs values from -7.7 to 2.0, outside [0, 1]")

    def bug(samples: object) -> None:
        raise KeyError("a bug")

    with registered(hooked_entry("logits", logits), hooked_entry("buggy", bug)):
        result = pytester.runpytest("--tagger=logits,buggy", "--benchmark-disable", "--no-tagger-results",
                                    f"--dataset={demo_subset(posts=3)}")
    result.assert_outcomes(failed=6)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(["*logits failed on post 1: ModelOutputError: model.onnx outputs values from -7.7*"])
    assert output.count("    def test_post_score(") == 3  # the three bugs keep their tracebacks, the logits none
    assert "raise ModelOutputError" not in output


def test_results_that_cannot_be_written_fail_the_run_in_one_line(pytester: pytest.Pytester, demo_subset) -> None:
    blocker = pytester.path / "not-a-folder"
    blocker.write_text("a file where the results' folder should be")
    result = pytester.runpytest("--tagger=control", f"--dataset={demo_subset(posts=2)}", "--benchmark-disable",
                                f"--tagger-results={blocker / 'run.json'}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["results not saved: *not-a-folder*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    # The run ends on a red line that says why it failed, after pytest's "2 passed".
    assert re.fullmatch(r"tagger-eval: run failed: results not saved: .*not-a-folder.*", result.outlines[-1])
    assert "2 passed" in result.outlines[-2]
    assert list(pytester.path.rglob("*.tmp")) == []
