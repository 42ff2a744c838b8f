"""The benchmark script's measurements run end to end (on a tiny model; the timings themselves are not asserted),
and its compute-equivalent graphs are well-formed WD v3 models of the published shapes (built here at a tiny size:
the full-size ones take seconds and 350 MiB each, built by `python benchmarks/compute_models.py`)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from tagger_eval.taggers import TaggerOptions
from tagger_eval.taggers.wd14 import WD14Tagger

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_VIT = {"size": 64, "patch": 16, "width": 32, "depth": 2, "heads": 4, "mlp": 64, "outputs": 40}
TINY_CONVNEXT = {"size": 64, "widths": (8, 16, 24, 32), "depths": (1, 1, 2, 1), "outputs": 40}


@pytest.fixture(scope="module")
def bench():
    """benchmarks/run.py as a module (it imports its sibling compute_models, which needs no onnx to import)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def models(bench):
    return sys.modules["compute_models"]


def vit_parameters(size: int, patch: int, width: int, depth: int, heads: int, mlp: int, outputs: int) -> int:
    """torch's count for the ViT the benchmark used to export: patch conv, class token, positions, pre-norm blocks
    (two LayerNorms, in-projection of q, k, v, out-projection, MLP), final LayerNorm, head."""
    block = 2 * 2 * width + 3 * width * (width + 1) + width * (width + 1) + width * mlp + mlp + mlp * width + width
    return (width * (3 * patch * patch + 1) + width + (1 + (size // patch) ** 2) * width + depth * block
            + 2 * width + width * outputs + outputs)


def convnext_parameters(size: int, widths: tuple[int, ...], depths: tuple[int, ...], outputs: int) -> int:
    """torch's count for the ConvNeXt the benchmark used to export: stem conv + LayerNorm, per stage a LayerNorm +
    2x2 downsampling conv (after the first) and blocks (7x7 depthwise conv, LayerNorm, 4x MLP), LayerNorm, head."""
    total = widths[0] * (3 * 16 + 1) + 2 * widths[0]
    for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        if stage:
            total += 2 * widths[stage - 1] + width * (widths[stage - 1] * 4 + 1)
        total += depth * (width * 50 + 2 * width + width * 4 * width + 4 * width + 4 * width * width + width)
    return total + 2 * widths[-1] + widths[-1] * outputs + outputs


def test_the_published_shapes_have_the_torch_models_parameter_counts() -> None:
    """The counts of the torch-exported models the graphs replace (93,940,240 and 97,798,416, read from those
    exports with their deduplicated initializers resolved): the default arguments are the published shapes."""
    assert vit_parameters(448, 16, 768, 12, 12, 3072, 10_000) == 93_940_240
    assert convnext_parameters(448, (128, 256, 512, 1024), (3, 3, 27, 3), 10_000) == 97_798_416


@pytest.mark.parametrize(("name", "shape", "count"), [
    ("wd-vit-base-448", TINY_VIT, vit_parameters), ("wd-convnext-base-448", TINY_CONVNEXT, convnext_parameters)])
def test_each_graph_is_a_checked_wd_v3_model(models, name: str, shape: dict, count, tmp_path: Path) -> None:
    import onnx

    defaults = models.ARCHITECTURES[name].__kwdefaults__
    assert defaults["size"] == 448 and defaults["outputs"] == 10_000
    directory = models.build_onnx(name, tmp_path / name, **shape)
    model = onnx.load(directory / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert models.parameter_count(model) == count(**shape)
    tagger = WD14Tagger.from_directory(directory, TaggerOptions())  # the tagger's contract checks pass
    assert (tagger.input_size, tagger.batch_size, len(tagger.tag_names)) == (64, None, 40)
    assert tagger.tag_names[:4] == ["rating:general", "rating:sensitive", "rating:questionable", "rating:explicit"]
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    together = tagger.run(images)
    assert together.shape == (3, 40) and together.dtype == np.float32
    assert ((together >= 0) & (together <= 1)).all() and together.std() > 0.01
    alone = np.concatenate([tagger.run(images[index : index + 1]) for index in range(3)])
    np.testing.assert_allclose(alone, together, atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-4  # the images are seen, not a constant
    bgr_swapped = tagger.run(images[:1, :, :, ::-1].copy())
    assert np.abs(bgr_swapped - together[:1]).max() > 1e-4


def test_deepdanbooru_is_skipped_with_a_reason_without_tensorflow(models, monkeypatch: pytest.MonkeyPatch) -> None:
    real = models.find_spec
    monkeypatch.setattr(models, "find_spec", lambda package: None if package == "tensorflow" else real(package))
    assert models.unavailable("deepdanbooru-resnet50-512").startswith("TensorFlow is not installed")
    assert models.unavailable("wd-vit-base-448") is None


def test_each_measurement_runs_on_a_tiny_model(bench, wd14_v3_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    db_path = bench.dataset_of(100, tmp_path / "dataset")
    with bench.Dataset(db_path) as dataset:
        assert len(dataset) == 100 and bench.Dataset.load_image(dataset.get(100)).size == (128, 128)
    measured = bench.raw_seconds
    # batch 8 made the fastest, so that the evaluation runs at the default settings and again at batch size 8
    monkeypatch.setattr(bench, "raw_seconds", lambda *args: measured(*args) / (1 if args[2] == 1 else 100))
    lines = bench.measure("tiny", wd14_v3_dir, db_path, tmp_path, batch_sizes=(8,), http=False)
    assert re.fullmatch(r"tiny: raw [\d.]+, [\d.]+ images/s at batch size 1, 8", lines[0])
    assert re.fullmatch(r"tiny: eval/raw = [\d.]+ \(default settings\)", lines[2])
    assert re.fullmatch(r"tiny: eval/raw = [\d.]+ \(batch size 8, the fastest raw setting\)", lines[3])
    peaks = [float(peak) for peak in re.findall(r"peak (\d+) MiB", lines[1])]
    assert len(peaks) == 2 and all(10 < peak < 10_000 for peak in peaks)
    # the same run again in the same workdir infers every image again: no prediction store serves it (nor posts 97-100)
    with_all_plugins, _ = bench.pytest_run([f"--tagger=wd14-onnx:{wd14_v3_dir}", f"--dataset={db_path}"], tmp_path,
                                           all_plugins=True)
    assert with_all_plugins > 0
    assert bench.http_seconds(wd14_v3_dir, db_path, tmp_path) > 0
    assert bench.scoring_seconds(posts=1_000) >= 0
