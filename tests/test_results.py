"""Results JSON of a run, the comparison of two runs, and the regression gate, as users drive them."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import pytest
from builders import comparable_results
from hooked_tagger import hooked_entry

from tagger_eval.cli import main as cli_main
from tagger_eval.config import GateConfig
from tagger_eval.data.demo_dataset import DEFAULT_DATASET
from tagger_eval.records import DatasetIdentity, PostResult, ResultsDocument
from tagger_eval.reports.compare import compare, failure_messages, format_comparison
from tagger_eval.reports.leaderboard import summarise
from tagger_eval.reports.results import SCHEMA, SCHEMA_VERSION, ResultsError, autosave_path, build_document, load, save
from tagger_eval.scoring.post_score import score_post
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


def test_a_failed_save_names_the_path_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    taken = tmp_path / "results.json"
    taken.mkdir()  # the rename onto it fails after the temporary file was written
    (taken / "kept").write_text("mine")
    with pytest.raises(ResultsError, match=f"cannot write the results to {taken}: .*[Ii]s a directory"):
        save(document({"t": {1: 0.5}}), taken)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]
    assert (taken / "kept").read_text() == "mine"
    below_a_file = tmp_path / "results.json" / "kept" / "run.json"
    with pytest.raises(ResultsError, match=f"cannot write the results to {below_a_file}"):
        save(document({"t": {1: 0.5}}), below_a_file)
    assert sorted(path.name for path in taken.iterdir()) == ["kept"]


# --- what `load` refuses: every field compare and report read, with its type and range ----------------------------


MISSING = object()
POST = "taggers.demo-pixel.posts"
SUMMARY = "taggers.demo-pixel.summary"
IN_RANGE = "expected a number in [-1,000,000, 1]"


def corrupted(where: str, value: object) -> dict:
    """A complete, valid document (as JSON reads it back) with the value at the dotted path set, or removed."""
    document_ = json.loads(json.dumps(document({"demo-pixel": {1: 0.5, 2: None, 3: 0.25}})))
    *parents, last = where.split(".")
    container = document_
    for key in parents:
        container = container[key]
    if value is MISSING:
        del container[last]
    else:
        container[last] = value
    return document_


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        (f"{POST}.3.score", "x", f'{IN_RANGE}, got "x"'),
        (f"{POST}.3.score", math.nan, f"{IN_RANGE}, got NaN"),
        (f"{POST}.1.score", math.inf, f"{IN_RANGE}, got Infinity"),
        (f"{POST}.1.score", True, f"{IN_RANGE}, got true"),
        (f"{POST}.1.score", 1.5, f"{IN_RANGE}, got 1.5"),
        (f"{POST}.1.score", MISSING, "missing (a scored post has a score)"),
        (f"{POST}.1.status", "passed", 'expected "scored" or "skipped" or "error", got "passed"'),
        (f"{POST}.1.status", ["scored"], 'expected "scored" or "skipped" or "error", got a list'),
        (f"{POST}.1.correct", -1, "expected a whole number >= 0, got -1"),
        (f"{POST}.1.correct", 1.0, "expected a whole number >= 0, got 1.0"),
        (f"{POST}.1.missed_tags", "long_hair", 'expected a list of tag names, got "long_hair"'),
        (f"{POST}.2.reason", 7, "expected a string or null, got 7"),
        (f"{POST}.first", {"status": "skipped"}, 'expected a post id (digits), got "first"'),
        (POST, MISSING, "missing"),
        ("taggers", [{}], "expected an object (tagger label -> its results), got a list"),
        ("taggers.demo-pixel.threshold", "0.5", 'expected a finite number or null, got "0.5"'),
        (f"{SUMMARY}.mean_score", -math.inf, "expected a number in [-1,000,000, 1] or null, got -Infinity"),
        (f"{SUMMARY}.error_rate", 1e308, "expected a number in [0, 1] or null, got 1e+308"),
        (f"{SUMMARY}.mean_runtime_s", -1.0, "expected a number in [0, 1,000,000] or null, got -1.0"),
        (f"{SUMMARY}.passed", MISSING, "missing"),
        ("dataset.content_sha256", MISSING, "missing"),
        ("dataset.posts", "96", 'expected a whole number >= 0, got "96"'),
        ("commit", "abc", 'expected an object or null, got "abc"'),
        ("settings", MISSING, "missing"),
    ],
)
def test_a_results_file_is_checked_against_its_schema(tmp_path: Path, where: str, value: object,
                                                      problem: str) -> None:
    path = save(corrupted(where, value), tmp_path / "run.json")
    with pytest.raises(ResultsError) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path} is not a valid results file: {where}: {problem} (")


def test_what_a_newer_version_adds_is_ignored(tmp_path: Path) -> None:
    added = corrupted(f"{POST}.1.heatmap", [[0.1]])
    added["notes"] = ["new"]
    assert load(save(added, tmp_path / "run.json"))["notes"] == ["new"]


# --- comparing documents ------------------------------------------------------------------------------------------


def document(scores: dict[str, dict[int, float | None]], dataset_hash: str = "abc") -> ResultsDocument:
    """A complete results document, as a run builds it, with these scores; None marks a skipped post."""
    counts = score_post({"x"}, {"x"}).to_dict()
    results = [PostResult(tagger, post, "skipped", floor=-1.0, threshold=0.5, reason="image missing") if score is None
               else PostResult(tagger, post, "scored", floor=-1.0, threshold=0.5, counts={**counts, "score": score})
               for tagger, posts in scores.items() for post, score in posts.items()]
    dataset: DatasetIdentity = {"path": "data.db", "posts": 10, "content_sha256": dataset_hash, "metadata": {}}
    return build_document(results, {}, dataset, "all")


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
    assert [line.split()[-1] for line in format_comparison(list(rows.values()))[2:5]] == ["new", "ok", "run"]


def test_labels_from_a_file_cannot_rewrite_the_terminal() -> None:
    label = "t\x1b[2K\u202e"  # erase the line, then reverse what follows
    rows = compare(document({label: {1: 0.5, 2: 0.5}}), document({label: {1: 0.5, 2: 0.1}}))
    printed = "\n".join(format_comparison(rows) + failure_messages(rows))
    assert "\x1b" not in printed and "\u202e" not in printed
    assert printed.count("t\\x1b[2K\\u202e") == 2


def test_nothing_in_common_regresses() -> None:
    [row] = compare(document({"t": {1: 0.5}}), document({"t": {1: None}}))
    assert row.problems == ["no post scored in both runs"]


@pytest.mark.parametrize(("baseline", "new", "where", "posts"), [
    ({1: math.nan, 2: 0.5}, {1: 0.5, 2: 0.5}, "the baseline", "post 1 (nan)"),
    ({1: 0.5, 2: 0.5}, {1: 0.5, 2: -math.inf}, "this run", "post 2 (-inf)"),
    ({1: 0.5}, {1: 0.5, 3: math.inf}, "this run", "post 3 (inf)"),  # in one run only: still no pass
])
def test_a_non_finite_score_never_passes_the_gate(baseline: dict, new: dict, where: str, posts: str) -> None:
    """The run against its baseline is compared in memory, where no schema check stands between them."""
    problem = f"non-finite scores in {where}, which cannot be compared: {posts}"
    [row] = compare(document({"t": baseline}), document({"t": new}))
    assert row.regressed and row.problems == [problem]
    assert failure_messages([row]) == [f"t regressed: {problem}"]
    assert "REGRESSED" in format_comparison([row])[2]


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


def test_a_broken_baseline_is_a_usage_error(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=3)
    baseline = pytester.path / "baseline.json"
    assert run(pytester, "--tagger=control", f"--dataset={db_path}", f"--tagger-results={baseline}").ret == 0
    saved = json.loads(baseline.read_text())
    for change, message in (
        (lambda doc: doc["taggers"]["control"]["posts"]["2"].update(score=math.nan),
         "taggers.control.posts.2.score: expected a number in [[]-1,000,000, 1[]], got NaN"),
        (lambda doc: doc.update(taggers=list(doc["taggers"].values())), "taggers: expected an object *, got a list"),
    ):
        broken = json.loads(json.dumps(saved))
        change(broken)
        save(broken, baseline)
        result = run(pytester, "--tagger=control", f"--dataset={db_path}", f"--tagger-baseline={baseline}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--tagger-baseline: {baseline} is not a valid results file: {message}*"])
        assert "no regression" not in result.stdout.str()


@pytest.mark.parametrize(("which", "change", "message"), [
    ("new", lambda doc: doc["taggers"]["t"]["posts"]["2"].update(score=math.nan),
     "taggers.t.posts.2.score: expected a number in [-1,000,000, 1], got NaN"),
    ("old", lambda doc: doc["taggers"]["t"]["posts"]["1"].update(score=-math.inf), "posts.1.score: "),
    ("new", lambda doc: doc.update(taggers=list(doc["taggers"].values())), "taggers: expected an object"),
    ("old", lambda doc: doc["taggers"]["t"].pop("summary"), "taggers.t.summary: missing"),
])
def test_the_compare_command_refuses_a_broken_file_in_one_line(tmp_path: Path, capsys, which: str, change,
                                                                message: str) -> None:
    paths = {"old": tmp_path / "old.json", "new": tmp_path / "new.json"}
    for name, path in paths.items():
        saved = json.loads(json.dumps(document({"t": {1: 0.5, 2: 0.5}})))
        if name == which:
            change(saved)
        save(saved, path)
    assert cli_main(["compare", str(paths["old"]), str(paths["new"])]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no table, no "not run", no "ok"
    assert err.startswith(f"error: {paths[which]} is not a valid results file: ") and err.count("\n") == 1
    assert message in err


def test_the_compare_command_applies_the_same_rule(tmp_path: Path, capsys) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    save(document({"t": {1: 0.5, 2: 0.5}}), old)
    save(document({"t": {1: 0.5, 2: 0.1}}), new)
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
    # Without the store the first run filled: the workers infer every post again.
    second = pytester.runpytest_subprocess("--tagger=all", "--benchmark-disable", f"--tagger-results={parallel}",
                                           "-n", "2", "--dist", "loadgroup", "--no-tagger-store")
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
