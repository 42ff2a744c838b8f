"""The pytest plugin end to end, run through pytester as a user would run it."""

from __future__ import annotations

import json
import re
import sqlite3
from itertools import pairwise

import pytest
from hooked_tagger import hooked_entry

from tagger_eval.config import parse_run_config
from tagger_eval.run.evaluation import Evaluation
from tagger_eval.taggers import registered

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
    result.stderr.fnmatch_lines(["*unknown tagger 'wd99-imaginary'; known taggers: control, *demo-histogram*"])


def test_malformed_dataset_is_a_usage_error(pytester: pytest.Pytester) -> None:
    bad = pytester.path / "data.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = pytester.runpytest("--tagger=control", f"--dataset={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*data.db is not a readable sqlite database*"])


def test_missing_and_corrupt_images_are_skipped_with_a_reason(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=6)
    (db_path.parent / "images" / "0002.png").unlink()
    corrupt = db_path.parent / "images" / "0003.png"
    corrupt.write_bytes(corrupt.read_bytes()[:100])

    result = pytester.runpytest("--tagger=control,demo-pixel", f"--dataset={db_path}", "--benchmark-disable", "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=8, skipped=4)
    result.stdout.fnmatch_lines(["*post 2: image file missing:*0002.png*", "*post 3: image*0003.png is unreadable*"])
    rows = summary_rows(result)
    assert rows["control"][2] == "4" and rows["control"][11] == "2"


def test_posts_without_truth_in_scope_are_skipped(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=3)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE posts SET tag_string_general = '', tag_string_character = '' WHERE id = 1")
    connection.close()
    # Under `general` scope post 1 keeps only its rating tag, so it is scored on that alone; all scopes keep ratings,
    # so an empty scoped truth comes from a vocabulary-limited tagger, tested in test_session.py.
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--tag-scope=general",
                                "--benchmark-disable")
    result.assert_outcomes(passed=3)
    assert summary_rows(result)["control"][3] == "1.000"


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
