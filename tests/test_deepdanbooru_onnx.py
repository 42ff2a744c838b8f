"""DeepDanbooru's ONNX conversion: the layer-by-layer translation against Keras, the verified cache, the refusals
that fall back to TensorFlow, and evaluations that run without TensorFlow once the conversion is cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from blocked_imports import refusing
from builders import DD_MODEL_NAME, DD_SIZE, DD_TAGS, build_deepdanbooru_model, write_deepdanbooru_project
from PIL import Image

from tagger_eval.checksums import file_digest
from tagger_eval.data.dataset import Dataset
from tagger_eval.taggers import Sample, TaggerOptions
from tagger_eval.taggers import deepdanbooru_onnx as conversion
from tagger_eval.taggers.deepdanbooru import DeepDanbooruTagger
from tagger_eval.taggers.deepdanbooru_onnx import TOLERANCE, cached_conversion, converted_path, refusal_path
from tagger_eval.taggers.keras_onnx import UnsupportedLayer, keras_to_onnx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf_keras = pytest.importorskip("tf_keras")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test converts into its own cache."""
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / conversion.CACHE_FOLDER


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("dd-model") / DD_MODEL_NAME
    build_deepdanbooru_model(model, len(DD_TAGS))
    return write_deepdanbooru_project(tmp_path_factory.mktemp("dd-project"), model)


def noise() -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8))


def onnx_outputs(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


# --- the translation ---------------------------------------------------------------------------------------------


def every_layer_model() -> tf_keras.Model:
    """Every translated layer, at an odd input size (TensorFlow's "same" padding puts the odd pixel after)."""
    layers = tf_keras.layers
    inputs = tf_keras.Input((23, 17, 3))
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.BatchNormalization(epsilon=1e-3)(x)
    shortcut = layers.Conv2D(8, 1, use_bias=False)(x)
    x = layers.Conv2D(8, 3, padding="same", dilation_rate=2, activation="swish")(x)
    x = layers.Add()([x, shortcut])
    x = layers.Multiply()([layers.ReLU()(x), layers.Activation("sigmoid")(shortcut)])
    x = layers.Concatenate()([layers.MaxPooling2D(3, strides=2, padding="same")(x),
                              layers.AveragePooling2D(3, strides=2, padding="same")(x)])
    x = layers.Conv2D(6, 3, groups=2, padding="valid", activation="tanh")(layers.Dropout(0.5)(x))
    pooled = layers.GlobalAveragePooling2D()(x)
    flat = layers.Flatten()(layers.GlobalMaxPooling2D(keepdims=True)(x))
    x = layers.Concatenate()([layers.Flatten()(x), pooled, flat])
    x = layers.BatchNormalization(center=False)(layers.Dense(5, activation="softmax")(x))
    model = tf_keras.Model(inputs, layers.Dense(4, activation="sigmoid")(x))
    rng = np.random.default_rng(7)  # batch normalisation's statistics away from 0 and 1, so it does something
    weights = [rng.normal(0.0, 0.3, array.shape).astype(np.float32) for array in model.get_weights()]
    model.set_weights([np.abs(array) + 0.5 if "moving_variance" in variable.name else array
                       for array, variable in zip(weights, model.weights, strict=True)])
    return model


def test_every_translated_layer_computes_what_keras_computes() -> None:
    model = every_layer_model()
    batch = np.random.default_rng(0).random((3, 23, 17, 3), dtype=np.float32)
    np.testing.assert_allclose(onnx_outputs(keras_to_onnx(model), batch), model(batch, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_a_sequential_model_and_a_four_dimensional_output_translate() -> None:
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((9, 11, 3)), layers.Conv2D(4, 3, padding="same"),
                                 layers.MaxPooling2D(2)])
    batch = np.random.default_rng(1).random((2, 9, 11, 3), dtype=np.float32)
    got = onnx_outputs(keras_to_onnx(model), batch)
    assert got.shape == (2, 4, 5, 4)  # channels last, as Keras gives it
    np.testing.assert_allclose(got, model(batch).numpy(), rtol=1e-5, atol=1e-6)


def test_a_model_of_any_input_size_keeps_it_symbolic() -> None:
    layers = tf_keras.layers
    inputs = tf_keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    model = tf_keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    converted = keras_to_onnx(model)
    dims = converted.graph.input[0].type.tensor_type.shape.dim
    assert [dim.dim_param or dim.dim_value for dim in dims] == ["batch", "height", "width", 3]
    for size in ((13, 8), (6, 21)):
        batch = np.random.default_rng(2).random((2, *size, 3), dtype=np.float32)
        np.testing.assert_allclose(onnx_outputs(converted, batch), model(batch).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("layer", "message"), [
    (lambda: tf_keras.layers.LayerNormalization(name="norm"), "layer norm: LayerNormalization has no translation"),
    (lambda: tf_keras.layers.ReLU(max_value=6.0, name="relu6"), "layer relu6: ReLU with a cap"),
    (lambda: tf_keras.layers.Activation("gelu", name="act"), "layer act: activation 'gelu'"),
    (lambda: tf_keras.layers.Conv2D(2, 3, data_format="channels_first", name="conv"),
     "layer conv: data_format channels_first"),
])
def test_an_untranslated_layer_is_named(layer: Callable[[], tf_keras.layers.Layer], message: str) -> None:
    inputs = tf_keras.Input((8, 8, 3))
    model = tf_keras.Model(inputs, layer()(inputs))
    with pytest.raises(UnsupportedLayer, match=message):
        keras_to_onnx(model)


# --- conversion and cache ----------------------------------------------------------------------------------------


def test_the_first_load_converts_verifies_and_caches(project: Path, cache: Path) -> None:
    tagger = DeepDanbooruTagger(project, TaggerOptions())
    digest = file_digest(project / DD_MODEL_NAME)
    assert tagger.model_sha256 == digest and tagger.onnx_path == converted_path(digest) == cache / f"{digest}.onnx"
    assert {path.name for path in cache.iterdir()} == {f"{digest}.onnx", "digests.json"}  # nothing temporary
    metadata = {entry.key: entry.value for entry in onnx.load(tagger.onnx_path).metadata_props}
    assert metadata["tagger_eval.source_sha256"] == digest
    assert metadata["tagger_eval.source_file"] == DD_MODEL_NAME and metadata["tagger_eval.verified_inputs"] == "3"
    assert float(metadata["tagger_eval.max_abs_difference"]) <= TOLERANCE
    identity = tagger.identity()
    assert identity["model_sha256"] == digest and identity["onnx_sha256"] == file_digest(tagger.onnx_path)


def test_a_cached_conversion_loads_without_keras(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    DeepDanbooruTagger(project, TaggerOptions()).close()

    def no_keras(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Keras was loaded")

    monkeypatch.setattr(conversion.KerasModel, "__init__", no_keras)
    tagger = DeepDanbooruTagger(project, TaggerOptions())
    assert tagger.onnx_path is not None and len(tagger.predict([Sample(None, noise())])[0]) == len(DD_TAGS)  # type: ignore[arg-type]


def test_file_digests_are_remembered_until_the_file_changes(project: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tagger = DeepDanbooruTagger(project, TaggerOptions())
    hashed: list[Path] = []
    monkeypatch.setattr(conversion, "file_digest", lambda path: hashed.append(path) or file_digest(path))
    assert conversion.model_digest(project / DD_MODEL_NAME) == tagger.model_sha256
    assert conversion.model_digest(tagger.onnx_path) == file_digest(tagger.onnx_path)
    assert hashed == []  # both recorded by the conversion
    copy = write_deepdanbooru_project(tmp_path / "copy", project / DD_MODEL_NAME)
    assert conversion.model_digest(copy / DD_MODEL_NAME) == tagger.model_sha256  # another file: hashed, recorded
    assert conversion.model_digest(copy / DD_MODEL_NAME) == tagger.model_sha256
    assert hashed == [copy / DD_MODEL_NAME]
    (copy / DD_MODEL_NAME).write_bytes((copy / DD_MODEL_NAME).read_bytes() + b"\0")  # changed: hashed again
    assert conversion.model_digest(copy / DD_MODEL_NAME) != tagger.model_sha256


def tampered(convert: Callable[..., onnx.ModelProto]) -> Callable[..., onnx.ModelProto]:
    """The converter, with the output layer's biases moved by 0.05: a translation mistake to catch."""

    def convert_badly(model: object) -> onnx.ModelProto:
        converted = convert(model)
        bias = converted.graph.initializer[-1]
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32(0.05), bias.name))
        return converted

    return convert_badly


def test_a_conversion_that_differs_from_keras_is_refused_and_keras_runs(project: Path, cache: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tagger_eval.taggers import keras_onnx

    original = keras_onnx.keras_to_onnx
    monkeypatch.setattr(keras_onnx, "keras_to_onnx", tampered(original))
    model = project / DD_MODEL_NAME
    with pytest.warns(RuntimeWarning, match=rf"DeepDanbooru model {model} runs on TensorFlow, not converted to ONNX: "
                                            r"its ONNX conversion differs from Keras by 0\.0\d+ \(tolerance 0\.0001\)"):
        tagger = DeepDanbooruTagger(project, TaggerOptions())
    digest = file_digest(model)
    assert tagger.onnx_path is None and "onnx_sha256" not in tagger.identity()
    assert sorted(path.name for path in cache.iterdir()) == [refusal_path(digest).name]
    record = json.loads(refusal_path(digest).read_text(encoding="utf-8"))
    assert record["model"] == str(model) and record["reason"].startswith("its ONNX conversion differs")
    # Later loads go straight to Keras: the refusal is recorded, not tried again.
    monkeypatch.setattr(keras_onnx, "keras_to_onnx", lambda _model: pytest.fail("converted again"))
    with pytest.warns(RuntimeWarning, match=rf"differs from Keras .*; recorded in {refusal_path(digest)}, delete it "
                                            "to try again"):
        assert DeepDanbooruTagger(project, TaggerOptions()).onnx_path is None
    # A refusal by another version of the converter is not final.
    refusal_path(digest).write_text(json.dumps({**record, "converter": "an older one"}), encoding="utf-8")
    monkeypatch.setattr(keras_onnx, "keras_to_onnx", original)
    assert DeepDanbooruTagger(project, TaggerOptions()).onnx_path == converted_path(digest)


def test_an_unrunnable_or_uncachable_conversion_leaves_keras_running(project: Path, cache: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refused_by_onnxruntime(_data: bytes, _inputs: np.ndarray) -> np.ndarray:
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH")

    monkeypatch.setattr(conversion, "_onnx_outputs", refused_by_onnxruntime)
    with pytest.warns(RuntimeWarning, match=r"not converted to ONNX: RuntimeError: \[ONNXRuntimeError\] : 10"):
        assert DeepDanbooruTagger(project, TaggerOptions()).onnx_path is None
    monkeypatch.undo()
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(cache.parent / "read-only"))

    def disk_full(path: Path, *_chunks: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(conversion, "_write_atomically", disk_full)
    with pytest.warns(RuntimeWarning, match=r"its conversion could not be cached in .*read-only/deepdanbooru-onnx: "
                                            r"\[Errno 28\] No space left on device"):
        tagger = DeepDanbooruTagger(project, TaggerOptions())
    assert tagger.onnx_path is None and len(tagger.predict([Sample(None, noise())])[0]) == len(DD_TAGS)  # type: ignore[arg-type]


def test_an_untranslatable_model_runs_on_keras_with_a_warning_naming_the_layer(tmp_path: Path) -> None:
    layers = tf_keras.layers
    inputs = tf_keras.Input((DD_SIZE, DD_SIZE, 3))
    pooled = layers.Flatten()(layers.AveragePooling2D(64)(inputs))
    outputs = layers.Dense(len(DD_TAGS), activation="sigmoid")(layers.LayerNormalization(name="ln")(pooled))
    model_path = tmp_path / DD_MODEL_NAME
    with warnings.catch_warnings():  # HDF5 is legacy for Keras, and exactly what DeepDanbooru ships
        warnings.simplefilter("ignore", UserWarning)
        tf_keras.Model(inputs, outputs).save(model_path)
    project = write_deepdanbooru_project(tmp_path / "p", model_path)
    with pytest.warns(RuntimeWarning, match=r"runs on TensorFlow, not converted to ONNX: layer ln: LayerNormalization "
                                            "has no translation"):
        tagger = DeepDanbooruTagger(project, TaggerOptions())
    assert tagger.onnx_path is None and len(tagger.predict([Sample(None, noise())])[0]) == len(DD_TAGS)  # type: ignore[arg-type]


def test_keras_and_onnx_agree_on_the_demo_images(project: Path, cache: Path, demo_subset: Callable[..., Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tagger_eval.taggers import keras_onnx

    with Dataset(demo_subset(12)) as dataset:
        samples = [Sample(post, Dataset.load_image(post)) for post in dataset]
    on_onnx = DeepDanbooruTagger(project, TaggerOptions(), batch_size=5).predict(samples)
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(cache.parent.parent / "refused"))
    monkeypatch.setattr(keras_onnx, "keras_to_onnx", tampered(keras_onnx.keras_to_onnx))
    with pytest.warns(RuntimeWarning, match="runs on TensorFlow"):
        keras = DeepDanbooruTagger(project, TaggerOptions())
    on_keras = keras.predict(samples)
    assert [list(row) for row in on_onnx] == [list(row) for row in on_keras]
    np.testing.assert_allclose([list(row.values()) for row in on_onnx], [list(row.values()) for row in on_keras],
                               rtol=0, atol=TOLERANCE)


# --- without TensorFlow ------------------------------------------------------------------------------------------


BLOCKED = ("tensorflow", "tf_keras", "keras", "onnx")
# An import hook that refuses the blocked packages (what a machine without them does).
BLOCK = refusing(BLOCKED)
# Evaluates, then names any blocked package that got imported.
EVALUATE = BLOCK + """
from tagger_eval.taggers.deepdanbooru import ENTRIES
print("reasons", [entry.unavailable_reason() for entry in ENTRIES])
import pytest
status = pytest.main(sys.argv[1:])
print("imported", sorted(name for name in sys.modules if name.split(".")[0] in blocked))
sys.exit(status)
"""


@pytest.fixture
def evaluate_without_tensorflow(tmp_path: Path, demo_subset: Callable[..., Path]) -> Callable[[Path], str]:
    def evaluate(project: Path) -> str:
        arguments = ["-p", "no:cacheprovider", "-q", "--benchmark-disable", "--no-tagger-results",
                     "--score-floor=-1000", f"--tagger=deepdanbooru:{project}", f"--dataset={demo_subset(6)}"]
        completed = subprocess.run([sys.executable, "-c", EVALUATE, *arguments],
                                   cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        return completed.stdout

    return evaluate


def test_an_evaluation_runs_without_tensorflow_once_the_model_is_converted(
        project: Path, evaluate_without_tensorflow: Callable[[Path], str]) -> None:
    DeepDanbooruTagger(project, TaggerOptions()).close()
    output = evaluate_without_tensorflow(project)
    assert "reasons [None, 'not downloaded; run `tagger-eval fetch deepdanbooru-v3`']" in output
    assert "6 passed" in output and "imported []" in output


def test_without_tensorflow_an_unconverted_model_says_what_to_install(
        tmp_path: Path, project: Path, cache: Path) -> None:
    code = BLOCK + (
        "from tagger_eval.taggers import TaggerOptions\n"
        "from tagger_eval.taggers.deepdanbooru import DeepDanbooruTagger\n"
        "DeepDanbooruTagger(sys.argv[1], TaggerOptions())\n")
    completed = subprocess.run([sys.executable, "-c", code, str(project)], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 1
    assert completed.stderr.splitlines()[-1] == (
        f"tagger_eval.taggers.deepdanbooru_onnx.DeepDanbooruError: {project / DD_MODEL_NAME} has no ONNX conversion "
        f"in {cache}: converting it (once) needs tensorflow and tf-keras (blocked in this test: tensorflow); install "
        'with `pip install "tagger-eval[onnx,deepdanbooru]"`')
    assert cached_conversion(file_digest(project / DD_MODEL_NAME)) is None


@pytest.fixture(autouse=True)
def no_temporary_file_is_left(cache: Path) -> Iterator[None]:
    yield
    if cache.is_dir():
        assert list(cache.glob(".*")) == []
