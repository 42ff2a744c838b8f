"""The benchmark script's measurements run end to end (on a tiny model; the timings themselves are not asserted)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/run.py as a module (it imports its sibling compute_models, which needs no torch to import)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_each_measurement_runs_on_a_tiny_model(bench, wd14_v3_dir: Path, tmp_path: Path) -> None:
    db_path = bench.dataset_of(100, tmp_path / "dataset")
    with bench.Dataset(db_path) as dataset:
        assert len(dataset) == 100 and bench.Dataset.load_image(dataset.get(100)).size == (128, 128)
    assert bench.raw_seconds(wd14_v3_dir, db_path, batch_size=8) > 0
    seconds, peak_mib = bench.pytest_run([f"--tagger=wd14-onnx:{wd14_v3_dir}", f"--dataset={db_path}",
                                          "--tagger-batch-size=8"], tmp_path)
    assert seconds > 0 and 10 < peak_mib < 10_000
    with_all_plugins, _ = bench.pytest_run([f"--tagger=wd14-onnx:{wd14_v3_dir}", f"--dataset={db_path}"], tmp_path,
                                           all_plugins=True)
    assert with_all_plugins > 0
    assert bench.http_seconds(wd14_v3_dir, db_path, tmp_path) > 0
    assert bench.scoring_seconds(posts=1_000) >= 0
