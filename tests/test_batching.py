"""`--tagger-batch-size`: one model call per batch of upcoming posts, the same results as one by one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import comparable_results
from hooked_tagger import hooked_entry

from tagger_eval.data.dataset import Dataset
from tagger_eval.reports.results import load
from tagger_eval.run.batching import BatchPredictor
from tagger_eval.run.evaluation import DEFAULT_DATASET
from tagger_eval.taggers import registered
from tagger_eval.taggers.control import ControlTagger

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")


@pytest.fixture
def counting_calls() -> Iterator[list[list[int]]]:
    """The post ids of each model call of the `counting` tagger, registered for the test only."""
    calls: list[list[int]] = []
    with registered(hooked_entry("counting", lambda samples: calls.append([sample.post.id for sample in samples]))):
        yield calls


def test_batches_give_the_one_by_one_results(pytester: pytest.Pytester, wd14_v2_dir: Path,
                                             wd14_v3_dir: Path) -> None:
    specs = f"--tagger=all,wd14-onnx:{wd14_v2_dir},wd14-onnx:{wd14_v3_dir}"
    one, many = pytester.path / "one.json", pytester.path / "many.json"
    common = [specs, "--benchmark-disable", "--score-floor=wd14-onnx:" + str(wd14_v2_dir) + "=-50",
              f"--score-floor=wd14-onnx:{wd14_v3_dir}=-50", "--tagger-metrics=full"]
    assert pytester.runpytest(*common, f"--tagger-results={one}").ret == pytest.ExitCode.OK
    assert pytester.runpytest(*common, f"--tagger-results={many}", "--tagger-batch-size=7").ret == 0
    assert comparable_results(load(many)) == comparable_results(load(one))


def test_the_model_is_called_once_per_batch(pytester: pytest.Pytester, demo_subset, monkeypatch,
                                            counting_calls: list[list[int]]) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # keep pytest-benchmark on in the inner run
    db_path = demo_subset(posts=10)
    bench = pytester.path / "bench.json"
    result = pytester.runpytest_inprocess("--tagger=counting", f"--dataset={db_path}", "--tagger-batch-size=4",
                                          f"--benchmark-json={bench}", "--no-tagger-results")
    assert result.ret == pytest.ExitCode.OK
    assert counting_calls == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    # One benchmark per model call, named after the test that made it.
    names = [benchmark["name"] for benchmark in json.loads(bench.read_text())["benchmarks"]]
    assert sorted(names) == sorted(f"test_post_score[counting-post{n}]" for n in (1, 5, 9))
    assert "Benchmark fixture was not used" not in result.stdout.str()


def test_only_the_selected_posts_are_predicted(pytester: pytest.Pytester, demo_subset,
                                               counting_calls: list[list[int]]) -> None:
    db_path = demo_subset(posts=10)
    result = pytester.runpytest_inprocess("--tagger=counting", f"--dataset={db_path}", "--tagger-batch-size=4",
                                          "-k", "post2 or post5 or post7", "--benchmark-disable",
                                          "--no-tagger-results")
    result.assert_outcomes(passed=3)
    assert counting_calls == [[2, 5, 7]]


def test_an_unreadable_image_in_a_batch_skips_only_its_post(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=6)
    (db_path.parent / "images" / "0003.png").write_bytes(b"not a png")
    result = pytester.runpytest("--tagger=control,demo-pixel", f"--dataset={db_path}", "--tagger-batch-size=4",
                                "--benchmark-disable", "--no-tagger-results", "-rs")
    result.assert_outcomes(passed=10, skipped=2)
    result.stdout.fnmatch_lines(["*post 3: image*0003.png is unreadable*"])


def test_the_next_batch_is_decoding_while_the_model_runs() -> None:
    seen_pending: list[list[int]] = []

    class Observing(ControlTagger):
        def predict(self, samples):
            seen_pending.append(sorted(predictor._images))
            return super().predict(samples)

    with Dataset(DEFAULT_DATASET) as dataset:
        predictor = BatchPredictor(Observing(), batch_size=3, order=[1, 2, 3, 4, 5, 6, 7])
        try:
            for post_id in range(1, 8):
                output, runtime = predictor.output(dataset, dataset.get(post_id), lambda post: post,
                                                   lambda infer: infer())
                assert set(output) == set(dataset.get(post_id).tags) and runtime >= 0
        finally:
            predictor.close()
    # While batch [1, 2, 3] ran, [4, 5, 6] was already being decoded; while [4, 5, 6] ran, [7].
    assert seen_pending == [[4, 5, 6], [7], []]


def test_a_batch_size_below_one_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=control", "--tagger-batch-size=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tagger-batch-size: must be at least 1, got 0*"])
