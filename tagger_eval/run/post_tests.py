"""The evaluation's test module: the plugin collects it when `--tagger` is given, one test per (tagger, post)."""

from __future__ import annotations

import pytest

from tagger_eval.run.evaluation import EvaluationSession, PostSkipped, TaggerRun


def test_post_score(
    tagger_eval_session: EvaluationSession, tagger_run: TaggerRun, post_id: int, record_property,
    request: pytest.FixtureRequest,
) -> None:
    def benchmarked(infer):
        # Requested only by the test that runs the model: with batches, the tests served from a batch have no
        # model call of their own to time.
        benchmark = request.getfixturevalue("benchmark")
        benchmark.group = tagger_run.label
        return benchmark.pedantic(infer, rounds=1, iterations=1, warmup_rounds=0)

    if not tagger_run.identity_reported:  # once per loaded tagger, so the controller can name the model
        record_property("tagger_eval_identity", {tagger_run.label: tagger_run.tagger.identity()})
        if tagger_run.settings.keep_probabilities_above is not None and (counts := tagger_run.tagger.tag_counts()):
            record_property("tagger_eval_tag_counts", {tagger_run.label: dict(counts)})
        tagger_run.identity_reported = True
    try:
        result = tagger_run.evaluate(
            tagger_eval_session.dataset,
            post_id,
            run_inference=benchmarked,
        )
    except PostSkipped as skip:
        record_property("tagger_eval", tagger_run.unscored(post_id, "skipped", str(skip)).to_dict())
        pytest.skip(str(skip))
    except Exception as error:
        record_property("tagger_eval", tagger_run.unscored(post_id, "error", f"{type(error).__name__}: {error}")
                        .to_dict())
        raise
    record_property("tagger_eval", result.to_dict())
    if not result.passed:
        pytest.fail(result.failure_message(), pytrace=False)
