"""The DeepDanbooru backend against a tiny Keras model built to the published contract (512x512 RGB, 0-1, sigmoid).

The reference preprocessing here is DeepDanbooru's own pipeline, step for step: PNG bytes decoded by
`tf.io.decode_png(channels=3)`, TensorFlow's AREA resize keeping the aspect ratio, `skimage.transform.warp` with
the centring translation (order=1, mode="edge"), divided by 255.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from builders import (
    DD_MODEL_NAME,
    DD_SIZE,
    DD_TAGS,
    build_dataset,
    build_deepdanbooru_model,
    write_deepdanbooru_project,
)
from PIL import Image

from tagger_eval.checksums import file_digest
from tagger_eval.data.dataset import Dataset
from tagger_eval.run.evaluation import TaggerRun, TaggerSettings
from tagger_eval.taggers import InvalidTaggerSpec, Sample, TaggerOptions, TaggerSpec, parse_specs
from tagger_eval.taggers.base import REAL_MODEL_SCORE_FLOOR, ModelOutputError
from tagger_eval.taggers.deepdanbooru import (
    ENTRIES,
    DeepDanbooruError,
    DeepDanbooruTagger,
    fetch_v3,
    v3_dir,
    v3_unavailable_reason,
)
from tagger_eval.taggers.deepdanbooru_image import centre_with_edge_padding, prepare_image
from tagger_eval.taggers.deepdanbooru_onnx import cached_conversion
from tagger_eval.tags import CHARACTER, GENERAL, RATING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
skimage_transform = pytest.importorskip("skimage.transform")

SIZE = DD_SIZE
TAGS = DD_TAGS
MODEL_NAME = DD_MODEL_NAME


@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's own cache directory: its conversions never reach the user's."""
    cache = tmp_path_factory.mktemp("dd-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAGGER_EVAL_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dd-model") / MODEL_NAME
    build_deepdanbooru_model(path, len(TAGS))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    return write_deepdanbooru_project(tmp_path_factory.mktemp("dd-project"), model_file)


@pytest.fixture(scope="module")
def tagger(project: Path) -> DeepDanbooruTagger:
    return DeepDanbooruTagger(project, TaggerOptions())


@pytest.fixture(scope="module")
def keras_model(model_file: Path):
    return tf_keras.models.load_model(str(model_file), compile=False)


def reference_input(image: Image.Image, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """DeepDanbooru's `load_image_for_evaluate` on the image's PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    decoded = tf.io.decode_png(buffer.getvalue(), channels=3)
    resized = tf.image.resize(decoded, size=(height, width), method=tf.image.ResizeMethod.AREA,
                              preserve_aspect_ratio=True).numpy()
    h, w = resized.shape[:2]
    transform = skimage_transform.AffineTransform(translation=(-w * 0.5, -h * 0.5))
    transform += skimage_transform.AffineTransform(translation=(width * 0.5, height * 0.5))
    warped = skimage_transform.warp(resized, transform.inverse, output_shape=(height, width), order=1, mode="edge")
    return warped / 255.0


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(data[:, :, 0] if channels == 1 else data, mode)


def transparent_rgba() -> Image.Image:
    """Colourful pixels under alpha 0 and 128: dropping alpha keeps the colours, compositing would whiten them."""
    image = noise(90, 61, "RGBA", seed=3)
    data = np.asarray(image).copy()
    data[:30, :, 3] = 0
    data[30:, :, 3] = 128
    return Image.fromarray(data, "RGBA")


def palette_image(transparency: bool) -> Image.Image:
    image = noise(75, 120, seed=4).quantize(colors=16)
    if transparency:
        image.info["transparency"] = 0
    return image


def sixteen_bit_grey() -> Image.Image:
    return Image.fromarray((np.arange(40 * 33).reshape(33, 40) * 49).astype(np.uint16))


def png_roundtrip(image: Image.Image) -> Image.Image:
    """The image as the dataset hands it over: decoded from its PNG file."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.load()
        return decoded


IMAGES = {
    "wide": lambda: noise(300, 120, seed=1),
    "tall": lambda: noise(120, 300, seed=2),
    "square-exact": lambda: noise(512, 512, seed=5),
    "larger-odd": lambda: noise(701, 600, seed=6),
    "half-pixel-offset-rows": lambda: noise(512, 3, seed=7),
    "half-pixel-offset-cols": lambda: noise(77, 512, seed=8),
    "odd-upscaled": lambda: noise(51, 77, seed=9),
    "tiny": lambda: noise(5, 3, seed=10),
    "one-pixel": lambda: noise(1, 1, seed=11),
    "rgba-transparent": transparent_rgba,
    "palette": lambda: palette_image(False),
    "palette-transparent": lambda: palette_image(True),
    "grey": lambda: noise(64, 47, "L", seed=12),
    "grey-16-bit": sixteen_bit_grey,
}


# --- preprocessing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_preprocessing_equals_deepdanbooru_reference(name: str) -> None:
    image = png_roundtrip(IMAGES[name]())
    prepared = prepare_image(image, SIZE, SIZE)
    assert prepared.shape == (SIZE, SIZE, 3) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, reference_input(image), rtol=0, atol=1e-6)


def test_alpha_is_dropped_not_composited() -> None:
    image = transparent_rgba()
    colours = np.asarray(image)[:, :, :3]
    prepared = prepare_image(image, 61, 90)  # same size: the resize and centring are the identity
    np.testing.assert_allclose(prepared, colours / 255.0, atol=1e-6)


def test_non_square_input_sizes_follow_the_model() -> None:
    image = png_roundtrip(noise(100, 40, seed=13))
    np.testing.assert_allclose(prepare_image(image, 256, 384), reference_input(image, 256, 384), atol=1e-6)


def test_half_pixel_offset_blends_neighbouring_rows() -> None:
    rows = np.array([[10.0], [50.0], [200.0]], dtype=np.float32)[:, :, None].repeat(3, axis=2)  # 3 rows, 1 column
    out = centre_with_edge_padding(rows, 6, 1)[:, 0, 0]  # offset (6 - 3) / 2 = 1.5
    np.testing.assert_allclose(out, [10.0, 10.0, 30.0, 125.0, 200.0, 200.0])


@pytest.mark.parametrize("orientation", ["wide", "tall"])
def test_padding_repeats_the_edge_pixels(orientation: str) -> None:
    first, middle, last = (30, 160, 90), (128, 128, 128), (200, 40, 120)
    data = np.empty((16, 64, 3), dtype=np.uint8)  # a wide image: first row, middle rows, last row
    data[0], data[1:-1], data[-1] = first, middle, last
    if orientation == "tall":
        data = data.transpose(1, 0, 2).copy()
    prepared = prepare_image(Image.fromarray(data), SIZE, SIZE)
    if orientation == "tall":
        prepared = prepared.transpose(1, 0, 2)
    # 64x16 scales by 8 to 512x128, centred with 192 rows of padding above and below.
    np.testing.assert_allclose(prepared[:200], np.broadcast_to(np.array(first) / 255.0, (200, SIZE, 3)), atol=1e-6)
    np.testing.assert_allclose(prepared[-200:], np.broadcast_to(np.array(last) / 255.0, (200, SIZE, 3)), atol=1e-6)
    np.testing.assert_allclose(prepared[256], np.broadcast_to(np.array(middle) / 255.0, (SIZE, 3)), atol=1e-6)


# --- the model ---------------------------------------------------------------------------------------------------


def test_predict_equals_the_keras_model_on_the_reference_input(tagger: DeepDanbooruTagger, keras_model) -> None:
    images = [png_roundtrip(IMAGES[name]()) for name in ("wide", "tall", "rgba-transparent")]
    expected = keras_model(np.stack([reference_input(image) for image in images]), training=False).numpy()
    predictions = tagger.predict([Sample(None, image) for image in images])  # type: ignore[arg-type]
    assert [list(prediction) for prediction in predictions] == [TAGS] * 3
    got = np.array([[prediction[tag] for tag in TAGS] for prediction in predictions])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(got[:, TAGS.index("red_theme")]) > 1e-3, "the tiny model must read the pixels"


def test_batching_equals_one_by_one(tagger: DeepDanbooruTagger) -> None:
    samples = [Sample(None, IMAGES[name]()) for name in ("wide", "tiny", "palette")]  # type: ignore[arg-type]
    together = tagger.predict(samples)
    alone = [tagger.predict([sample])[0] for sample in samples]
    tagger.batch_size = 2  # the three images run as 2 + 1
    try:
        chunked = tagger.predict(samples)
    finally:
        tagger.batch_size = 16
    for one, batch, chunk in zip(alone, together, chunked, strict=True):
        assert one.keys() == batch.keys() == chunk.keys()
        np.testing.assert_allclose([batch[tag] for tag in TAGS], [one[tag] for tag in TAGS], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([chunk[tag] for tag in TAGS], [one[tag] for tag in TAGS], rtol=1e-5, atol=1e-6)
    assert tagger.predict([]) == []


def test_input_size_vocabulary_and_defaults(tagger: DeepDanbooruTagger) -> None:
    assert (tagger.height, tagger.width) == (SIZE, SIZE)
    vocabulary = tagger.vocabulary()
    assert vocabulary["rating:safe"] == vocabulary["rating:explicit"] == RATING
    assert vocabulary["hatsune_miku"] == CHARACTER
    assert vocabulary["1girl"] == vocabulary["red_theme"] == GENERAL
    assert len(vocabulary) == len(TAGS)
    assert tagger.default_threshold == 0.5
    assert tagger.default_score_floor == REAL_MODEL_SCORE_FLOOR
    assert tagger.rating_aliases == {"rating:safe": frozenset({"rating:general", "rating:sensitive"})}


def test_requested_threads_cannot_change_a_running_tensorflow(project: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # With no conversion cached the model is loaded with Keras to convert it; the module's fixtures already started
    # TensorFlow, so the setting can only be reported as not applied.
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path))
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.warns(RuntimeWarning, match=rf"already running .*: {current + 3} intra-op threads cannot apply"):
        DeepDanbooruTagger(project, TaggerOptions(threads=current + 3))


def test_requested_threads_apply_in_a_fresh_process(project: Path, tmp_path: Path) -> None:
    code = ("import sys, warnings; warnings.simplefilter('error'); "
            "from tagger_eval.taggers.deepdanbooru import DeepDanbooruTagger; "
            "from tagger_eval.taggers import TaggerOptions; "
            "tagger = DeepDanbooruTagger(sys.argv[1], TaggerOptions(threads=1, execution_provider='cpu')); "
            "import tensorflow as tf; print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tagger._model.session.get_session_options().intra_op_num_threads, tagger.threads)")
    completed = subprocess.run([sys.executable, "-c", code, str(project)], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "TAGGER_EVAL_CACHE": str(tmp_path)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["1", "1", "1"]  # TensorFlow (converting), onnxruntime, preprocessing


# --- broken projects ---------------------------------------------------------------------------------------------


def test_a_tag_file_one_line_longer_than_the_output_is_refused(tmp_path: Path, model_file: Path) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file, [*TAGS, "extra_tag"])
    with pytest.raises(DeepDanbooruError, match=rf"outputs {len(TAGS)} tags .* has {len(TAGS) + 1} lines"):
        DeepDanbooruTagger(directory, TaggerOptions())


def test_a_truncated_model_file_is_a_clear_error(tmp_path: Path, model_file: Path) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file)
    data = (directory / MODEL_NAME).read_bytes()
    (directory / MODEL_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(DeepDanbooruError, match=rf"cannot load the DeepDanbooru model .*{MODEL_NAME}"):
        DeepDanbooruTagger(directory, TaggerOptions())


def test_a_missing_tag_file_is_a_clear_error(tmp_path: Path, model_file: Path) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file)
    (directory / "tags.txt").unlink()
    with pytest.raises(DeepDanbooruError, match=r"tag file not found: .*tags\.txt"):
        DeepDanbooruTagger(directory, TaggerOptions())


def test_a_project_without_a_model_file_is_a_clear_error(tmp_path: Path, model_file: Path) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file)
    (directory / MODEL_NAME).unlink()
    with pytest.raises(DeepDanbooruError, match=r"no model file \(\*\.h5 or \*\.keras\)"):
        DeepDanbooruTagger(directory, TaggerOptions())
    with pytest.raises(DeepDanbooruError, match="project directory not found"):
        DeepDanbooruTagger(tmp_path / "nowhere", TaggerOptions())


@pytest.mark.parametrize(("name", "text"), [("tags.txt", "1girl\ncafé\n"), ("tags-character.txt", "\nmiku\ncafé\n"),
                                            ("project.json", '{"model": "café"}')])
def test_a_project_file_that_is_not_utf8_names_the_file_and_byte(tmp_path: Path, model_file: Path, name: str,
                                                                  text: str) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file)
    (directory / name).write_bytes(text.encode("latin-1"))
    offset, line = text.index("é"), text.count("\n", 0, text.index("é")) + 1
    with pytest.raises(DeepDanbooruError, match=rf"{re.escape(name)}: byte {offset} \(line {line}\) is 0xe9, not "
                                                "UTF-8: expected UTF-8"):
        DeepDanbooruTagger(directory, TaggerOptions())


def test_an_integer_input_is_refused_at_load(tmp_path: Path) -> None:
    build_deepdanbooru_model(tmp_path / MODEL_NAME, len(TAGS), input_dtype="uint8")
    directory = write_deepdanbooru_project(tmp_path / "p", tmp_path / MODEL_NAME)
    with pytest.raises(DeepDanbooruError, match=rf"{MODEL_NAME} takes uint8 input; DeepDanbooru models take float32"):
        DeepDanbooruTagger(directory, TaggerOptions())


def test_a_model_that_outputs_logits_is_refused_naming_the_file(tmp_path: Path) -> None:
    build_deepdanbooru_model(tmp_path / MODEL_NAME, len(TAGS), activation=None)
    tagger = DeepDanbooruTagger(write_deepdanbooru_project(tmp_path / "p", tmp_path / MODEL_NAME), TaggerOptions())
    with pytest.raises(ModelOutputError, match=rf"p/{MODEL_NAME} outputs values from -\d+\.\d+ to \d+\.\d+, outside "
                                               r"\[0, 1\]: logits or scores"):
        tagger.predict([Sample(None, IMAGES["wide"]())])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", r".*nowhere is not a directory; it must hold tags\.txt and a model-\*\.h5 or \.keras file"),
        ("empty", r"no tags\.txt and no model file in .*p; it must hold tags\.txt and a model"),
        ("no-model", r"no model file in .*p; it must hold"),
        ("nested", r"no tags\.txt and no model file in .*p; .* \(the project seems to be in .*p/inner: give that "
                   "directory\\)"),
    ],
)
def test_a_directory_without_a_project_is_a_spec_error(tmp_path: Path, model_file: Path, layout: str,
                                                       message: str) -> None:
    directory = tmp_path / ("nowhere" if layout == "missing" else "p")
    if layout == "nested":
        write_deepdanbooru_project(directory / "inner", model_file)
    elif layout != "missing":
        directory.mkdir()
    if layout == "no-model":
        (directory / "tags.txt").write_text("1girl\n", encoding="utf-8")
    with pytest.raises(InvalidTaggerSpec, match=rf"--tagger=deepdanbooru:.*: {message}"):
        parse_specs(f"deepdanbooru:{directory}")
    if layout == "nested":
        assert parse_specs(f"deepdanbooru:{directory / 'inner'}")[0][0].argument == str(directory / "inner")


def test_project_json_disagreeing_with_the_model_input_is_refused(tmp_path: Path, model_file: Path) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file, image_size=448)
    with pytest.raises(DeepDanbooruError, match=r"takes 512x512 images but .*project\.json says 448x448"):
        DeepDanbooruTagger(directory, TaggerOptions())


def test_model_choice_project_json_first_then_the_last_name(tmp_path: Path, model_file: Path) -> None:
    directory = write_deepdanbooru_project(tmp_path / "p", model_file)
    (directory / "model-zzz-broken.h5").write_bytes(b"not a model")
    assert DeepDanbooruTagger(directory, TaggerOptions()).model_path.name == MODEL_NAME  # project.json's model
    (directory / "project.json").unlink()
    with pytest.raises(DeepDanbooruError, match=r"model-zzz-broken\.h5"):  # no project.json: the last by name
        DeepDanbooruTagger(directory, TaggerOptions())
    (directory / "model-zzz-broken.h5").unlink()
    shutil.copyfile(model_file, directory / "model-resnet_custom_v4.h5")
    assert DeepDanbooruTagger(directory, TaggerOptions()).model_path.name == "model-resnet_custom_v4.h5"


# --- ratings through a real session ------------------------------------------------------------------------------


def write_dataset(root: Path, posts: Sequence[tuple[int, str, str]]) -> Path:
    return build_dataset(root, posts, {post_id: noise(40 + post_id, 30, seed=post_id) for post_id, _, _ in posts})


def test_rating_safe_counts_for_general_and_sensitive_posts_only(tmp_path: Path, tagger: DeepDanbooruTagger) -> None:
    db_path = write_dataset(tmp_path / "ds", [(1, "g", "1girl"), (2, "s", "1girl"), (3, "q", "1girl")])
    run = TaggerRun(TaggerSettings(TaggerSpec("deepdanbooru", "dir"), 0.5, -100.0, "all"), tagger)
    with Dataset(db_path) as dataset:
        results = {post_id: run.evaluate(dataset, post_id) for post_id in (1, 2, 3)}
    for post_id in (1, 2):  # rating:safe stands for general and sensitive: counted as the truth's rating
        assert results[post_id].wrong_tags == [] and results[post_id].missed_tags == []
        assert results[post_id].score == 1.0
    assert results[3].wrong_tags == ["rating:safe"]  # and stays wrong for a questionable post
    assert results[3].missed_tags == ["rating:questionable"]
    assert results[3].score == 0.0


# --- registry entries --------------------------------------------------------------------------------------------


def test_entries() -> None:
    by_name = {entry.name: entry for entry in ENTRIES}
    assert set(by_name) == {"deepdanbooru", "deepdanbooru-v3"}
    assert by_name["deepdanbooru"].needs_argument and by_name["deepdanbooru"].unavailable_reason() is None
    assert not by_name["deepdanbooru-v3"].needs_argument and by_name["deepdanbooru-v3"].fetch is fetch_v3


def test_the_directory_entry_loads_the_project_it_is_given(project: Path) -> None:
    entry = next(entry for entry in ENTRIES if entry.name == "deepdanbooru")
    loaded = entry.factory(str(project), TaggerOptions())
    assert isinstance(loaded, DeepDanbooruTagger) and loaded.project_dir == project
    with pytest.raises(DeepDanbooruError, match="needs a project directory"):
        entry.factory(None, TaggerOptions())


def test_v3_fetched_from_a_server_loads_and_predicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpserver,
                                                     project: Path, tagger: DeepDanbooruTagger) -> None:
    monkeypatch.setenv("TAGGER_EVAL_CACHE", str(tmp_path / "cache"))
    assert v3_unavailable_reason() == "not downloaded; run `tagger-eval fetch deepdanbooru-v3`"
    entry = next(entry for entry in ENTRIES if entry.name == "deepdanbooru-v3")
    with pytest.raises(DeepDanbooruError, match="tagger-eval fetch deepdanbooru-v3"):
        entry.factory(None, TaggerOptions())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(project.iterdir()):
            bundle.write(path, path.name)
    httpserver.expect_request("/release.zip").respond_with_data(buffer.getvalue(), content_type="application/zip")
    fetched = fetch_v3(url=httpserver.url_for("/release.zip"))
    assert fetched == v3_dir() and v3_dir().parent == tmp_path / "cache"
    assert v3_unavailable_reason() is None
    # Converted at once, so evaluations never need TensorFlow.
    assert cached_conversion(file_digest(v3_dir() / MODEL_NAME)) is not None
    loaded = entry.factory(None, TaggerOptions())
    assert loaded.name == "deepdanbooru-v3" and loaded.onnx_path == cached_conversion(loaded.model_sha256)
    image = IMAGES["wide"]()
    assert loaded.predict([Sample(None, image)]) == tagger.predict([Sample(None, image)])  # type: ignore[arg-type]


def test_importing_the_module_does_not_import_tensorflow() -> None:
    code = ("import sys, tagger_eval.taggers.deepdanbooru, tagger_eval.taggers.release; "
            "assert 'tensorflow' not in sys.modules and 'tf_keras' not in sys.modules, 'imported'")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


UNAVAILABLE_REASONS = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from tagger_eval.taggers.deepdanbooru import ENTRIES
print("|".join(entry.unavailable_reason() or "" for entry in ENTRIES))
"""


def unavailable_reasons(blocked: str, cache: Path) -> list[str]:
    """Each entry's `unavailable_reason()` in a process where the `blocked` packages cannot be imported."""
    completed = subprocess.run([sys.executable, "-c", UNAVAILABLE_REASONS, blocked], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "TAGGER_EVAL_CACHE": str(cache)})
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip().split("|")


def test_missing_packages_are_named_with_the_install_command(tmp_path: Path, project: Path) -> None:
    install = 'install with `pip install "tagger-eval[onnx,deepdanbooru]"`'
    nothing = ("neither onnxruntime (which runs a converted model) nor tensorflow and tf-keras (which convert it "
               f"once) are installed; {install}")
    assert unavailable_reasons("tf_keras,onnxruntime", tmp_path) == [nothing] * 2
    # onnxruntime alone runs a converted model: the directory entry may have one, the release says whether it has.
    assert unavailable_reasons("tf_keras", tmp_path) == ["", "not downloaded; run `tagger-eval fetch deepdanbooru-v3`"]
    shutil.copytree(project, tmp_path / v3_dir().name)
    not_converted = f"not converted to ONNX yet, and converting it (once) needs tensorflow and tf-keras: {install}"
    assert unavailable_reasons("tf_keras", tmp_path) == ["", not_converted]
    assert unavailable_reasons("", tmp_path) == ["", ""]  # TensorFlow converts it when it is first loaded
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAGGER_EVAL_CACHE", str(tmp_path))
        DeepDanbooruTagger(tmp_path / v3_dir().name, TaggerOptions()).close()
    assert unavailable_reasons("tf_keras,tensorflow", tmp_path) == ["", ""]
