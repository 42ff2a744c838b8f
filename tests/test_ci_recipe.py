"""The README's CI recipe, run as written, and the gate it relies on: the runtime gate (the median time per image
against the baseline's, with a relative tolerance and an absolute slack), the machines the runtimes come from, and
the settings two runs were made with (shown; another tag scope refused unless allowed)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tagger_eval.cli import main as cli_main
from tagger_eval.config import ConfigError, GateConfig, parse_run_config
from tagger_eval.records import DatasetIdentity, PostResult, ResultsDocument
from tagger_eval.reports.compare import compare, failure_messages, format_comparison, gate_report
from tagger_eval.reports.results import build_document, load, save
from tagger_eval.scoring.post_score import score_post

ROOT = Path(__file__).resolve().parents[1]
# The recipe as README.md ("Results of a run, regressions and reports") shows it.
RECIPE = """\
pytest --tagger=all --tagger-results=baseline.json          # on the main branch
pytest --tagger=all --tagger-baseline=baseline.json         # in CI: fails on a score or runtime regression
"""
SLEEPY = '''\
import os
import time

from tagger_eval.taggers import TaggerEntry
from tagger_eval.taggers.control import ControlTagger


class SleepyTagger(ControlTagger):
    """The control tagger, SLEEPY_MS milliseconds per image slower."""

    name = "sleepy"

    def predict(self, samples):
        time.sleep(len(samples) * float(os.environ["SLEEPY_MS"]) / 1000)
        return super().predict(samples)


ENTRY = TaggerEntry("sleepy", "the control tagger, slowed down", lambda argument, options: SleepyTagger())
'''
MACHINE = {"python": "3.12.1", "platform": "Linux-6.8-x86_64", "cpu_count": 4, "processor": "CPU A"}


# --- the recipe, end to end ---------------------------------------------------------------------------------------


def install_sleepy(site: Path) -> None:
    """What pip installs for a package registering the `sleepy` tagger through the `tagger_eval.taggers` entry
    point: its module and a .dist-info."""
    info = site / "sleepy_tagger-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sleepy-tagger\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tagger_eval.taggers]\nsleepy = sleepy_tagger:ENTRY\n")
    (site / "sleepy_tagger.py").write_text(SLEEPY)


def recipe_commands() -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in RECIPE.splitlines()]


def median_runtime(document: Mapping[str, Any], label: str) -> float:
    """The median time per image of a tagger's scored posts, in seconds, worked out from the document."""
    posts = document["taggers"][label]["posts"].values()
    return statistics.median(post["runtime_s"] for post in posts if post["status"] == "scored")


def table(lines: list[str], rows: int) -> list[str]:
    """The comparison's heading, the table's header and rule, and `rows` rows."""
    heading = next(i for i, line in enumerate(lines) if line.startswith("compared with the baseline"))
    return lines[heading:heading + 3 + rows]


def test_the_ci_recipe_passes_unchanged_code_and_fails_a_slower_tagger(tmp_path: Path, demo_subset,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    site, ci = tmp_path / "site", tmp_path / "ci"
    install_sleepy(site)
    ci.mkdir()
    dataset = f"--dataset={demo_subset(posts=12)}"
    pytest_script = Path(sys.executable).with_name("pytest")
    launcher = [str(pytest_script)] if pytest_script.exists() else [sys.executable, "-m", "pytest"]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}  # the recipe alone, not this suite's worker
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))

    def run(command: list[str], sleep_ms: int) -> subprocess.CompletedProcess[str]:
        assert command[0] == "pytest"
        return subprocess.run([*launcher, *command[1:], dataset], cwd=ci, env={**env, "SLEEPY_MS": str(sleep_ms)},
                              capture_output=True, text=True, timeout=300, check=False)

    on_main, in_ci = recipe_commands()
    stored = run(on_main, 25)
    assert stored.returncode == 0, stored.stdout[-3000:] + stored.stderr
    baseline = load(ci / "baseline.json")
    assert "sleepy" in baseline["taggers"] and "demo-histogram" in baseline["taggers"]

    same = run(in_ci, 25)
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr
    assert "no regression against the baseline" in same.stdout
    assert "Traceback" not in same.stdout + same.stderr

    slower = run(in_ci, 50)  # the same tagger, twice as slow per image
    assert slower.returncode == 1, slower.stdout[-3000:] + slower.stderr
    assert "Traceback" not in slower.stdout + slower.stderr
    new_path = max((ci / ".tagger-eval").glob("*.json"))  # the CI run's own autosaved results
    new = load(new_path)
    before, after = median_runtime(baseline, "sleepy"), median_runtime(new, "sleepy")
    ratio = after / before
    assert 1.8 < ratio < 2.2
    assert (f"sleepy regressed: median time per image rose from {before * 1000:.2f} ms to {after * 1000:.2f} ms "
            f"over 12 posts (x{ratio:.2f}, +{(after - before) * 1000:.2f} ms: past both limits, x1.5 and +10 ms)"
            ) in slower.stdout
    [row] = [line.split() for line in table(slower.stdout.splitlines(), len(new["taggers"]))
             if line.startswith("sleepy ")]
    assert row == ["sleepy", "1.0000", "1.0000", "+0.0000", "12", "0", "0", f"{before * 1000:.2f}",
                   f"{after * 1000:.2f}", f"{ratio:.2f}", "SLOWER"]
    assert slower.stdout.count(" regressed: ") == 1  # the other taggers did not

    # `tagger-eval compare` prints the same table and exits the same way.
    assert cli_main(["compare", str(ci / "baseline.json"), str(new_path)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert table(printed, len(new["taggers"])) == table(slower.stdout.splitlines(), len(new["taggers"]))


def test_the_readme_shows_the_recipe() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Results of a run"):readme.index("## Building a dataset")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert RECIPE in blocks


# --- the runtime gate, worked by hand -----------------------------------------------------------------------------


def timed(runtimes: Mapping[str, Mapping[int, float | None]], score: float = 1.0, scope: str = "all",
          machine: Mapping[str, Any] | None = MACHINE, thresholds: Mapping[str, float | None] | None = None,
          dataset_hash: str = "abc") -> ResultsDocument:
    """A complete results document as a run builds it: each post scored `score` in its runtime (None: skipped)."""
    counts = {**score_post({"x"}, {"x"}).to_dict(), "score": score}
    thresholds = thresholds or {}
    results = [PostResult(tagger, post, "skipped", floor=-1.0, threshold=thresholds.get(tagger, 0.5),
                          reason="image missing") if runtime is None
               else PostResult(tagger, post, "scored", floor=-1.0, threshold=thresholds.get(tagger, 0.5),
                               runtime_s=runtime, counts=counts)
               for tagger, posts in runtimes.items() for post, runtime in posts.items()]
    dataset: DatasetIdentity = {"path": "data.db", "posts": 10, "content_sha256": dataset_hash, "metadata": {}}
    document = build_document(results, {}, dataset, scope)
    document["settings"].update(expand_implications=False, metrics="off")
    if machine is None:
        del document["machine"]
    else:
        document["machine"] = dict(machine)
    return document


def same_times(seconds: float, posts: int = 3) -> dict[int, float | None]:
    return dict.fromkeys(range(1, posts + 1), seconds)


def test_the_runtime_columns_are_medians_over_the_posts_both_runs_scored() -> None:
    baseline = timed({"t": {1: 0.010, 2: 0.030, 3: 0.020, 4: 0.900, 5: 0.011}})
    new = timed({"t": {1: 0.012, 2: 0.031, 3: 0.019, 4: None, 6: 0.500, 5: 0.013}})
    shared = {"1", "2", "3", "5"}  # 4 skipped in the new run, 6 only in it
    expected = [statistics.median(entry["runtime_s"] for post, entry in document["taggers"]["t"]["posts"].items()
                                  if post in shared) for document in (baseline, new)]
    assert expected == [pytest.approx(0.0155), pytest.approx(0.016)]  # (0.011 + 0.020) / 2, (0.013 + 0.019) / 2
    [row] = compare(baseline, new)
    assert (row.baseline_runtime_s, row.new_runtime_s) == (expected[0], expected[1])
    assert not row.regressed and row.runtime_ratio == pytest.approx(expected[1] / expected[0])
    header, _, line = format_comparison([row])[:3]
    assert header.split() == ["tagger", "score", "base", "new", "delta", "posts", "worse", "better", "ms/image",
                              "base", "new", "ratio", "verdict"]
    assert line.split() == ["t", "1.0000", "1.0000", "+0.0000", "4", "0", "0", f"{expected[0] * 1000:.2f}",
                            f"{expected[1] * 1000:.2f}", f"{expected[1] / expected[0]:.2f}", "ok"]


def test_the_runtime_defaults() -> None:
    assert (GateConfig().runtime_tolerance, GateConfig().runtime_slack_ms) == (0.5, 10.0)


@pytest.mark.parametrize("gate", [GateConfig(runtime_slack_ms=0.0), GateConfig()], ids=["no slack", "defaults"])
def test_exactly_at_the_runtime_tolerance_passes_and_just_above_fails(gate: GateConfig) -> None:
    base = 0.1  # 100 ms per image: 50 ms more is past the default slack as well
    limit = base * (1 + gate.runtime_tolerance)
    baseline = timed({"t": same_times(base)})
    [at_limit] = compare(baseline, timed({"t": same_times(limit)}), gate)
    assert at_limit.new_runtime_s == limit and not at_limit.regressed
    [above] = compare(baseline, timed({"t": same_times(math.nextafter(limit, 1.0))}), gate)
    assert above.slower and above.problems == [
        f"median time per image rose from 100.00 ms to 150.00 ms over 3 posts (x1.50, +50.00 ms: past both limits, "
        f"x1.5 and +{gate.runtime_slack_ms:g} ms)"]
    assert format_comparison([above])[2].split()[-4:] == ["100.00", "150.00", "1.50", "SLOWER"]


def test_the_absolute_slack_keeps_fast_taggers_from_failing_on_noise() -> None:
    # A control-like tagger three times as slow, and a 1 ms tagger ten times as slow: under the 10 ms slack.
    [control] = compare(timed({"t": same_times(0.000_004)}), timed({"t": same_times(0.000_012)}))
    [fast] = compare(timed({"t": same_times(0.001)}), timed({"t": same_times(0.0109)}))
    assert not control.regressed and not fast.regressed and fast.runtime_ratio == pytest.approx(10.9)
    [past] = compare(timed({"t": same_times(0.001)}), timed({"t": same_times(0.0111)}))
    assert past.slower
    # At the slack exactly (500 ms, exact in binary) passes; just above fails.
    gate = GateConfig(runtime_slack_ms=500.0)
    baseline = timed({"t": same_times(0.25)})
    [at_slack] = compare(baseline, timed({"t": same_times(0.75)}), gate)
    [above] = compare(baseline, timed({"t": same_times(math.nextafter(0.75, 1.0))}), gate)
    assert at_slack.runtime_ratio == 3.0 and not at_slack.regressed
    assert above.slower


def test_a_slower_tagger_is_reported_beside_the_score_gate() -> None:
    baseline = timed({"fast": same_times(0.020), "both": same_times(0.020)}, score=0.5)
    new = timed({"fast": same_times(0.040), "both": same_times(0.040)}, score=0.5)
    new["taggers"]["both"]["posts"]["1"]["score"] = 0.2
    report = gate_report(baseline, new)
    assert report.refused is None
    rows = {row.tagger: row for row in report.rows}
    assert rows["fast"].problems == ["median time per image rose from 20.00 ms to 40.00 ms over 3 posts (x2.00, "
                                     "+20.00 ms: past both limits, x1.5 and +10 ms)"]
    assert rows["both"].problems[0].startswith("mean score fell from 0.5000 to 0.4000")
    assert rows["both"].problems[-1] == rows["fast"].problems[0]
    verdicts = {line.split()[0]: line.split("  ")[-1].strip() for line in format_comparison(report.rows)[2:]}
    assert verdicts == {"both": "REGRESSED, SLOWER", "fast": "SLOWER"}
    assert report.failures == failure_messages(report.rows) and len(report.failures) == 2
    assert report.failures[1].startswith("fast regressed: median time per image rose from 20.00 ms to 40.00 ms")
    assert report.lines[0] == ("compared with the baseline over the posts both runs scored (mean score; median time "
                               "per image):")


def test_runs_without_runtimes_show_none() -> None:
    [row] = compare(timed({"t": {1: None, 2: 0.5}}), timed({"t": {1: 0.5, 2: None}}))
    assert row.problems == ["no post scored in both runs"]
    assert format_comparison([row])[2].split()[-4:] == ["-", "-", "-", "REGRESSED"]


# --- machines -----------------------------------------------------------------------------------------------------


def test_runtimes_from_another_machine_are_shown_not_gated() -> None:
    baseline = timed({"t": same_times(0.020)})
    new = timed({"t": same_times(0.060)}, machine={**MACHINE, "cpu_count": 16, "processor": "CPU B"})
    report = gate_report(baseline, new)
    assert report.lines[0] == ("warning: the runs were timed on different machines (cpu_count 4 -> 16; processor "
                               "CPU A -> CPU B): their runtimes are shown, not gated (pass "
                               "--tagger-runtime-across-machines to gate them)")
    [row] = report.rows
    assert row.runtime_ratio == pytest.approx(3.0) and not row.regressed and not report.failures
    assert format_comparison([row])[2].split()[-4:] == ["20.00", "60.00", "3.00", "ok"]
    gated = gate_report(baseline, new, GateConfig(runtime_across_machines=True), flags="--")
    assert gated.lines[0].endswith("): their runtimes are gated anyway")
    assert gated.rows[0].slower and len(gated.failures) == 1


def test_a_machine_field_only_one_run_records_is_not_a_difference() -> None:
    older = {key: value for key, value in MACHINE.items() if key != "processor"}  # written before it was recorded
    [row] = compare(timed({"t": same_times(0.020)}, machine=older), timed({"t": same_times(0.060)}))
    assert row.slower


def test_a_baseline_without_its_machine_is_not_gated_on_runtime() -> None:
    report = gate_report(timed({"t": same_times(0.020)}, machine=None), timed({"t": same_times(0.060)}), flags="--")
    assert report.lines[0] == ("warning: the runs were timed on different machines (the baseline does not record "
                               "the machine it ran on): their runtimes are shown, not gated (pass "
                               "--runtime-across-machines to gate them)")
    assert not report.failures


# --- settings -----------------------------------------------------------------------------------------------------


def test_differing_settings_are_listed_above_the_table() -> None:
    baseline = timed({"wd": same_times(0.1), "pixel": same_times(0.1), "gone": same_times(0.1)})
    new = timed({"wd": same_times(0.1), "pixel": same_times(0.1)}, thresholds={"pixel": 0.4})
    new["settings"].update(expand_implications=True, metrics="full", soft_score_matching="max",
                           soft_score_similarity="cosine")
    new["taggers"]["wd"]["character_threshold"] = 0.9
    baseline["taggers"]["wd"]["character_threshold"] = 0.85
    new["taggers"]["wd"]["summary"]["threshold_profile"] = "macro-opt"
    report = gate_report(baseline, new)
    assert report.lines[:8] == [
        "settings that differ (baseline -> this run):",
        "  --expand-implications: off -> on",
        "  --tagger-metrics: off -> full",
        "  --soft-score-matching: (not recorded) -> max",
        "  --soft-score-similarity: (not recorded) -> cosine",
        "  --threshold of pixel: 0.5 -> 0.4",
        "  --character-threshold of wd: 0.85 -> 0.9",
        "  --threshold-profile of wd: none -> macro-opt",
    ]
    assert report.lines[8].startswith("compared with the baseline") and report.refused is None
    assert not report.failures  # a threshold is shown, not refused: the scores still compare
    assert gate_report(baseline, baseline).lines[0].startswith("compared with the baseline")  # nothing differs


def test_another_tag_scope_is_refused_unless_allowed() -> None:
    baseline, new = timed({"t": same_times(0.1)}), timed({"t": same_times(0.1)}, scope="general")
    assert compare(baseline, new) == []
    report = gate_report(baseline, new)
    assert report.refused == ("the baseline was evaluated with --tag-scope=all and this run with --tag-scope=general: "
                              "scores over different tags cannot be compared (pass --tagger-allow-different-scope to "
                              "compare them anyway)")
    assert report.lines == ["settings that differ (baseline -> this run):", "  --tag-scope: all -> general"]
    assert not report.rows and not report.failures
    allowed = gate_report(baseline, new, GateConfig(allow_different_scope=True))
    assert allowed.refused is None and allowed.lines[1] == "  --tag-scope: all -> general"
    assert [row.tagger for row in allowed.rows] == ["t"] and not allowed.failures


# --- the command and the options ----------------------------------------------------------------------------------


def saved(tmp_path: Path, name: str, document: ResultsDocument) -> str:
    return str(save(json.loads(json.dumps(document)), tmp_path / name))


def test_the_compare_command_gates_runtimes_and_refuses_another_scope(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    old = saved(tmp_path, "old.json", timed({"t": same_times(0.020)}))
    slower = saved(tmp_path, "slower.json", timed({"t": same_times(0.040)}))
    general = saved(tmp_path, "general.json", timed({"t": same_times(0.020)}, scope="general"))
    assert cli_main(["compare", old, slower]) == 1
    out = capsys.readouterr().out
    assert "t regressed: median time per image rose from 20.00 ms to 40.00 ms over 3 posts" in out
    assert cli_main(["compare", old, slower, "--runtime-tolerance", "1"]) == 0
    assert cli_main(["compare", old, slower, "--runtime-slack-ms", "20"]) == 0
    capsys.readouterr()
    assert cli_main(["compare", old, general]) == 2
    out, err = capsys.readouterr()
    assert out == "settings that differ (baseline -> this run):\n  --tag-scope: all -> general\n"
    assert err == ("error: the baseline was evaluated with --tag-scope=all and this run with --tag-scope=general: "
                   "scores over different tags cannot be compared (pass --allow-different-scope to compare them "
                   "anyway)\n")
    assert cli_main(["compare", old, general, "--allow-different-scope"]) == 0
    assert "  --tag-scope: all -> general" in capsys.readouterr().out
    other_machine = timed({"t": same_times(0.040)}, machine={**MACHINE, "processor": "CPU B"})
    elsewhere = saved(tmp_path, "elsewhere.json", other_machine)
    assert cli_main(["compare", old, elsewhere]) == 0
    assert "pass --runtime-across-machines to gate them" in capsys.readouterr().out
    assert cli_main(["compare", old, elsewhere, "--runtime-across-machines"]) == 1


def test_the_gate_options_parse_into_the_run_config() -> None:
    config = parse_run_config(["--tagger=control", "--tagger-runtime-tolerance=0.25", "--tagger-runtime-slack-ms=0",
                               "--tagger-allow-different-scope", "--tagger-runtime-across-machines"])
    assert config.gate == GateConfig(0.01, 0.1, 0.25, 0.0, True, True)
    assert parse_run_config(["--tagger=control"]).gate == GateConfig()
    with pytest.raises(ConfigError, match=r"--tagger-runtime-tolerance: must be at least 0\.0, got -1"):
        parse_run_config(["--tagger=control", "--tagger-runtime-tolerance=-1"])


# --- the pytest gate ----------------------------------------------------------------------------------------------


def test_the_pytest_gate_refuses_another_scope_unless_allowed(pytester: pytest.Pytester,
                                                              demo_subset: Callable[..., Path]) -> None:
    dataset = f"--dataset={demo_subset(posts=4)}"
    common = ["--benchmark-disable", "-p", "no:cacheprovider", "--tagger=control", dataset]
    assert pytester.runpytest(*common, "--tagger-results=baseline.json").ret == pytest.ExitCode.OK
    # Refused before any test runs: a usage error, not a whole run thrown away at the end.
    refused = pytester.runpytest(*common, "--tag-scope=general", "--tagger-baseline=baseline.json")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([
        "*--tagger-baseline: the baseline was evaluated with --tag-scope=all and this run with "
        "--tag-scope=general: * (pass --tagger-allow-different-scope to compare them anyway)",
    ])
    assert "compared with the baseline over" not in refused.stdout.str()
    allowed = pytester.runpytest(*common, "--tag-scope=general", "--tagger-baseline=baseline.json",
                                 "--tagger-allow-different-scope", "--threshold=0.4")
    assert allowed.ret == pytest.ExitCode.OK
    allowed.stdout.fnmatch_lines(["settings that differ (baseline -> this run):", "  --tag-scope: all -> general",
                                  "  --threshold of control: 0.5 -> 0.4", "compared with the baseline over*",
                                  "no regression against the baseline"])
