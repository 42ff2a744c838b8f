"""The pytest plugin: options, fixtures and one-line hooks around `tagger_eval.run.evaluation`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger_eval.config import RUN_OPTIONS, RunConfig, TaggerSpec
from tagger_eval.data.dataset import DatasetError
from tagger_eval.records import PostResult, ResultsDocument
from tagger_eval.reports.compare import check_same_dataset
from tagger_eval.reports.leaderboard import summary_lines
from tagger_eval.reports.results import ResultsError
from tagger_eval.reports.results import load as load_results
from tagger_eval.run import post_tests
from tagger_eval.run.evaluation import Evaluation, LoadFailure, TaggerRun
from tagger_eval.run.outcome import CollectedRun, RunOutcome, finish_run
from tagger_eval.run.post_tests import Property
from tagger_eval.tags import printable

EVALUATION_KEY = pytest.StashKey[Evaluation]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tagger-eval", "evaluate image taggers against Danbooru tags")
    for option in RUN_OPTIONS:
        option.add_to(group.addoption)


def pytest_configure(config: pytest.Config) -> None:
    if not config.option.tagger:
        return
    try:
        run_config = RunConfig.from_options(config.option)
        evaluation = Evaluation(run_config)
    except (ValueError, DatasetError) as error:  # ConfigError and the registry's errors are ValueErrors
        raise pytest.UsageError(str(error)) from error
    config.stash[EVALUATION_KEY] = evaluation
    config.add_cleanup(evaluation.close)
    config.addinivalue_line("markers", "xdist_group(name): tests of one tagger stay on one pytest-xdist worker")
    try:
        # The controller reads the dataset's identity now: the results describe the dataset the run started on.
        baseline = None if hasattr(config, "workerinput") else _load_baseline(evaluation)
    except DatasetError as error:
        raise pytest.UsageError(str(error)) from error
    except ResultsError as error:
        raise pytest.UsageError(f"--tagger-baseline: {error}") from error
    config.pluginmanager.register(ResultCollector(evaluation, baseline), "tagger-eval-results")
    module = str(Path(post_tests.__file__))
    # `pytest --tagger=...` alone runs the evaluation instead of testpaths; explicit paths run beside it.
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args.append(module)
    else:
        config.args[:] = [module]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"tagger_run", "post_id"} - set(metafunc.fixturenames):
        return
    evaluation = metafunc.config.stash.get(EVALUATION_KEY, None)
    specs = evaluation.specs if evaluation else ()
    post_ids = evaluation.dataset.post_ids() if evaluation else []
    # One xdist group per tagger: with `--dist loadgroup` each model loads on one worker only.
    tagger_params = [pytest.param(spec, marks=pytest.mark.xdist_group(spec.label), id=spec.label) for spec in specs]
    metafunc.parametrize("tagger_run", tagger_params, indirect=True, scope="session")
    metafunc.parametrize("post_id", post_ids, ids=[f"post{post_id}" for post_id in post_ids])


def _tagger_spec(item: pytest.Item) -> TaggerSpec | None:
    """The tagger an evaluation test runs, from its parameters."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    spec = params.get("tagger_run")
    return spec if isinstance(spec, TaggerSpec) and "post_id" in params else None


def pytest_collection_finish(session: pytest.Session) -> None:
    evaluation = session.config.stash.get(EVALUATION_KEY, None)
    if evaluation is None:
        return
    orders: dict[str, list[int]] = {}  # per tagger, its tests' post ids in the order they will run
    for item in session.items:
        if (spec := _tagger_spec(item)) is not None:
            orders.setdefault(spec.label, []).append(item.callspec.params["post_id"])  # type: ignore[attr-defined]
    evaluation.orders = orders


@pytest.fixture(scope="session")
def tagger_evaluation(pytestconfig: pytest.Config) -> Evaluation:
    try:
        return pytestconfig.stash[EVALUATION_KEY]
    except KeyError:
        pytest.skip("no tagger selected: pass --tagger=NAME[,NAME...] or --tagger=all")


@pytest.fixture(scope="session")
def tagger_run(request: pytest.FixtureRequest, tagger_evaluation: Evaluation) -> Iterator[TaggerRun | LoadFailure]:
    """The tagger under evaluation, loaded once and released when its tests are done. One that cannot be loaded is
    a `LoadFailure`: one error in its first test, not a traceback in every one (a failing fixture's)."""
    try:
        run = tagger_evaluation.load(request.param)
    except Exception as error:
        yield LoadFailure.of(request.param.label, error)
        return
    yield run
    run.close()


def _load_baseline(evaluation: Evaluation) -> ResultsDocument | None:
    identity = evaluation.identity
    path = evaluation.config.output.baseline
    if path is None:
        return None
    baseline = load_results(path)
    check_same_dataset(baseline["dataset"], identity)
    return baseline


class ResultCollector:
    """Gathers every (tagger, post) result from the test reports, so it also sees those of xdist workers."""

    def __init__(self, evaluation: Evaluation, baseline: ResultsDocument | None) -> None:
        self.evaluation = evaluation
        self.baseline = baseline
        self.collected = CollectedRun()
        self.outcome: RunOutcome | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        collected = self.collected
        value: Any
        for name, value in report.user_properties:
            if name == Property.RESULT and report.when == "call":
                collected.results.append(PostResult.from_dict(value))
            elif name == Property.IDENTITY and report.when == "call":
                collected.identities.update(value)
            elif name == Property.TAG_COUNTS and report.when == "call":
                collected.tag_counts.update(value)
            elif name == Property.LOAD_ERROR and report.when == "call":
                collected.load_error(*value)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if hasattr(config, "workerinput") or not self.collected.results:
            return
        self.outcome = finish_run(self.evaluation, self.collected, self.baseline, rootdir=config.rootpath)
        if self.outcome.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's per-post table, so the leaderboard ends the output
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        if hasattr(config, "workerinput"):  # xdist workers: the controller prints the summary
            return
        terminalreporter.write_sep("=", "tagger-eval summary")
        run_config = self.evaluation.config
        for line in summary_lines(self.collected.results, str(self.evaluation.dataset_path), run_config.scope,
                                  run_config.unavailable, run_config.expand_implications):
            terminalreporter.write_line(line)
        for label, (count, reason) in sorted(self.collected.load_errors.items()):
            terminalreporter.write_line(f"could not load: {printable(label)} ({count} tests not evaluated): "
                                        f"{printable(reason)}", red=True)
        if self.outcome and self.outcome.lines:
            terminalreporter.write_line("")
            for line in self.outcome.lines:
                terminalreporter.write_line(line, red=line in self.outcome.failures)
