"""`--tagger-batch-size`: one model call per batch of upcoming posts, the same results as one by one."""

from __future__ import annotations

import json
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import comparable_results
from hooked_tagger import hooked_entry
from test_dataset import png_header, set_md5

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
              f"--score-floor=wd14-onnx:{wd14_v3_dir}=-50", "--tagger-metrics=full", "--no-tagger-store"]
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
    unreadable = db_path.parent / "images" / "0003.png"
    unreadable.write_bytes(b"not a png")
    set_md5(db_path, 3, unreadable)
    result = pytester.runpytest("--tagger=control,demo-pixel", f"--dataset={db_path}", "--tagger-batch-size=4",
                                "--benchmark-disable", "--no-tagger-results", "-rs")
    result.assert_outcomes(passed=10, skipped=2)
    result.stdout.fnmatch_lines(["*post 3: image*0003.png is unreadable*"])


def test_a_bad_row_read_ahead_fails_only_its_own_post(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=6)
    with sqlite3.connect(db_path) as connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute("UPDATE posts SET rating = 'x' WHERE id = 3")
    connection.close()
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--tagger-batch-size=4",
                                "--benchmark-disable", "--no-tagger-results", "-rs")
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*post 3 has an invalid rating: unknown Danbooru rating 'x'*"])
    assert "DatasetError" not in result.stdout.str()


def with_invalid_apng_chunk(png: bytes) -> bytes:
    """The same image with an APNG control chunk announcing no frames, after IHDR: Pillow warns "Invalid APNG"
    while opening it, and decodes it as the plain PNG it is."""
    data = struct.pack(">II", 0, 0)
    chunk = struct.pack(">I", len(data)) + b"acTL" + data + struct.pack(">I", zlib.crc32(b"acTL" + data))
    return png[:33] + chunk + png[33:]


def test_decoding_warnings_are_shown_in_the_test_of_their_post(pytester: pytest.Pytester, demo_subset) -> None:
    db_path = demo_subset(posts=6)
    images = db_path.parent / "images"
    # Post 3 is decoded ahead, in a thread, during post 1's test; post 5 too big, refused from its header.
    warned = images / "0003.png"
    warned.write_bytes(with_invalid_apng_chunk(warned.read_bytes()))
    set_md5(db_path, 3, warned)
    huge = images / "0005.png"
    huge.write_bytes(png_header(12000, 12000))
    set_md5(db_path, 5, huge)
    result = pytester.runpytest("--tagger=control", f"--dataset={db_path}", "--tagger-batch-size=4",
                                "--benchmark-disable", "--no-tagger-results", "-rs")
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines([
        "*warnings summary*",
        "*test_post_score[[]control-post3[]]",
        "*UserWarning: Invalid APNG, will use default PNG image if possible",
    ])
    result.stdout.fnmatch_lines(["SKIPPED*post 5: image *0005.png is 12000x12000 (144,000,000 pixels), more than "
                                 "the limit of 40,000,000; raise it with --max-image-pixels=144000000 to evaluate "
                                 "this post"])
    out = result.stdout.str()
    assert "control-post1]" not in out  # the test that decoded post 3 shows no warning of its
    assert "DecompressionBombWarning" not in out  # the size refusal already says it


def test_the_next_batch_is_decoding_while_the_model_runs() -> None:
    seen_pending: list[list[int]] = []

    class Observing(ControlTagger):
        def predict(self, samples):
            seen_pending.append(sorted(predictor._pending))
            return super().predict(samples)

    with Dataset(DEFAULT_DATASET) as dataset:
        predictor = BatchPredictor(Observing(), batch_size=3, order=[1, 2, 3, 4, 5, 6, 7])
        try:
            for post_id in range(1, 8):
                post, (output, runtime, _) = predictor.output(post_id, dataset.get, lambda infer: infer())
                assert post == dataset.get(post_id)
                assert set(output) == set(post.tags) and runtime >= 0
        finally:
            predictor.close()
    # While batch [1, 2, 3] ran, [4, 5, 6] was already being decoded; while [4, 5, 6] ran, [7].
    assert seen_pending == [[4, 5, 6], [7], []]


def test_a_batch_size_below_one_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--tagger=control", "--tagger-batch-size=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tagger-batch-size: must be at least 1, got 0*"])


def test_the_default_batch_size_is_the_hardwares(wd14_v3_dir: Path, demo_subset) -> None:
    """Without --tagger-batch-size a tagger runs at its preferred size: one image per call on a CPU session (the
    fastest measured there), 16 on a GPU provider; the option overrides it."""
    from tagger_eval.config import parse_run_config
    from tagger_eval.run.evaluation import Evaluation
    from tagger_eval.taggers.onnx import GPU_BATCH_SIZE, preferred_batch_size

    assert preferred_batch_size(["CUDAExecutionProvider", "CPUExecutionProvider"]) == GPU_BATCH_SIZE == 16
    assert preferred_batch_size(["TensorrtExecutionProvider", "CUDAExecutionProvider"]) == 16
    assert preferred_batch_size(["CPUExecutionProvider"]) == 1
    dataset = f"--dataset={demo_subset(posts=2)}"
    for options, expected in (([], 1), (["--tagger-batch-size=4"], 4)):
        evaluation = Evaluation(parse_run_config([f"--tagger=wd14-onnx:{wd14_v3_dir}", dataset, "--no-tagger-store",
                                                  "--execution-provider=cpu", *options]))
        try:
            [spec] = evaluation.specs
            run = evaluation.load(spec)
            assert run.tagger.preferred_batch_size == 1
            assert run.batches.batch_size == expected
            run.close()
        finally:
            evaluation.close()
