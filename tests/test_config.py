"""`tagger_eval.config`: options parsed once, into one frozen `RunConfig`; bad values refused before any test runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tagger_eval import cli
from tagger_eval.config import (
    RUN_OPTIONS,
    ConfigError,
    ExecutionProvider,
    GateConfig,
    MetricsMode,
    PerTagger,
    RunConfig,
    TaggerSpec,
    parse_run_config,
    run_parser,
)
from tagger_eval.scoring.scope import TagScope
from tagger_eval.scoring.tag_distance import SimilarityMeasure, SoftScoreMatching


def test_every_option_lands_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text("{}")
    config = parse_run_config([
        "--tagger=control,demo-pixel", f"--dataset={tmp_path / 'data.db'}", "--threshold=0.4",
        "--threshold=demo-pixel=0.6", "--score-floor=-1", "--character-threshold=demo-pixel=0.9",
        "--tag-scope=general+character", "--expand-implications", "--tagger-metrics=full",
        "--soft-score-matching=one-to-one", "--soft-score-similarity=jaccard", "--execution-provider=cpu",
        "--tagger-batch-size=8", "--tagger-threads=2", "--http-timeout=2.5", f"--tagger-results={tmp_path / 'r.json'}",
        f"--tagger-baseline={tmp_path / 'b.json'}", "--tagger-tolerance=0.05", "--tagger-max-worse=0.2",
        f"--tagger-report={tmp_path / 'report'}",
    ])
    assert config.taggers == (TaggerSpec("control"), TaggerSpec("demo-pixel"))
    assert config.dataset == tmp_path / "data.db"
    assert config.thresholds == PerTagger(0.4, {"demo-pixel": 0.6})
    assert config.floors == PerTagger(-1.0, {})
    assert config.character_thresholds == PerTagger(None, {"demo-pixel": 0.9})
    assert (config.scope, config.expand_implications, config.metrics) == (TagScope.GENERAL_CHARACTER, True,
                                                                          MetricsMode.FULL)
    assert (config.soft_score_matching, config.soft_score_similarity) == (SoftScoreMatching.ONE_TO_ONE,
                                                                          SimilarityMeasure.JACCARD)
    assert config.tagger_options.execution_provider == ExecutionProvider.CPU
    assert (config.tagger_options.threads, config.tagger_options.http_timeout, config.batch_size) == (2, 2.5, 8)
    assert config.output.results_path == tmp_path / "r.json" and config.output.autosave
    assert config.output.baseline == tmp_path / "b.json"
    assert config.output.report_dir == tmp_path / "report"
    assert config.gate == GateConfig(0.05, 0.2)


def test_defaults() -> None:
    config = parse_run_config(["--tagger=control"])
    assert config.dataset is None and config.scope == TagScope.ALL and config.metrics == MetricsMode.OFF
    assert config.gate == GateConfig() and config.batch_size is None and config.output.autosave
    assert config.thresholds.pick(TaggerSpec("control"), 0.5) == 0.5


def test_output_paths_are_checked_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"--tagger-report: .*README.md is a file; give a directory"):
        parse_run_config(["--tagger=control", f"--tagger-report={tmp_path / 'README.md'}"])
    with pytest.raises(ConfigError, match=r"--tagger-results: .* is a directory; give a file path"):
        parse_run_config(["--tagger=control", f"--tagger-results={tmp_path}"])
    with pytest.raises(ConfigError, match=r"--tagger-baseline: .*old.json is not a file"):
        parse_run_config(["--tagger=control", f"--tagger-baseline={tmp_path / 'old.json'}"])
    assert parse_run_config(["--tagger=control", f"--tagger-results={tmp_path}", "--no-tagger-results"])


def test_the_config_is_frozen() -> None:
    config = parse_run_config(["--tagger=control"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 4  # type: ignore[misc]


@pytest.mark.parametrize(("argument", "message"), [
    ("--tagger-batch-size=0", "--tagger-batch-size: must be at least 1, got 0"),
    ("--tagger-threads=-2", "--tagger-threads: must be at least 1, got -2"),
    ("--http-timeout=0", "--http-timeout: must be at least"),
    ("--http-timeout=soon", "--http-timeout: expected a number, got 'soon'"),
    ("--tagger-tolerance=-0.1", "--tagger-tolerance: must be at least 0.0, got -0.1"),
    ("--tagger-max-worse=1.5", r"--tagger-max-worse: must be in \[0.0, 1.0\], got 1.5"),
    ("--tagger-max-worse=nan", r"--tagger-max-worse: must be in \[0.0, 1.0\], got nan"),
    ("--score-floor=nan", "--score-floor: expected a number, got 'nan'"),
    ("--character-threshold=1", r"--character-threshold: a threshold must be in \[0, 1\)"),
    ("--tagger-metrics=some", "--tagger-metrics: unknown MetricsMode 'some'; expected one of off, full"),
    ("--execution-provider=tpu", "--execution-provider: unknown ExecutionProvider 'tpu'; expected one of auto, cpu"),
    ("--soft-score-matching=greedy", "unknown SoftScoreMatching 'greedy'; expected one of max, one-to-one"),
    ("--no-such-option", "unknown options: --no-such-option"),
])
def test_bad_values_are_config_errors_naming_the_option(argument: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config(["--tagger=control", argument])


def test_a_per_tagger_value_must_name_a_selected_tagger_by_name_or_label() -> None:
    config = parse_run_config(["--tagger=control,demo-pixel", "--score-floor=demo-pixel=0.1"])
    assert config.floors.pick(TaggerSpec("demo-pixel"), 0.2) == 0.1
    assert config.floors.pick(TaggerSpec("control"), 1.0) == 1.0
    with pytest.raises(ConfigError, match=r"--character-threshold: 'demo-lowres' is not a selected tagger"):
        parse_run_config(["--tagger=control", "--character-threshold=demo-lowres=0.5"])


def test_per_tagger_pick_prefers_the_label_then_the_name_then_the_global_value() -> None:
    values = PerTagger(0.3, {"wd14-onnx": 0.4, "wd14-onnx:/models/a": 0.5})
    assert values.pick(TaggerSpec("wd14-onnx", "/models/a"), 0.35) == 0.5
    assert values.pick(TaggerSpec("wd14-onnx", "/models/b"), 0.35) == 0.4
    assert values.pick(TaggerSpec("control"), 0.35) == 0.3
    assert PerTagger().pick(TaggerSpec("control"), 0.35) == 0.35


def test_the_tagger_selection_can_come_from_another_registry() -> None:
    """`select` is the seam between options and the registry: the config never reads a global itself."""
    seen: list[list[str]] = []

    def select(values: list[str]) -> tuple[list[TaggerSpec], dict[str, str]]:
        seen.append(values)
        return [TaggerSpec("mine", "x")], {"other": "not installed"}

    config = RunConfig.from_options(run_parser().parse_args(["--tagger=mine:x"]), select)
    assert seen == [["mine:x"]]
    assert config.taggers == (TaggerSpec("mine", "x"),) and config.unavailable == {"other": "not installed"}


def test_pytest_and_the_cli_share_the_declarations(pytester: pytest.Pytester) -> None:
    """Each run option is declared once: pytest's --help shows every one, and the bad value is a usage error."""
    help_text = pytester.runpytest("--help").stdout.str()
    for option in RUN_OPTIONS:
        assert option.flag in help_text
    result = pytester.runpytest("--tagger=control", "--tagger-max-worse=2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tagger-max-worse: must be in [[]0.0, 1.0[]], got 2*"])


@pytest.mark.parametrize(("argument", "message"), [
    ("--tagger-threads=0", "argument --tagger-threads: must be at least 1, got 0"),
    ("--http-timeout=0", "argument --http-timeout: must be at least 0.001, got 0"),
    ("--http-timeout=inf", "argument --http-timeout: expected a finite number, got 'inf'"),
])
def test_a_bad_number_is_a_one_line_pytest_usage_error(pytester: pytest.Pytester, argument: str, message: str) -> None:
    result = pytester.runpytest("--tagger=control", argument)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith(f": error: {message}")  # after the program's name
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(("arguments", "message"), [
    (["--max-worse", "5"], "tagger-eval compare: error: argument --max-worse: must be in [0.0, 1.0], got 5"),
    (["--tolerance=inf"], "tagger-eval compare: error: argument --tolerance: expected a finite number, got 'inf'"),
])
def test_compare_refuses_a_bad_gate_naming_the_option(capsys: pytest.CaptureFixture[str], arguments: list[str],
                                                      message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "old.json", "new.json", *arguments])
    assert exit_info.value.code == 2
    assert [line for line in capsys.readouterr().err.splitlines() if "error:" in line] == [message]
