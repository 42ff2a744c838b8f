"""The evaluation's test module: the plugin collects it when `--tagger` is given, one test per (tagger, post).

Each test reports its outcome to the pytest controller as user properties (they cross from pytest-xdist workers
with the test reports); `run/plugin.py` collects them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import pytest

from tagger_eval.data.dataset import DatasetLocked
from tagger_eval.records import PostStatus
from tagger_eval.run.evaluation import Evaluation, LoadFailure, PostSkipped, TaggerRun
from tagger_eval.taggers.base import TaggerError
from tagger_eval.tags import printable

T = TypeVar("T")


class Property:
    """The user-property names a test reports under (plain strings: execnet sends builtin types only)."""

    RESULT = "tagger_eval"  # one `PostResult.to_dict()` per test
    IDENTITY = "tagger_eval_identity"  # {label: the tagger's identity}, once per loaded tagger
    TAG_COUNTS = "tagger_eval_tag_counts"  # {label: the model's tag counts}, once, when the run keeps metrics
    LOAD_ERROR = "tagger_eval_load_error"  # (label, error) of a tagger that failed to load, once per test


def test_post_score(
    tagger_evaluation: Evaluation, tagger_run: TaggerRun | LoadFailure, post_id: int,
    record_property: Callable[[str, Any], None], request: pytest.FixtureRequest,
) -> None:
    if isinstance(tagger_run, LoadFailure):
        _report_load_failure(tagger_run, record_property)

    def benchmarked(infer: Callable[[], T]) -> T:
        # Requested only by the test that runs the model: with batches, the tests served from a batch have no
        # model call of their own to time.
        benchmark = request.getfixturevalue("benchmark")
        benchmark.group = tagger_run.label
        result: T = benchmark.pedantic(infer, rounds=1, iterations=1, warmup_rounds=0)
        return result

    if not tagger_run.identity_reported:  # once per loaded tagger, so the controller can name the model
        record_property(Property.IDENTITY, {tagger_run.label: tagger_run.identity})
        if tagger_run.settings.keep_probabilities_above is not None and (counts := tagger_run.tagger.tag_counts()):
            record_property(Property.TAG_COUNTS, {tagger_run.label: dict(counts)})
        tagger_run.identity_reported = True
    try:
        result = tagger_run.evaluate(tagger_evaluation.dataset, post_id, run_inference=benchmarked)
    except PostSkipped as skip:
        record_property(Property.RESULT, tagger_run.unscored(post_id, PostStatus.SKIPPED, str(skip)).to_dict())
        pytest.skip(printable(str(skip)))
    except DatasetLocked as error:
        # Every post after this one would wait for the same lock: the run stops here, with the results so far.
        record_property(Property.RESULT, tagger_run.unscored(post_id, PostStatus.ERROR, str(error)).to_dict())
        request.session.shouldstop = printable(str(error))
        pytest.fail(printable(str(error)), pytrace=False)
    except TaggerError as error:  # the message says it all: one line per post, not a traceback each
        reason = f"{type(error).__name__}: {error}"
        record_property(Property.RESULT, tagger_run.unscored(post_id, PostStatus.ERROR, reason).to_dict())
        pytest.fail(printable(f"{tagger_run.label} failed on post {post_id}: {reason}"), pytrace=False)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        record_property(Property.RESULT, tagger_run.unscored(post_id, PostStatus.ERROR, reason).to_dict())
        raise
    record_property(Property.RESULT, result.to_dict())
    if not result.passed:
        pytest.fail(result.failure_message(), pytrace=False)


def _report_load_failure(failure: LoadFailure, record_property: Callable[[str, Any], None]) -> NoReturn:
    """One line in the first test of a tagger that did not load; its other tests are skipped, pointing there. Each
    reports the failure, so the summary counts them."""
    record_property(Property.LOAD_ERROR, [failure.label, failure.error])
    label = printable(failure.label)
    if failure.reported:
        pytest.skip(f"tagger {label} did not load (see the first error)")
    failure.reported = True
    pytest.fail(f"tagger {label} could not be loaded: {printable(failure.error)}", pytrace=False)
