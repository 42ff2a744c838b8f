"""Shards of an evaluation (`--tagger-shard=I/N`) and their merge (`tagger-eval merge`): three shards merge into the
single run's results, and files that are not shards of one evaluation, or leave posts out, are refused."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import without_store_marks
from hypothesis import given
from hypothesis import strategies as st

from tagger_eval.cli import main as cli_main
from tagger_eval.config import ConfigError, parse_run_config
from tagger_eval.records import DatasetIdentity, PostResult, PostStatus, ResultsDocument
from tagger_eval.reports.merge import METRICS_NOT_MERGED, MergeError, merge
from tagger_eval.reports.results import build_document, load, save
from tagger_eval.scoring.post_score import score_post
from tagger_eval.shards import Shard

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")
TAGGERS = "--tagger=control,demo-pixel,demo-histogram"


# --- the option ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shard"), [("1/3", Shard(1, 3)), ("3/3", Shard(3, 3)), ("1/1", Shard(1, 1)),
                                             (" 2 / 3 ", Shard(2, 3)), ("12/40", Shard(12, 40))])
def test_a_shard_is_i_of_n_counted_from_one(text: str, shard: Shard) -> None:
    assert parse_run_config(["--tagger=control", f"--tagger-shard={text}"]).shard == shard
    assert str(shard) == text.replace(" ", "")


def test_no_shard_by_default() -> None:
    assert parse_run_config(["--tagger=control"]).shard is None


@pytest.mark.parametrize(("value", "message"), [
    ("0/3", "shards are numbered from 1 to N, got '0/3': the first shard is 1/3 (a 0-based index, such as "
            "Kubernetes' JOB_COMPLETION_INDEX, is passed as $((INDEX + 1))/3)"),
    ("4/3", "there is no shard 4 of 3: I must be from 1 to 3, got '4/3'"),
    ("1/0", "the number of shards must be at least 1, got '1/0'"),
    ("3", "expected I/N: shard I of N, I from 1 to N (such as 2/3), got '3'"),
    ("-1/3", "expected I/N: shard I of N, I from 1 to N (such as 2/3), got '-1/3'"),
    ("1/3/4", "expected I/N: shard I of N, I from 1 to N (such as 2/3), got '1/3/4'"),
    ("½/3", "expected I/N: shard I of N, I from 1 to N (such as 2/3), got '½/3'"),
])
def test_a_bad_shard_is_a_one_line_usage_error(pytester: pytest.Pytester, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="argument --tagger-shard: "):
        parse_run_config(["--tagger=control", f"--tagger-shard={value}"])
    result = pytester.runpytest("--tagger=control", f"--tagger-shard={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith(f": error: argument --tagger-shard: {message}")
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_more_shards_than_posts_is_a_usage_error(pytester: pytest.Pytester, demo_subset: Callable[..., Path]) -> None:
    db_path = demo_subset(3)
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--tagger-shard=4/4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --tagger-shard=4/4: the dataset has 3 posts, too few for 4 shards: shard 4/4 "
                                 "would evaluate none (use at most 3 shards)"])
    assert pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--tagger-shard=3/3",
                              "--benchmark-disable", "--no-tagger-results").ret == pytest.ExitCode.OK


@given(st.sets(st.integers(1, 10_000), min_size=1, max_size=60), st.integers(1, 12), st.randoms())
def test_shards_split_the_posts_evenly_and_deterministically(ids: set[int], count: int, rng: random.Random) -> None:
    order = sorted(ids)
    shuffled = rng.sample(order, len(order))
    shards = [Shard(index, count).select(order) for index in range(1, count + 1)]
    assert sorted(post for shard in shards for post in shard) == order  # every post once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced within one post
    assert [len(shard) for shard in shards] == [Shard(index, count).size(len(ids)) for index in range(1, count + 1)]
    for index, shard in enumerate(shards, 1):
        assert shard == order[index - 1 :: count]  # every Nth post in id order, from the Ith
        assert Shard(index, count).select(shuffled) == [post for post in shuffled if post in set(shard)]


# --- three shards end to end --------------------------------------------------------------------------------------


def test_three_shards_merge_into_the_single_run(pytester: pytest.Pytester, demo_subset: Callable[..., Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    db_path = demo_subset(10)
    common = [TAGGERS, f"--dataset={db_path}", "--benchmark-disable", "-p", "no:cacheprovider"]
    single_path = pytester.path / "single.json"
    assert pytester.runpytest(*common, f"--tagger-results={single_path}").ret == pytest.ExitCode.OK
    single = load(single_path)
    ids = sorted(map(int, single["taggers"]["control"]["posts"]))
    assert ids == list(range(1, 11))
    paths = []
    for index, expected in ((1, [1, 4, 7, 10]), (2, [2, 5, 8]), (3, [3, 6, 9])):
        path = pytester.path / f"shard{index}.json"
        result = pytester.runpytest(*common, f"--tagger-shard={index}/3", f"--tagger-results={path}")
        assert result.ret == pytest.ExitCode.OK
        result.assert_outcomes(passed=3 * len(expected))  # selected, not deselected: the counts are the shard's
        assert "deselected" not in result.stdout.str()
        result.stdout.fnmatch_lines([f"tagger-eval shard {index}/3: {len(expected)} of the dataset's 10 posts "
                                     f"(every 3rd post in id order, from the {['1st', '2nd', '3rd'][index - 1]})"])
        document = load(path)
        assert document["settings"]["shard"] == f"{index}/3"
        assert {label: sorted(map(int, tagger["posts"])) for label, tagger in document["taggers"].items()} == {
            label: expected for label in ("control", "demo-pixel", "demo-histogram")}
        paths.append(path)

    merged_path = pytester.path / "merged.json"
    assert cli_main(["merge", *map(str, paths), "-o", str(merged_path)]) == 0
    out, err = capsys.readouterr()
    assert f"wrote {merged_path}: 3 files, 3 taggers" in out and "control " in out  # the merged leaderboard
    assert err == ""  # nothing dropped, nothing missing
    merged = load(merged_path)
    assert "shard" not in merged["settings"]
    assert merged["machine"] == single["machine"]
    assert without_store_marks(merged) == without_store_marks(single)

    # The gate takes the merged results as it takes a single run's (runtimes aside: shards ran in turn).
    assert cli_main(["compare", str(single_path), str(merged_path), "--runtime-slack-ms=100000"]) == 0
    out, _ = capsys.readouterr()
    assert "settings that differ" not in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in
            single["taggers"]}
    assert {label: (row[4], row[-1]) for label, row in rows.items()} == {  # posts compared, verdict
        label: ("10", "ok") for label in single["taggers"]}


# --- the merge of documents ---------------------------------------------------------------------------------------

DATASET: DatasetIdentity = {"path": "data.db", "posts": 7, "content_sha256": "c0ffee" * 10 + "abcd",
                            "metadata": {"source": "test"}}
POSTS = list(range(11, 18))  # 7 posts: shards of 3 hold 3, 2 and 2


def post_results() -> list[PostResult]:
    """Two taggers on 7 posts: scored posts with varied scores and tags, one skipped and one error."""
    results = []
    for label, threshold in (("alpha", 0.5), ("beta", 0.3)):
        for post in POSTS:
            if post == 13 and label == "beta":
                results.append(PostResult(label, post, PostStatus.SKIPPED, 0.1, threshold, 0.85, reason="no image"))
                continue
            if post == 16:
                results.append(PostResult(label, post, PostStatus.ERROR, 0.1, threshold, 0.85, reason="ValueError"))
                continue
            truth = {"1girl", "solo", f"tag{post}", "rating:g"}
            predicted = {"1girl", f"tag{post * 3 % 5}", "rating:g" if post % 2 else "rating:s"} | (
                {"solo"} if label == "alpha" else set())
            counts = score_post(predicted, truth).to_dict()
            results.append(PostResult(label, post, PostStatus.SCORED, 0.1, threshold, 0.85, None,
                                      runtime_s=post / 1000, counts=counts, missed_tags=sorted(truth - predicted),
                                      wrong_tags=sorted(predicted - truth)))
    return results


def document(results: list[PostResult], shard: str | None = None) -> ResultsDocument:
    """A results document as a run writes it (`finish_run`'s settings), of these results only."""
    identities = {"alpha": {"implementation": "tests.Alpha", "version": "1"},
                  "beta": {"implementation": "tests.Beta", "model_sha256": "be" * 32}}
    made = build_document(results, identities, copy.deepcopy(DATASET), "all")
    made["settings"].update({"expand_implications": False, "metrics": "off"})
    if shard is not None:
        made["settings"]["shard"] = shard
    return made


def shard_documents(count: int = 3) -> list[ResultsDocument]:
    results = post_results()
    return [document([result for result in results if result.post in Shard(index, count).select(POSTS)],
                     f"{index}/{count}") for index in range(1, count + 1)]


def named(documents: list[ResultsDocument]) -> list[tuple[str, ResultsDocument]]:
    return [(f"s{index}.json", each) for index, each in enumerate(documents, 1)]


def without_time(made: ResultsDocument) -> dict[str, Any]:
    return {key: value for key, value in made.items() if key != "created_at"}


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_merge_into_the_whole_document(count: int) -> None:
    merged = merge(named(shard_documents(count)))
    assert merged.notes == [] and merged.missing == []
    # The per-post runtimes are the same here, so everything but the time matches: the summaries recomputed.
    assert without_time(merged.document) == without_time(document(post_results()))
    assert merged.document["taggers"]["beta"]["summary"]["skipped"] == 1
    assert merged.document["taggers"]["alpha"]["summary"]["errors"] == 1
    assert merged.document["created_at"] == max(each["created_at"] for each in shard_documents(count))


def test_the_merged_summary_is_recomputed_not_copied() -> None:
    shards = shard_documents()
    for shard in shards:  # summaries a merge must not trust: each shard's own
        shard["taggers"]["alpha"]["summary"]["mean_score"] = 0.123
    merged = merge(named(shards)).document
    assert merged["taggers"]["alpha"]["summary"] == document(post_results())["taggers"]["alpha"]["summary"]


def set_path(made: ResultsDocument, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target: Any = made
    for key in parents:
        target = target[key]
    target[last] = value


@pytest.mark.parametrize(("path", "value", "problem"), [
    ("dataset.content_sha256", "f" * 64, r"another dataset: 7 posts, content c0ffeec0ffee -> 7 posts, content ffff"),
    ("dataset.posts", 8, r"another dataset: 7 posts, content c0ffeec0ffee -> 8 posts"),
    ("tagger_eval_version", "9.9", r"another tagger-eval: 0\.1\.0 -> 9\.9"),
    ("commit", {"id": "b" * 40, "dirty": False}, None),  # the first records none: nothing to compare with
    ("settings.expand_implications", True, r"--expand-implications: off -> on"),
    ("settings.tag_scope", "general", r"--tag-scope: all -> general"),
    ("settings.metrics", "full", r"--tagger-metrics: off -> full"),
    ("taggers.beta.threshold", 0.4, r"--threshold of beta: 0\.3 -> 0\.4"),
    ("taggers.beta.character_threshold", 0.9, r"--character-threshold of beta: 0\.85 -> 0\.9"),
    ("taggers.alpha.summary.threshold_profile", "macro-opt", r"--threshold-profile of alpha: none -> macro-opt"),
    ("taggers.alpha.score_floor", 0.5, r"score_floor of alpha: 0\.1 -> 0\.5"),
    ("taggers.beta.identity", {"implementation": "tests.Beta", "model_sha256": "ff"},
     r"identity of beta: \{implementation: tests\.Beta, model_sha256: bebebe.*\} -> \{implementation: tests\.Beta, "
     r"model_sha256: ff\}"),
])
def test_files_of_another_evaluation_are_refused(path: str, value: Any, problem: str | None) -> None:
    shards = shard_documents()
    set_path(shards[2], path, value)
    if problem is None:
        assert merge(named(shards)).document["commit"] == {"id": "b" * 40, "dirty": False}
        return
    with pytest.raises(MergeError, match=rf"^s1\.json and s3\.json are not shards of one evaluation, so they are not "
                                         rf"merged: {problem}"):
        merge(named(shards))


def test_other_taggers_are_refused_under_the_shared_scope_only() -> None:
    shards = shard_documents()
    del shards[1]["taggers"]["beta"]
    assert merge(named(shards)).missing[0] == "beta: 2 of the dataset's 7 posts have no result"  # reported, merged
    for shard in shards:
        shard["settings"]["tag_scope"] = "shared"
    with pytest.raises(MergeError, match=r"^s1\.json and s2\.json .*: other taggers under --tag-scope=shared, where "
                                         r"the truth is the tags every selected tagger can output: alpha, beta -> "
                                         r"alpha$"):
        merge(named(shards))


def test_another_commit_is_refused_and_a_dirty_one_makes_the_merge_dirty() -> None:
    shards = shard_documents()
    for shard, dirty in zip(shards, (False, True, False), strict=True):
        shard["commit"] = {"id": "a" * 40, "dirty": dirty}
    assert merge(named(shards)).document["commit"] == {"id": "a" * 40, "dirty": True}
    shards[1]["commit"] = {"id": "b" * 40, "dirty": False}
    with pytest.raises(MergeError, match=r"s1\.json and s2\.json .*another commit: aaaaaaaaaaaa -> bbbbbbbbbbbb"):
        merge(named(shards))


def test_a_refused_merge_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = shard_documents()
    shards[1]["dataset"]["content_sha256"] = "f" * 64
    paths = [save(shard, tmp_path / f"s{index}.json") for index, shard in enumerate(shards, 1)]
    out = tmp_path / "all.json"
    assert cli_main(["merge", *map(str, paths), "-o", str(out)]) == 2
    assert not out.exists()
    assert capsys.readouterr().err.startswith(f"error: {paths[0]} and {paths[1]} are not shards of one evaluation")


def test_a_shard_setting_that_is_not_i_of_n_is_refused() -> None:
    shards = shard_documents()
    shards[1]["settings"]["shard"] = "0/3"
    with pytest.raises(MergeError, match=r"^s2\.json: settings\.shard: shards are numbered from 1 to N, got '0/3'"):
        merge(named(shards))


# --- missing and duplicated posts ---------------------------------------------------------------------------------


def test_a_shard_not_given_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, _, third = shard_documents()
    merged = merge(named([first, third]))
    assert merged.missing == [
        "no file holds shard 2/3: 2 of the dataset's 7 posts (every 3rd post in id order, from the 2nd)",
        "alpha: 2 of the dataset's 7 posts have no result",
        "beta: 2 of the dataset's 7 posts have no result",
    ]
    paths = [save(each, tmp_path / name) for name, each in (("a.json", first), ("c.json", third))]
    out = tmp_path / "all.json"
    assert cli_main(["merge", *map(str, paths), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    assert "  no file holds shard 2/3" in err
    assert err.endswith(f"error: not merged: posts are missing (above); give every shard's results, or pass "
                        f"--allow-missing to write {out} without them\n")
    assert cli_main(["merge", *map(str, paths), "-o", str(out), "--allow-missing"]) == 0
    assert sorted(map(int, load(out)["taggers"]["alpha"]["posts"])) == [11, 13, 14, 16, 17]


def test_a_tagger_missing_from_one_shard_and_a_shard_cut_short_are_named() -> None:
    shards = shard_documents()
    del shards[1]["taggers"]["beta"]  # it did not load there
    del shards[0]["taggers"]["alpha"]["posts"]["14"]  # the run stopped before its last post
    merged = merge(named(shards))
    assert merged.missing == [
        "alpha: 1 of the dataset's 7 posts have no result",
        "  s1.json (shard 1/3) holds 2 of its 3 posts: the run stopped early, or tests were deselected (-x, -k, "
        "--deselect, --lf)",
        "beta: 2 of the dataset's 7 posts have no result",
        "  s2.json (shard 2/3) has no result of it: it was not selected there, or did not load",
    ]


def test_a_post_twice_with_the_same_results_is_kept_once() -> None:
    shards = shard_documents()
    rerun = copy.deepcopy(shards[0])  # the same shard run again, its outputs read from the prediction store
    for tagger in rerun["taggers"].values():
        for entry in tagger["posts"].values():
            entry.update(runtime_s=9.0, from_store=True)
    merged = merge(named([*shards, rerun]))
    assert without_time(merged.document) == without_time(document(post_results()))  # s1.json's runtimes kept
    assert merged.missing == []
    assert merged.notes == [
        f"{label}: 3 posts are in both s1.json and s4.json with the same results: kept once, from s1.json (with its "
        "runtimes): 11, 14, 17" for label in ("alpha", "beta")]


def test_a_post_twice_with_different_results_is_refused() -> None:
    shards = shard_documents()
    other = copy.deepcopy(shards[1])
    other["taggers"]["beta"]["posts"]["12"]["score"] = 0.0
    with pytest.raises(MergeError, match=r"^two files hold different results for the same post, so they are not "
                                         r"merged .*: beta post 12 \(s2\.json, s4\.json\)$"):
        merge(named([*shards, other]))


def test_metrics_are_dropped_with_a_note() -> None:
    shards = shard_documents()
    for shard in shards:
        shard["settings"]["metrics"] = "full"
        for tagger in shard["taggers"].values():
            tagger["metrics"] = {"general": {"f1": 0.5}}
    merged = merge(named(shards))
    assert merged.notes == [METRICS_NOT_MERGED]
    assert all("metrics" not in tagger for tagger in merged.document["taggers"].values())
    assert merged.document["settings"]["metrics"] == "full"  # how the shards ran
    assert "run once with --tagger-metrics=full" in METRICS_NOT_MERGED


def test_runs_timed_on_different_machines_record_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = shard_documents()
    shards[2]["machine"] = {**shards[2]["machine"], "processor": "another CPU"}
    merged = merge(named(shards))
    assert "machine" not in merged.document
    assert merged.notes == ["the files were timed on different machines (or one records none): the merged results "
                            "record no machine, so `tagger-eval compare` shows their runtimes without gating them"]
    whole, joined = save(document(post_results()), tmp_path / "whole.json"), save(merged.document, tmp_path / "m.json")
    assert load(joined) == json.loads(joined.read_text())  # still a valid results file
    assert cli_main(["compare", str(whole), str(joined)]) == 0
    assert "this run does not record the machine it ran on" in capsys.readouterr().out
