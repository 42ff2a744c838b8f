"""The pytest plugin: options, fixtures and one-line hooks around `tagger_eval.run.evaluation`.

What a run prints is made to end on the leaderboard: pytest-benchmark's per-post table is hidden unless one of its
display options asks for it (`BENCHMARK_DISPLAY_OPTIONS`), the taggers `all` left out take one line (each with its
reason under `-v`), a slow model load says so while it loads (`LoadNotice`), and a run that fails for tagger-eval's
own reasons (the regression gate, results not saved) ends on a red line saying why, after pytest's last line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tagger_eval.config import RUN_OPTIONS, RunConfig, TaggerSpec
from tagger_eval.data.dataset import DatasetError
from tagger_eval.records import PostResult, ResultsDocument
from tagger_eval.reports.compare import check_same_dataset, scope_refusal
from tagger_eval.reports.explorer import explorer_lines
from tagger_eval.reports.leaderboard import summary_lines
from tagger_eval.reports.results import ResultsError
from tagger_eval.reports.results import load as load_results
from tagger_eval.run import post_tests
from tagger_eval.run.evaluation import Evaluation, LoadFailure, TaggerRun
from tagger_eval.run.outcome import CollectedRun, RunOutcome, finish_run
from tagger_eval.run.post_tests import Property
from tagger_eval.tags import printable

EVALUATION_KEY = pytest.StashKey[Evaluation]()
LOAD_NOTICE_AFTER_S = 0.5  # a tagger load that takes longer prints `loading LABEL ...`, then its time
# pytest-benchmark's options that shape or add to its table, with their defaults: given any other value, an
# evaluation run shows the per-post table; by default it hides it (the leaderboard has each tagger's ms/image).
BENCHMARK_DISPLAY_OPTIONS: dict[str, object] = {
    "benchmark_columns": None, "benchmark_sort": "min", "benchmark_group_by": "group", "benchmark_name": "normal",
    "benchmark_time_unit": None, "benchmark_histogram": [], "benchmark_cprofile": None, "benchmark_verbose": False,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tagger-eval", "evaluate image taggers against Danbooru tags")
    for option in RUN_OPTIONS:
        option.add_to(group.addoption)


def pytest_configure(config: pytest.Config) -> None:
    if not config.option.tagger:
        return
    try:
        run_config = RunConfig.from_options(config.option)
        evaluation = Evaluation(run_config, rootdir=config.rootpath)  # the default prediction store lies there
    except (ValueError, DatasetError) as error:  # ConfigError and the registry's errors are ValueErrors
        raise pytest.UsageError(str(error)) from error
    config.stash[EVALUATION_KEY] = evaluation
    config.add_cleanup(evaluation.close)
    _check_shard(evaluation)
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
    post_ids = _post_ids(evaluation) if evaluation else []
    # One xdist group per tagger: with `--dist loadgroup` each model loads on one worker only.
    tagger_params = [pytest.param(spec, marks=pytest.mark.xdist_group(spec.label), id=spec.label) for spec in specs]
    metafunc.parametrize("tagger_run", tagger_params, indirect=True, scope="session")
    metafunc.parametrize("post_id", post_ids, ids=[f"post{post_id}" for post_id in post_ids])


def _post_ids(evaluation: Evaluation) -> list[int]:
    """The posts this run evaluates, for every tagger: the dataset's, or with `--tagger-shard` its shard's. Selected
    here rather than deselected after collection, so the counts pytest prints are this shard's tests."""
    post_ids = evaluation.dataset.post_ids()
    shard = evaluation.config.shard
    return post_ids if shard is None else shard.select(post_ids)


def _check_shard(evaluation: Evaluation) -> None:
    """A shard with no post would pass having evaluated nothing, and write no results for `tagger-eval merge`."""
    shard, posts = evaluation.config.shard, len(evaluation.dataset)
    if shard is not None and shard.size(posts) == 0:
        raise pytest.UsageError(f"--tagger-shard={shard}: the dataset has {posts} posts, too few for {shard.count} "
                                f"shards: shard {shard} would evaluate none (use at most {posts} shards)")


def pytest_report_header(config: pytest.Config) -> str | None:
    """`tagger-eval shard 2/3: 32 of the dataset's 96 posts (every 3rd post in id order, from the 2nd)`."""
    evaluation = config.stash.get(EVALUATION_KEY, None)
    if evaluation is None or evaluation.config.shard is None:
        return None
    return f"tagger-eval {evaluation.config.shard.describe(len(evaluation.dataset))}"


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
        with LoadNotice(request.config, request.param.label):
            run = tagger_evaluation.load(request.param)
    except Exception as error:
        yield LoadFailure.of(request.param.label, error)
        return
    yield run
    run.close()


def write_now(config: pytest.Config, line: str, **markup: bool) -> None:
    """One line on the terminal, even from inside a test (past pytest's output capture)."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        terminal.write_line(line, **markup)


class LoadNotice:
    """A sign of life during a long model load: `loading LABEL ...` once the load has taken LOAD_NOTICE_AFTER_S,
    then `loaded LABEL in 3.2 s`. A quicker load (the demo taggers') prints nothing.

    The first line comes from a timer thread while the load runs; a load that holds the GIL throughout (a C
    extension building its model) delays it to the end, where both lines come together."""

    def __init__(self, config: pytest.Config, label: str) -> None:
        self.config = config
        self.label = printable(label)
        self._lock = threading.Lock()
        self._done = False
        self._shown = False
        self._start = 0.0
        self._timer = threading.Timer(LOAD_NOTICE_AFTER_S, self._loading)
        self._timer.daemon = True

    def __enter__(self) -> LoadNotice:
        self._start = time.perf_counter()
        self._timer.start()
        return self

    def _loading(self) -> None:
        with self._lock:
            if not self._done:
                self._shown = True
                write_now(self.config, f"loading {self.label} ...")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:  # a notice being written is finished first
            self._done = True
            if self._shown:
                seconds = time.perf_counter() - self._start
                write_now(self.config, f"loaded {self.label} in {seconds:.1f} s" if error is None
                          else f"{self.label} did not load ({seconds:.1f} s)")


def hide_benchmark_table(config: pytest.Config) -> None:
    """pytest-benchmark's per-post table (one row per post, 200 characters wide) is hidden unless one of its display
    options asks for it. Only the display is off: benchmarks are still timed, saved (`--benchmark-autosave`,
    `--benchmark-json`), compared, and a `--benchmark-compare-fail` regression is still reported and fails the run."""
    benchmarks = config.pluginmanager.get_plugin("pytest-benchmark")  # its BenchmarkSession, when it is active
    if benchmarks is None or not hasattr(benchmarks, "quiet"):
        return
    if all(config.getoption(name, default) == default for name, default in BENCHMARK_DISPLAY_OPTIONS.items()):
        benchmarks.quiet = True  # read by `BenchmarkSession.display` only; its logger keeps its level


def _load_baseline(evaluation: Evaluation) -> ResultsDocument | None:
    identity = evaluation.identity
    path = evaluation.config.output.baseline
    if path is None:
        return None
    baseline = load_results(path)
    check_same_dataset(baseline["dataset"], identity)
    # Scores over other tags are not comparable: refused before any test runs, not after the whole run.
    if (refusal := scope_refusal(baseline, evaluation.config.scope, evaluation.config.gate)) is not None:
        raise ResultsError(refusal)
    return baseline


class ResultCollector:
    """Gathers every (tagger, post) result from the test reports, so it also sees those of xdist workers."""

    def __init__(self, evaluation: Evaluation, baseline: ResultsDocument | None) -> None:
        self.evaluation = evaluation
        self.baseline = baseline
        self.collected = CollectedRun()
        self.outcome: RunOutcome | None = None
        self.session: pytest.Session | None = None
        self.benchmark_regressed = False  # `--benchmark-compare-fail` failed

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        hide_benchmark_table(session.config)  # pytest-benchmark's session exists now (its configure runs last)

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

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter,
                                config: pytest.Config) -> Generator[None]:
        """The summary comes after every other plugin's (pytest-benchmark's table, when shown), so the leaderboard
        ends the output; and it comes even when one of them raises (pytest-benchmark's `PerformanceRegression`)."""
        try:
            return (yield)
        except Exception as error:
            from pytest_benchmark.session import PerformanceRegression

            if not isinstance(error, PerformanceRegression) or self.session is None:
                raise
            # pytest-benchmark has listed the regressed benchmarks; its exception would end the run on a traceback
            # before pytest's last line. The run fails as it would have, and says why at the end.
            self.benchmark_regressed = True
            self._fail_session(terminalreporter)
            return None
        finally:
            self._summary(terminalreporter, config)

    def _summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        if hasattr(config, "workerinput"):  # xdist workers: the controller prints the summary
            return
        if config.get_verbosity() > 0 and self.outcome is not None:  # where each tagger goes wrong, before the table
            terminalreporter.write_sep("=", "tagger-eval: where the taggers go wrong")
            for line in explorer_lines(self.outcome.document):
                terminalreporter.write_line(line)
        terminalreporter.write_sep("=", "tagger-eval summary")
        run_config = self.evaluation.config
        for line in summary_lines(self.collected.results, str(self.evaluation.dataset_path), run_config.scope,
                                  run_config.unavailable, run_config.expand_implications,
                                  implied_tags=self._implied_tags(), details=config.get_verbosity() > 0):
            terminalreporter.write_line(line)
        for label, (count, reason) in sorted(self.collected.load_errors.items()):
            terminalreporter.write_line(f"could not load: {printable(label)} ({count} tests not evaluated): "
                                        f"{printable(reason)}", red=True)
        if self.outcome and self.outcome.lines:
            if self.outcome.lines[0]:
                terminalreporter.write_line("")
            for line in self.outcome.lines:
                terminalreporter.write_line(line, red=line in self.outcome.failures)
        if self.outcome and self.outcome.failed:
            self._fail_session(terminalreporter)

    def _fail_session(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.session is not None and self.session.exitstatus == pytest.ExitCode.OK:
            self.session.exitstatus = pytest.ExitCode.TESTS_FAILED
        # pytest's last line ("96 passed in 1.2s") is red when its stats hold a "failed" entry: an empty one makes it
        # red without counting a test.
        terminalreporter.stats.setdefault("failed", [])

    def _implied_tags(self) -> int | None:
        """How many tags the dataset's implications expand, when the run expands them."""
        if not self.evaluation.config.expand_implications:
            return None
        try:
            return len(self.evaluation.truth_options().implications)
        except Exception:  # `shared` scope reads the vocabularies here when no tagger loaded: the summary goes on
            return None

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """After pytest's last line, a red line per reason tagger-eval failed the run (its exit status is 1 while
        every test may have passed)."""
        if hasattr(config, "workerinput"):
            return
        for line in self.final_lines():
            write_now(config, line, red=True, bold=True)

    def final_lines(self) -> list[str]:
        """`tagger-eval: regression gate failed: TAGGER: WHY` per regressed tagger, then `tagger-eval: run failed:
        WHY` for any other reason the run failed beside its tests (results not saved, no post scored, a runtime
        regression); each one line. Empty when the run did not fail for such a reason."""
        lines: list[str] = []
        if self.outcome is not None and self.outcome.failed:
            gate_messages: set[str] = set()
            if (gate := self.outcome.gate) is not None:  # each regressed tagger's reasons, from the comparison made
                lines += [f"tagger-eval: regression gate failed: {printable(row.tagger)}: {'; '.join(row.problems)}"
                          for row in gate.rows if row.regressed]
                gate_messages = set(gate.failures)
            lines += [f"tagger-eval: run failed: {(message.splitlines() or [''])[0]}"
                      for message in self.outcome.failures if message not in gate_messages]
        if self.benchmark_regressed:
            lines.append("tagger-eval: run failed: pytest-benchmark: inference time regressed beyond "
                         "--benchmark-compare-fail (the benchmarks are listed above)")
        return lines
