"""The pytest plugin: options, fixtures and one-line hooks around `tagger_eval.session`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tagger_eval import evaluation
from tagger_eval.dataset import DatasetError
from tagger_eval.scope import ALL, SCOPES
from tagger_eval.session import EvaluationSession, PostResult, TaggerRun
from tagger_eval.summary import summary_lines
from tagger_eval.taggers import EXECUTION_PROVIDERS, TaggerOptions, TaggerSpec

SESSION_KEY = pytest.StashKey[EvaluationSession]()
PROPERTY = "tagger_eval"


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
                    help="which truth tags count (default: all, every Danbooru tag)")
    group.addoption("--execution-provider", default="auto", choices=EXECUTION_PROVIDERS,
                    help="onnxruntime provider for ONNX taggers (default: auto, the fastest installed)")
    group.addoption("--tagger-threads", type=int, default=None, metavar="N",
                    help="intra-op threads for in-process models (default: one per core)")
    group.addoption("--http-timeout", type=float, default=60.0, metavar="SECONDS",
                    help="timeout of each request to a tagger server (default: 60)")


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
    config.pluginmanager.register(ResultCollector(session), "tagger-eval-results")
    module = str(Path(evaluation.__file__))
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
    metafunc.parametrize("tagger_run", specs, indirect=True, scope="session", ids=[s.label for s in specs])
    metafunc.parametrize("post_id", post_ids, ids=[f"post{post_id}" for post_id in post_ids])


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


class ResultCollector:
    """Gathers every (tagger, post) result from the test reports, so it also sees those of xdist workers."""

    def __init__(self, session: EvaluationSession) -> None:
        self.session = session
        self.results: list[PostResult] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.results += [PostResult.from_dict(value) for name, value in report.user_properties if name == PROPERTY]

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's per-post table, so the leaderboard ends the output
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        if hasattr(config, "workerinput"):  # xdist workers: the controller prints the summary
            return
        terminalreporter.write_sep("=", "tagger-eval summary")
        for line in summary_lines(self.results, str(self.session.dataset_path), self.session.scope,
                                  self.session.unavailable):
            terminalreporter.write_line(line)
