"""The pytest plugin: options, fixtures and one-line hooks around `tagger_eval.run.evaluation`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagger_eval.run import post_tests
from tagger_eval.reports.compare import DEFAULT_MAX_WORSE, DEFAULT_TOLERANCE, check_same_dataset
from tagger_eval.data.dataset import DatasetError
from tagger_eval.run.outcome import RunOutcome, finish_run
from tagger_eval.reports.results import AUTOSAVE_DIR, ResultsError, autosave_path, dataset_identity
from tagger_eval.reports.results import load as load_results
from tagger_eval.scoring.scope import ALL, SCOPES
from tagger_eval.run.evaluation import METRICS_CHOICES, METRICS_OFF, EvaluationSession, PostResult, TaggerRun
from tagger_eval.reports.leaderboard import summary_lines
from tagger_eval.taggers import EXECUTION_PROVIDERS, TaggerOptions, TaggerSpec

SESSION_KEY = pytest.StashKey[EvaluationSession]()
PROPERTY = "tagger_eval"
IDENTITY_PROPERTY = "tagger_eval_identity"
TAG_COUNTS_PROPERTY = "tagger_eval_tag_counts"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tagger-eval", "evaluate image taggers against Danbooru tags")
    group.addoption("--tagger", action="append", default=[], metavar="SPEC[,SPEC...]",
                    help="taggers to evaluate: registered names, NAME:ARG for families, or 'all' "
                         "(every registered tagger that can run here); repeatable")
    group.addoption("--dataset", default=None, metavar="PATH",
                    help="the data.db to evaluate on (default: the bundled demo dataset)")
    group.addoption("--threshold", action="append", default=[], metavar="[NAME=]FLOAT",
                    help="probability above which a tag is predicted (default: per tagger); repeatable")
    group.addoption("--score-floor", action="append", default=[], metavar="[NAME=]FLOAT",
                    help="a post fails when its score is below this (default: per tagger); repeatable")
    group.addoption("--character-threshold", action="append", default=[], metavar="[NAME=]FLOAT",
                    help="threshold for character tags (default: per tagger, e.g. 0.85 for WD14); repeatable")
    group.addoption("--tag-scope", default=ALL, choices=SCOPES,
                    help="which truth tags count (default: all, every Danbooru tag; shared: the tags every "
                         "selected tagger can output)")
    group.addoption("--expand-implications", action="store_true",
                    help="add to each post's truth what its tags imply (needs the dataset's tag_implications)")
    group.addoption("--tagger-metrics", default=METRICS_OFF, choices=METRICS_CHOICES,
                    help="full: also P=R threshold, F1, F2, MCC, average precision per category, the best "
                         "threshold for the score, and the tag-distance soft score")
    group.addoption("--execution-provider", default="auto", choices=EXECUTION_PROVIDERS,
                    help="onnxruntime provider for ONNX taggers (default: auto, the fastest installed)")
    group.addoption("--tagger-batch-size", type=int, default=1, metavar="N",
                    help="images per model call; the next batch decodes while the model runs (default: 1)")
    group.addoption("--tagger-threads", type=int, default=None, metavar="N",
                    help="intra-op threads for in-process models (default: one per core)")
    group.addoption("--http-timeout", type=float, default=60.0, metavar="SECONDS",
                    help="timeout of each request to a tagger server (default: 60)")
    group.addoption("--tagger-results", default=None, metavar="PATH",
                    help=f"write the run's results JSON here (default: a new numbered file in {AUTOSAVE_DIR}/)")
    group.addoption("--no-tagger-results", action="store_true", help="do not save the run's results")
    group.addoption("--tagger-baseline", default=None, metavar="PATH",
                    help="fail the session when a tagger regressed against this saved results file")
    group.addoption("--tagger-tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="FLOAT",
                    help=f"largest allowed fall of a tagger's mean score (default: {DEFAULT_TOLERANCE})")
    group.addoption("--tagger-max-worse", type=float, default=DEFAULT_MAX_WORSE, metavar="FRACTION",
                    help=f"largest share of posts allowed to score lower (default: {DEFAULT_MAX_WORSE})")
    group.addoption("--tagger-report", default=None, metavar="DIR",
                    help="write charts and an HTML page of the run into DIR")


def pytest_configure(config: pytest.Config) -> None:
    if not config.option.tagger:
        return
    try:
        session = EvaluationSession(
            config.option.tagger,
            dataset_path=config.option.dataset,
            threshold_options=config.option.threshold,
            floor_options=config.option.score_floor,
            scope=config.option.tag_scope,
            character_threshold_options=config.option.character_threshold,
            expand_implications=config.option.expand_implications,
            metrics=config.option.tagger_metrics,
            batch_size=config.option.tagger_batch_size,
            tagger_options=TaggerOptions(
                execution_provider=config.option.execution_provider,
                threads=config.option.tagger_threads,
                http_timeout=config.option.http_timeout,
            ),
        )
    except (ValueError, DatasetError) as error:
        raise pytest.UsageError(str(error)) from error
    config.stash[SESSION_KEY] = session
    config.add_cleanup(session.close)
    config.addinivalue_line("markers", "xdist_group(name): tests of one tagger stay on one pytest-xdist worker")
    try:
        baseline = _load_baseline(config, session)
    except ResultsError as error:
        raise pytest.UsageError(f"--tagger-baseline: {error}") from error
    config.pluginmanager.register(ResultCollector(session, baseline), "tagger-eval-results")
    module = str(Path(post_tests.__file__))
    # `pytest --tagger=...` alone runs the evaluation instead of testpaths; explicit paths run beside it.
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args.append(module)
    else:
        config.args[:] = [module]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"tagger_run", "post_id"} - set(metafunc.fixturenames):
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    specs = session.specs if session else []
    post_ids = session.dataset.post_ids() if session else []
    # One xdist group per tagger: with `--dist loadgroup` each model loads on one worker only.
    tagger_params = [pytest.param(spec, marks=pytest.mark.xdist_group(spec.label), id=spec.label) for spec in specs]
    metafunc.parametrize("tagger_run", tagger_params, indirect=True, scope="session")
    metafunc.parametrize("post_id", post_ids, ids=[f"post{post_id}" for post_id in post_ids])


def pytest_collection_finish(session: pytest.Session) -> None:
    evaluation_session = session.config.stash.get(SESSION_KEY, None)
    if evaluation_session is not None:
        evaluation_session.orders = test_order(session.items)


def test_order(items: list[pytest.Item]) -> dict[str, list[int]]:
    """Per tagger, the post ids of the selected evaluation tests, in the order they will run."""
    orders: dict[str, list[int]] = {}
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "tagger_run" in params and "post_id" in params:
            orders.setdefault(params["tagger_run"].label, []).append(params["post_id"])
    return orders


@pytest.fixture(scope="session")
def tagger_eval_session(pytestconfig: pytest.Config) -> EvaluationSession:
    try:
        return pytestconfig.stash[SESSION_KEY]
    except KeyError:
        pytest.skip("no tagger selected: pass --tagger=NAME[,NAME...] or --tagger=all")


@pytest.fixture(scope="session")
def tagger_run(request: pytest.FixtureRequest, tagger_eval_session: EvaluationSession) -> Iterator[TaggerRun]:
    """The tagger under evaluation, loaded once and released when its tests are done."""
    spec: TaggerSpec = request.param
    run = tagger_eval_session.load(spec)
    yield run
    run.close()


def _load_baseline(config: pytest.Config, session: EvaluationSession) -> dict[str, Any] | None:
    if not config.option.tagger_baseline or hasattr(config, "workerinput"):
        return None
    baseline = load_results(Path(config.option.tagger_baseline))
    check_same_dataset(baseline, {"dataset": dataset_identity(session.dataset)})
    return baseline


class ResultCollector:
    """Gathers every (tagger, post) result from the test reports, so it also sees those of xdist workers."""

    def __init__(self, session: EvaluationSession, baseline: dict[str, Any] | None) -> None:
        self.session = session
        self.baseline = baseline
        self.results: list[PostResult] = []
        self.identities: dict[str, dict[str, Any]] = {}
        self.tag_counts: dict[str, dict[str, int]] = {}  # label -> the model's tag counts (for "rare" metrics)
        self.load_errors: dict[str, tuple[int, str]] = {}  # label -> (tests errored in setup, the error)
        self.outcome: RunOutcome | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "setup" and report.failed:
            self._record_setup_error(report)
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.results.append(PostResult.from_dict(value))
            elif name == IDENTITY_PROPERTY:
                self.identities.update(value)
            elif name == TAG_COUNTS_PROPERTY:
                self.tag_counts.update(value)

    def _record_setup_error(self, report: pytest.TestReport) -> None:
        """A tagger that fails to load errors every one of its tests in setup; the summary names it once."""
        match = re.search(r"::test_post_score\[(.+)-post\d+\]$", report.nodeid)
        if match:
            label = match.group(1)
            lines = [line for line in report.longreprtext.splitlines() if line.startswith("E ")]
            reason = lines[-1][1:].strip() if lines else report.longreprtext.splitlines()[-1]
            count, _ = self.load_errors.get(label, (0, reason))
            self.load_errors[label] = (count + 1, reason)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if hasattr(config, "workerinput") or not self.results:
            return
        option = config.option
        results_path = None
        if not option.no_tagger_results:
            results_path = (Path(option.tagger_results) if option.tagger_results
                            else autosave_path(config.rootpath / AUTOSAVE_DIR))
        self.outcome = finish_run(
            self.session, self.results, self.identities, tag_counts=self.tag_counts, results_path=results_path,
            baseline=self.baseline,
            tolerance=option.tagger_tolerance, max_worse=option.tagger_max_worse,
            report_dir=Path(option.tagger_report) if option.tagger_report else None, rootdir=config.rootpath,
        )
        if self.outcome.regressed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's per-post table, so the leaderboard ends the output
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        if hasattr(config, "workerinput"):  # xdist workers: the controller prints the summary
            return
        terminalreporter.write_sep("=", "tagger-eval summary")
        for line in summary_lines(self.results, str(self.session.dataset_path), self.session.scope,
                                  self.session.unavailable, self.session.expand_implications):
            terminalreporter.write_line(line)
        for label, (count, reason) in sorted(self.load_errors.items()):
            terminalreporter.write_line(f"could not load: {label} ({count} tests errored): {reason}", red=True)
        if self.outcome and self.outcome.lines:
            terminalreporter.write_line("")
            for line in self.outcome.lines:
                terminalreporter.write_line(line, red=self.outcome.regressed and "regressed" in line)
