"""Results JSON of a run, the comparison of two runs, and the regression gate, as users drive them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from builders import comparable_results
from hooked_tagger import hooked_entry

from tagger_eval.cli import main as cli_main
from tagger_eval.config import GateConfig
from tagger_eval.data.demo_dataset import DEFAULT_DATASET
from tagger_eval.reports.compare import compare, failure_messages, format_comparison
from tagger_eval.reports.leaderboard import summarise
from tagger_eval.reports.results import SCHEMA, SCHEMA_VERSION, ResultsError, autosave_path, load, save
from tagger_eval.taggers import registered

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--benchmark-disable", "-p", "no:cacheprovider", *args)


# --- the document -------------------------------------------------------------------------------------------------


def test_a_run_autosaves_a_versioned_document(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--tagger=control,demo-lowres")
    assert result.ret == pytest.ExitCode.OK
    [saved] = (pytester.path / ".tagger-eval").glob("*.json")
    assert saved.name.startswith("0001_")
    result.stdout.fnmatch_lines([f"results saved to {saved}"])
    document = load(saved)
    assert (document["schema"], document["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert document["dataset"]["posts"] == 96 and document["dataset"]["path"] == str(DEFAULT_DATASET)
    assert document["dataset"]["metadata"]["source"].startswith("synthetic")
    assert document["settings"] == {"tag_scope": "all", "expand_implications": False, "metrics": "off"}
    assert list(document["taggers"]) == ["control", "demo-lowres"]
    lowres = document["taggers"]["demo-lowres"]
    assert lowres["identity"]["implementation"] == "tagger_eval.taggers.demo.LowResolutionTagger"
    assert (lowres["threshold"], lowres["character_threshold"], lowres["score_floor"]) == (0.5, None, -0.25)
    assert list(lowres["posts"]) == [str(post_id) for post_id in range(1, 97)]
    post = lowres["posts"]["1"]
    assert post["status"] == "scored" and post["correct"] - post["incorrect"] == post["score"] * post["truth_size"]
    # The aggregates are the summary's, recomputed here from the per-post entries.
    scores = [entry["score"] for entry in lowres["posts"].values()]
    assert lowres["summary"]["mean_score"] == pytest.approx(sum(scores) / len(scores))
    assert lowres["summary"]["passed"] == 96
    # A second run gets the next number.
    run(pytester, "--tagger=control")
    assert sorted(path.name[:4] for path in (pytester.path / ".tagger-eval").glob("*.json")) == ["0001", "0002"]


def test_model_files_are_named_by_their_hashes(pytester: pytest.Pytester, wd14_v3_dir: Path) -> None:
    out = pytester.path / "run.json"
    run(pytester, f"--tagger=wd14-onnx:{wd14_v3_dir}", "--score-floor=-50", f"--tagger-results={out}")
    identity = load(out)["taggers"][f"wd14-onnx:{wd14_v3_dir}"]["identity"]
    assert identity["model_sha256"] == hashlib.sha256((wd14_v3_dir / "model.onnx").read_bytes()).hexdigest()
    assert identity["tags_sha256"] == hashlib.sha256((wd14_v3_dir / "selected_tags.csv").read_bytes()).hexdigest()


def test_skips_and_results_can_be_turned_off(pytester: pytest.Pytester) -> None:
    run(pytester, "--tagger=control", "--no-tagger-results")
    assert not (pytester.path / ".tagger-eval").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "results file not found"),
        ("{not json", "is not a readable results file"),
        ('{"schema": "something-else"}', "is not a tagger-eval results file"),
        (json.dumps({"schema": SCHEMA, "schema_version": 99}), "has results schema version 99"),
    ],
)
def test_unusable_results_files_are_clear_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        load(path)


def test_save_is_atomic_and_autosave_numbers_files(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    first = autosave_path(directory)
    save({"schema": SCHEMA}, first)
    (directory / "0007_old.json").write_text("{}")
    assert first.name.startswith("0001_") and autosave_path(directory).name.startswith("0008_")
    assert not list(directory.glob(".*.tmp"))


# --- comparing documents ------------------------------------------------------------------------------------------


def document(scores: dict[str, dict[int, float | None]], dataset_hash: str = "abc") -> dict:
    """A minimal results document: None marks a skipped post."""
    return {
        "dataset": {"path": "data.db", "posts": 10, "content_sha256": dataset_hash},
        "taggers": {
            tagger: {"posts": {str(post): ({"status": "scored", "score": score} if score is not None
                                           else {"status": "skipped", "reason": "image missing"})
                               for post, score in posts.items()}}
            for tagger, posts in scores.items()
        },
    }


def test_a_mean_that_falls_past_the_tolerance_regresses() -> None:
    baseline = document({"t": {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}})
    [within] = compare(baseline, document({"t": {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.47}}), GateConfig(0.01, 0.5))
    [beyond] = compare(baseline, document({"t": {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.44}}), GateConfig(0.01, 0.5))
    assert within.delta == pytest.approx(-0.0075) and not within.regressed
    assert beyond.delta == pytest.approx(-0.015) and beyond.regressed
    assert beyond.problems == ["mean score fell from 0.5000 to 0.4850 (-0.0150, tolerance 0.01)"]


def test_too_many_worse_posts_regress_even_when_the_mean_holds() -> None:
    baseline = document({"t": {post: 0.5 for post in range(1, 11)}})
    # Three posts lose 0.1, one gains 0.3: the mean is unchanged, but 30 % of the posts got worse.
    new = document({"t": {**{post: 0.5 for post in range(1, 11)}, 1: 0.4, 2: 0.4, 3: 0.4, 4: 0.8}})
    [row] = compare(baseline, new, GateConfig(0.01, 0.2))
    assert row.delta == pytest.approx(0.0) and (len(row.worse), row.better) == (3, 1)
    assert row.problems == ["3 of 10 posts scored lower (more than 20% allowed)"]
    [message] = failure_messages([row])
    assert message.startswith("t regressed: 3 of 10 posts scored lower")
    assert "post 1 0.500 -> 0.400" in message
    [lenient] = compare(baseline, new, GateConfig(0.01, 0.3))
    assert not lenient.regressed


def test_posts_and_taggers_in_one_run_only_are_reported() -> None:
    baseline = document({"kept": {1: 0.5, 2: 0.5, 3: 0.9}, "dropped": {1: 0.1}})
    new = document({"kept": {1: 0.5, 2: None, 3: 0.9, 4: 0.2}, "added": {1: 0.3}})
    rows = {row.tagger: row for row in compare(baseline, new)}
    kept = rows["kept"]
    assert (kept.only_baseline, kept.only_new, kept.compared) == ([2], [4], 2)
    assert kept.baseline_mean == kept.new_mean == pytest.approx(0.7)  # over posts 1 and 3 only
    assert not any(row.regressed for row in rows.values())
    table = "\n".join(format_comparison(list(rows.values())))
    assert "kept: 1 posts scored only in the baseline: 2" in table
    assert "kept: 1 posts scored only in this run: 4" in table
    assert [line.split()[-1] for line in format_comparison(list(rows.values()))[2:5]] == ["ok", "new", "run"]


def test_nothing_in_common_regresses() -> None:
    [row] = compare(document({"t": {1: 0.5}}), document({"t": {1: None}}))
    assert row.problems == ["no post scored in both runs"]


def test_runs_on_different_data_are_not_compared() -> None:
    with pytest.raises(ResultsError, match=r"the baseline was made on another dataset .* cannot be compared"):
        compare(document({"t": {1: 0.5}}, "abc"), document({"t": {1: 0.5}}, "def"))


def test_the_summary_of_a_document_matches_its_posts() -> None:
    """The document's aggregates come from the same PostResults as the terminal's leaderboard."""
    from tagger_eval.config import parse_run_config
    from tagger_eval.reports.results import build_document
    from tagger_eval.run.evaluation import Evaluation

    session = Evaluation(parse_run_config(["--tagger=demo-histogram"]))
    try:
        tagger_run = session.load(session.specs[0])
        results = [tagger_run.evaluate(session.dataset, post_id) for post_id in session.dataset.post_ids()]
        built = build_document(results, {}, {"path": "x", "posts": 96, "content_sha256": "h"}, "all")
    finally:
        session.close()
    [summary] = summarise(results)
    assert built["taggers"]["demo-histogram"]["summary"]["error_rate"] == summary.error_rate
    incorrect = sum(post["incorrect"] for post in built["taggers"]["demo-histogram"]["posts"].values())
    predicted = sum(post["predicted_size"] for post in built["taggers"]["demo-histogram"]["posts"].values())
    assert summary.error_rate == pytest.approx(incorrect / predicted)


# --- the gate, end to end -----------------------------------------------------------------------------------------


def test_a_degraded_tagger_fails_against_the_baseline(pytester: pytest.Pytester) -> None:
    baseline = pytester.path / "baseline.json"
    assert run(pytester, "--tagger=control,demo-pixel", f"--tagger-results={baseline}").ret == 0

    same = run(pytester, "--tagger=control,demo-pixel", f"--tagger-baseline={baseline}", "--no-tagger-results")
    assert same.ret == pytest.ExitCode.OK
    same.stdout.fnmatch_lines(["no regression against the baseline"])

    # A higher threshold drops correct tags: every post stays above its floor, but the model got worse.
    degraded = run(pytester, "--tagger=control,demo-pixel", "--threshold=demo-pixel=0.9", "--score-floor=-1",
                   f"--tagger-baseline={baseline}", "--no-tagger-results")
    assert degraded.ret == pytest.ExitCode.TESTS_FAILED
    degraded.assert_outcomes(passed=192)
    degraded.stdout.fnmatch_lines([
        "demo-pixel * 0.7659 * REGRESSED",
        "demo-pixel regressed: mean score fell from 0.7659 to 0.* (-0.*, tolerance 0.01); * of 96 posts scored lower*",
        "  worse: post * -> *",
    ])
    assert "control regressed" not in degraded.stdout.str()


def test_a_baseline_from_another_dataset_is_refused(pytester: pytest.Pytester, demo_subset) -> None:
    baseline = pytester.path / "baseline.json"
    run(pytester, "--tagger=control", f"--dataset={demo_subset(posts=5)}", f"--tagger-results={baseline}")
    result = run(pytester, "--tagger=control", f"--tagger-baseline={baseline}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tagger-baseline: the baseline was made on another dataset*5 posts*96 posts*"])


def test_posts_skipped_in_the_new_run_are_listed(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=6)
    baseline = pytester.path / "baseline.json"
    run(pytester, "--tagger=control", f"--dataset={db_path}", f"--tagger-results={baseline}")
    (db_path.parent / "images" / "0004.png").unlink()
    result = run(pytester, "--tagger=control", f"--dataset={db_path}", f"--tagger-baseline={baseline}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["control: 1 posts scored only in the baseline: 4"])


def test_the_compare_command_applies_the_same_rule(tmp_path: Path, capsys) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    base = document({"t": {1: 0.5, 2: 0.5}})
    save({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **base}, old)
    save({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **document({"t": {1: 0.5, 2: 0.1}})}, new)
    assert cli_main(["compare", str(old), str(old)]) == 0
    assert "REGRESSED" not in capsys.readouterr().out
    assert cli_main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "t regressed: mean score fell from 0.5000 to 0.3000" in out
    assert cli_main(["compare", str(old), str(new), "--tolerance", "0.5", "--max-worse", "0.5"]) == 0
    capsys.readouterr()
    assert cli_main(["compare", str(old), str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in capsys.readouterr().err


# --- pytest-xdist and pytest-benchmark ----------------------------------------------------------------------------


def test_an_xdist_run_gives_the_serial_results(pytester: pytest.Pytester) -> None:
    serial, parallel = pytester.path / "serial.json", pytester.path / "parallel.json"
    first = pytester.runpytest_subprocess("--tagger=all", "--benchmark-disable", f"--tagger-results={serial}")
    second = pytester.runpytest_subprocess("--tagger=all", "--benchmark-disable", f"--tagger-results={parallel}",
                                           "-n", "2", "--dist", "loadgroup")
    assert first.ret == second.ret == pytest.ExitCode.OK
    second.assert_outcomes(passed=4 * 96)
    assert comparable_results(load(parallel)) == comparable_results(load(serial))
    # The controller printed the same leaderboard (ms/image aside).
    def board(result: pytest.RunResult) -> list[list[str]]:
        rows = [line.split() for line in result.outlines if line.startswith(("control ", "demo-"))]
        return [cells[:5] + cells[6:] for cells in rows]

    assert len(board(first)) == 4 and board(first) == board(second)


def test_benchmark_compare_fail_catches_a_slower_tagger(pytester: pytest.Pytester, demo_subset, monkeypatch) -> None:
    # pytest-benchmark turns itself off inside an xdist worker, which this suite may itself run in.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    db_path = demo_subset(posts=4)
    sleep_s = {"per call": 0.01}
    storage = pytester.path / "benchmarks"
    common = ["--tagger=sleepy", f"--dataset={db_path}", f"--benchmark-storage={storage}", "--no-tagger-results"]
    with registered(hooked_entry("sleepy", lambda samples: time.sleep(sleep_s["per call"]))):
        saved = pytester.runpytest_inprocess(*common, "--benchmark-autosave")
        assert saved.ret == pytest.ExitCode.OK
        sleep_s["per call"] = 0.05
        slower = pytester.runpytest_inprocess(*common, "--benchmark-compare", "--benchmark-compare-fail=mean:10%")
    assert slower.ret != pytest.ExitCode.OK
    slower.stderr.fnmatch_lines(["*test_post_score[[]sleepy-post1[]]*Field 'mean' has failed PercentageRegression*"])


def test_the_run_and_the_command_write_the_same_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    results = pytester.path / "run.json"
    result = run(pytester, "--tagger=all", f"--tagger-results={results}", f"--tagger-report={tmp_path / 'during'}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"report written to {tmp_path / 'during'} (5 files)"])
    assert cli_main(["report", str(results), "--out", str(tmp_path / "after")]) == 0
    names = ["error-rates.png", "index.html", "score-vs-runtime.png", "scores-nonnegative.png", "scores.png"]
    for directory in ("during", "after"):
        assert sorted(path.name for path in (tmp_path / directory).iterdir()) == names
    for name in names:
        assert (tmp_path / "during" / name).read_bytes() == (tmp_path / "after" / name).read_bytes(), name
    assert (tmp_path / "during" / "scores.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "demo-histogram" in (tmp_path / "during" / "index.html").read_text()
