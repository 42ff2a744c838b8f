"""What a person sees at the end of an evaluation run: the leaderboard last, no per-post benchmark rows unless asked,
one line for the taggers `all` leaves out, a red last line when tagger-eval fails the run, a sign of life during a
slow model load, and the notices that keep the summary honest (nothing expanded, rare metrics n/a)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tagger_eval.config import parse_run_config
from tagger_eval.reports.leaderboard import not_run_line, summary_lines
from tagger_eval.reports.metrics_table import RARE_NOTE, metrics_table
from tagger_eval.run import plugin
from tagger_eval.taggers import TaggerEntry, registered
from tagger_eval.taggers.control import ControlTagger

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")

SUMMARY = "tagger-eval summary"
# A per-post row of pytest-benchmark's table (with the run it comes from when it compares).
BENCHMARK_ROW = re.compile(r"^test_post_score\[\S+-post\d+\]( \(\S+\))?\s+[\d,.]+ ")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MISSING = {"zz-missing-model": "model.onnx not in the Hugging Face cache; run `tagger-eval fetch zz-missing-model`",
           "zz-missing-package": 'onnxruntime is not installed: pip install "tagger-eval[onnx]"'}


@pytest.fixture
def benchmarks_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest-benchmark turns itself off inside an xdist worker, which this suite may itself run in."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)


def missing_entries() -> list[TaggerEntry]:
    """Taggers that cannot run here, so `--tagger=all` leaves them out whatever this machine has cached."""
    return [TaggerEntry(name, "a model that is not here", lambda _argument, _options: ControlTagger(),
                        unavailable_reason=lambda reason=reason: reason) for name, reason in MISSING.items()]


def summary_block(lines: Sequence[str]) -> list[str]:
    """The lines from the tagger-eval summary's header to the end."""
    return list(lines[next(index for index, line in enumerate(lines) if SUMMARY in line):])


def stats_line(lines: Sequence[str]) -> int:
    """The index of pytest's last summary line (`=== 32 passed in 0.4s ===`)."""
    return max(index for index, line in enumerate(lines) if re.fullmatch(r"=+ .*\d+ \w+.* in [\d.]+s.* =+", line))


# --- the leaderboard ends the output ---------------------------------------------------------------------------


def test_the_demo_run_ends_on_the_leaderboard_without_per_post_rows(pytester: pytest.Pytester, benchmarks_on: None,
                                                                     demo_subset) -> None:
    json_path = pytester.path / "bench.json"
    with registered(*missing_entries()):
        unavailable = parse_run_config(["--tagger=all"]).unavailable
        result = pytester.runpytest_inprocess("--tagger=all", f"--dataset={demo_subset(posts=8)}",
                                              "--no-tagger-results", f"--benchmark-json={json_path}")
    assert result.ret == pytest.ExitCode.OK
    lines = result.outlines
    assert not any(BENCHMARK_ROW.match(line) for line in lines)
    assert not any("benchmark '" in line or line.startswith("Name (time in") for line in lines)
    # ... while pytest-benchmark still timed and recorded every post.
    benchmarks = json.loads(json_path.read_text())["benchmarks"]
    assert len(benchmarks) == 4 * 8
    assert {benchmark["group"] for benchmark in benchmarks} == {"control", "demo-pixel", "demo-lowres",
                                                                "demo-histogram"}
    # The summary, then pytest's last line: nothing else after the leaderboard.
    block = summary_block(lines)
    end = stats_line(block)
    assert end == len(block) - 1 and "32 passed" in block[end]
    assert block[1].startswith("dataset: ") and block[2] == "tag scope: all"
    assert block[3].split()[:3] == ["tagger", "threshold", "posts"] and set(block[4]) == {"-", " "}
    assert [row.split()[0] for row in block[5:9]] == ["control", "demo-pixel", "demo-lowres", "demo-histogram"]
    assert block[9] == not_run_line(unavailable, width=len(block[3]))
    assert len(block) == 11
    assert len(lines) < 30  # the session header, one progress line, the summary


def test_the_full_demo_run_prints_a_screenful(pytester: pytest.Pytester, benchmarks_on: None) -> None:
    """`pytest --tagger=all` on the bundled demo (384 posts x taggers) printed 454 lines, 384 of them benchmark rows."""
    result = pytester.runpytest_inprocess("--tagger=all", "--no-tagger-results")
    assert result.ret == pytest.ExitCode.OK
    lines = result.outlines
    assert not any("test_post_score[" in line for line in lines)
    assert len(lines) <= 30
    block = summary_block(lines)
    assert len(block) <= 11 and stats_line(block) == len(block) - 1


def test_a_benchmark_display_option_shows_the_table_before_the_leaderboard(pytester: pytest.Pytester,
                                                                           benchmarks_on: None, demo_subset) -> None:
    result = pytester.runpytest_inprocess("--tagger=control,demo-pixel", f"--dataset={demo_subset(posts=3)}",
                                          "--no-tagger-results", "--benchmark-columns=min,mean")
    assert result.ret == pytest.ExitCode.OK
    lines = result.outlines
    rows = [index for index, line in enumerate(lines) if BENCHMARK_ROW.match(line)]
    assert len(rows) == 2 * 3
    assert any(line.startswith("Name (time in") for line in lines)
    summary = next(index for index, line in enumerate(lines) if SUMMARY in line)
    assert max(rows) < summary


def test_benchmarks_are_saved_and_compared_without_the_table(pytester: pytest.Pytester, benchmarks_on: None,
                                                             demo_subset) -> None:
    db_path = demo_subset(posts=3)
    common = ["--tagger=control", f"--dataset={db_path}", "--no-tagger-results"]
    first = pytester.runpytest_inprocess(*common, "--benchmark-autosave")
    assert first.ret == pytest.ExitCode.OK
    saved = list((pytester.path / ".benchmarks").rglob("*.json"))
    assert len(saved) == 1
    assert len(json.loads(saved[0].read_text())["benchmarks"]) == 3
    second = pytester.runpytest_inprocess(*common, "--benchmark-compare")
    assert second.ret == pytest.ExitCode.OK
    assert not any(BENCHMARK_ROW.match(line) for line in second.outlines)
    # Asked for, the table shows this run beside the saved one.
    third = pytester.runpytest_inprocess(*common, "--benchmark-compare", "--benchmark-sort=name")
    assert len([line for line in third.outlines if BENCHMARK_ROW.match(line)]) == 2 * 3


def test_a_runtime_regression_fails_the_run_and_says_so_last(pytester: pytest.Pytester, benchmarks_on: None,
                                                             demo_subset) -> None:
    """`--benchmark-compare-fail` still fails the run, after the leaderboard, with a line instead of a traceback."""
    from hooked_tagger import hooked_entry

    slow: list[float] = []
    db_path = demo_subset(posts=2)
    common = ["--tagger=clock", f"--dataset={db_path}", "--no-tagger-results"]
    with registered(hooked_entry("clock", lambda _samples: time.sleep(slow[0]) if slow else None)):
        assert pytester.runpytest_inprocess(*common, "--benchmark-autosave").ret == pytest.ExitCode.OK
        slow.append(0.05)
        result = pytester.runpytest_inprocess(*common, "--benchmark-compare", "--benchmark-compare-fail=min:100%")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["Performance has regressed:*"])
    lines = result.outlines
    assert lines[-1] == ("tagger-eval: run failed: pytest-benchmark: inference time regressed beyond "
                         "--benchmark-compare-fail (the benchmarks are listed above)")
    assert stats_line(lines) == len(lines) - 2
    assert any(SUMMARY in line for line in lines)


# --- taggers `all` leaves out ----------------------------------------------------------------------------------


def test_taggers_left_out_take_one_line_and_their_reasons_take_verbose(pytester: pytest.Pytester,
                                                                       demo_subset) -> None:
    db_path = demo_subset(posts=1)
    with registered(*missing_entries()):
        unavailable = parse_run_config(["--tagger=all"]).unavailable
        quiet = pytester.runpytest_inprocess("--tagger=all", f"--dataset={db_path}", "--no-tagger-results",
                                             "--benchmark-disable")
        verbose = pytester.runpytest_inprocess("--tagger=all", f"--dataset={db_path}", "--no-tagger-results",
                                               "--benchmark-disable", "-v")
    assert set(MISSING) <= set(unavailable)
    not_run = [line for line in quiet.outlines if line.startswith("not run:")]
    assert len(not_run) == 1
    count = len(unavailable)
    head = f"not run: {count} taggers cannot run here (why: -v or tagger-eval list): "
    assert not_run[0].startswith(head)
    assert not any(reason in quiet.stdout.str() for reason in MISSING.values())
    # Each name listed is one left out; those that do not fit are counted.
    listed, _, more = not_run[0].removeprefix(head).partition(", +")
    names = listed.split(", ")
    assert set(names) <= set(unavailable) and names == sorted(names)
    assert (int(more.removesuffix(" more")) if more else 0) == count - len(names)
    # -v: one line per tagger with its reason instead.
    verbose_lines = [line for line in verbose.outlines if line.startswith("not run:")]
    assert verbose_lines == [f"not run: {name}: {reason}" for name, reason in sorted(unavailable.items())]


def test_the_not_run_line_fits_its_width() -> None:
    names = {f"tagger-{index:02}": "not downloaded" for index in range(20)}
    line = not_run_line(names, width=100)
    assert len(line) <= 100 < len(not_run_line(names, width=10_000))
    assert line.startswith("not run: 20 taggers cannot run here (why: -v or tagger-eval list): tagger-00, tagger-01")
    assert line.endswith(" more")
    assert not_run_line({"only": "missing"}) == "not run: 1 tagger cannot run here (why: -v or tagger-eval list): only"
    everything = not_run_line(names, width=10_000)
    assert "more" not in everything and everything.endswith("tagger-18, tagger-19")


def test_summary_lines_list_each_reason_or_one_line() -> None:
    unavailable = {"b": "not downloaded", "a": "not installed"}
    detailed = summary_lines([], "data.db", "all", unavailable)
    assert detailed[-2:] == ["not run: a: not installed", "not run: b: not downloaded"]
    short = summary_lines([], "data.db", "all", unavailable, details=False)
    assert short[-1] == "not run: 2 taggers cannot run here (why: -v or tagger-eval list): a, b"
    assert summary_lines([], "data.db", "all", {}, details=False)[-1] == "no post was evaluated"


# --- a run tagger-eval fails ends on a red line ----------------------------------------------------------------


def test_a_failed_regression_gate_ends_on_a_red_line_naming_the_tagger(pytester: pytest.Pytester,
                                                                       demo_subset) -> None:
    db_path = demo_subset(posts=8)
    baseline = pytester.path / "baseline.json"
    common = ["--tagger=control,demo-pixel", f"--dataset={db_path}", "--benchmark-disable", "--color=yes"]
    first = pytester.runpytest(*common, f"--tagger-results={baseline}")
    assert first.ret == pytest.ExitCode.OK
    # The same threshold again passes the gate: pytest's green line stays last.
    same = pytester.runpytest(*common, f"--tagger-baseline={baseline}", "--no-tagger-results")
    assert same.ret == pytest.ExitCode.OK
    assert "32m" in same.outlines[-1] and "passed" in same.outlines[-1] and "31m" not in same.outlines[-1]
    assert "tagger-eval:" not in same.stdout.str()
    # A higher threshold predicts fewer of demo-pixel's (mostly right) tags: its mean score falls.
    worse = pytester.runpytest(*common, f"--tagger-baseline={baseline}", "--no-tagger-results",
                               "--threshold=demo-pixel=0.95")
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    lines = worse.outlines
    last = lines[-1]
    assert last.startswith("\x1b[31m\x1b[1m") and last.endswith("\x1b[0m")
    assert re.fullmatch(r"tagger-eval: regression gate failed: demo-pixel: mean score fell from \d\.\d{4} to "
                        r"\d\.\d{4} \(-\d\.\d{4}, tolerance 0\.01\)(; \d+ of 8 posts scored lower .*)?",
                        ANSI.sub("", last))
    # pytest's own last line, just before, is red although every test passed.
    stats = lines[-2]
    assert stats.startswith("\x1b[31m") and "16 passed" in ANSI.sub("", stats)
    assert "control" not in ANSI.sub("", last)



# --- model loads -----------------------------------------------------------------------------------------------


def test_a_slow_load_says_so_while_loading_and_then_its_time(pytester: pytest.Pytester, demo_subset,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "LOAD_NOTICE_AFTER_S", 0.2)
    written: list[str] = []
    write_now = plugin.write_now

    def recording(config: pytest.Config, line: str, **markup: bool) -> None:
        written.append(line)
        write_now(config, line, **markup)

    monkeypatch.setattr(plugin, "write_now", recording)

    def wait_for(notice: str) -> None:
        """The notice must come while the model loads: the load waits for it (and fails the test if it never comes)."""
        deadline = time.monotonic() + 5
        while notice not in written and time.monotonic() < deadline:
            time.sleep(0.01)
        assert notice in written, f"no {notice!r} during the load"

    def slow_model(_argument: str | None, _options: Any) -> ControlTagger:
        wait_for("loading slow ...")
        return ControlTagger()

    def slow_failure(_argument: str | None, _options: Any) -> ControlTagger:
        wait_for("loading slow-broken ...")
        raise RuntimeError("the weights are corrupt")

    with registered(TaggerEntry("slow", "a model that takes a while", slow_model),
                    TaggerEntry("slow-broken", "a slow model that fails", slow_failure)):
        result = pytester.runpytest_inprocess("--tagger=control,slow,slow-broken", f"--dataset={demo_subset(posts=2)}",
                                              "--benchmark-disable", "--no-tagger-results")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    lines = result.outlines
    loading = lines.index("loading slow ...")
    loaded = next(index for index, line in enumerate(lines) if re.fullmatch(r"loaded slow in \d+\.\d s", line))
    assert loading + 1 == loaded < next(index for index, line in enumerate(lines) if SUMMARY in line)
    assert "loading slow-broken ..." in lines
    assert any(re.fullmatch(r"slow-broken did not load \(\d+\.\d s\)", line) for line in lines)
    assert not any("loading control" in line or "loaded control" in line for line in lines)


def test_quick_loads_print_nothing(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=all", "--benchmark-disable", "--no-tagger-results")
    assert result.ret == pytest.ExitCode.OK
    assert not any(line.startswith(("loading ", "loaded ")) for line in result.outlines)


# --- notices that keep the summary honest ----------------------------------------------------------------------


def test_expanding_implications_a_dataset_has_none_of_says_nothing_was_expanded(pytester: pytest.Pytester,
                                                                                 demo_subset) -> None:
    db_path = demo_subset(posts=3)
    empty = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--expand-implications",
                               "--benchmark-disable", "--no-tagger-results")
    assert empty.ret == pytest.ExitCode.OK
    assert ("tag scope: all; --expand-implications: nothing expanded, the dataset has no active tag implications "
            "(`tagger-eval download --with-tag-relations` stores them)") in empty.outlines
    assert "truth expanded" not in empty.stdout.str()
    with sqlite3.connect(db_path) as connection:
        connection.execute("INSERT INTO tag_implications VALUES ('circle', 'round_shape', 'active')")
    connection.close()
    expanded = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--expand-implications",
                                  "--benchmark-disable", "--no-tagger-results")
    assert "tag scope: all; truth expanded with tag implications" in expanded.outlines
    assert "nothing expanded" not in expanded.stdout.str()


def test_an_empty_rare_category_shows_as_not_available_with_why(pytester: pytest.Pytester, demo_subset) -> None:
    result = pytester.runpytest("--tagger=control,demo-pixel", f"--dataset={demo_subset(posts=8)}",
                                "--tagger-metrics=full", "--benchmark-disable", "--no-tagger-results")
    assert result.ret == pytest.ExitCode.OK
    rare = [line.split() for line in result.outlines if re.match(r"\S+\s+rare\s", line)]
    assert rare == [["control", "rare", *["n/a"] * 8], ["demo-pixel", "rare", *["n/a"] * 8]]
    assert RARE_NOTE in result.outlines
    assert RARE_NOTE.startswith("rare n/a: no truth tag lies outside the 1,000 most frequent")


def metrics_entry(value: float) -> dict[str, Any]:
    point = {"pr_threshold": value, "f1": value, "f2": value, "mcc": value}
    return {"micro": point, "macro": point, "average_precision": {"macro": value, "micro": value}}


def test_the_rare_row_is_real_when_the_category_has_positives() -> None:
    extra = {"best_score_threshold": {"threshold": 0.5, "mean_score": 0.5}, "soft_score": {"mean": 0.5}}
    with_rare = {"a": {"all": metrics_entry(0.25), "rare": metrics_entry(0.125), **extra}}
    lines = metrics_table(with_rare, {"a": 0.5})
    assert lines[3].split() == ["a", "rare", *["0.125"] * 8]
    assert RARE_NOTE not in lines
    without = metrics_table({**with_rare, "b": {"all": metrics_entry(0.25), **extra}}, {"a": 0.5, "b": 0.4})
    assert [line.split()[:3] for line in without[2:6]] == [["a", "all", "0.250"], ["a", "rare", "0.125"],
                                                           ["b", "all", "0.250"], ["b", "rare", "n/a"]]
    assert without[6] == RARE_NOTE
