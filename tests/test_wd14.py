"""The WD14 / WD v3 ONNX backend on tiny models built to the published contract."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from builders import WD14_BIASES, WD14_TAGS, WD14_WEIGHTS, build_dataset, build_wd14_model
from huggingface_hub import constants as hub_constants
from PIL import Image

from tagger_eval.cli import main as cli_main
from tagger_eval.data.dataset import Dataset
from tagger_eval.run.evaluation import DEFAULT_DATASET, TaggerRun, TaggerSettings
from tagger_eval.taggers import Sample, TaggerOptions, TaggerSpec, get_entry, parse_specs, select_tags
from tagger_eval.taggers.base import ModelOutputError
from tagger_eval.taggers.hub import HubFiles, ModelFilesError
from tagger_eval.taggers.onnx import ModelLoadError, select_providers
from tagger_eval.taggers.registry import InvalidTaggerSpec
from tagger_eval.taggers.wd14 import PUBLISHED_MODELS, WD14Tagger, prepare_image, read_selected_tags
from tagger_eval.tags import CHARACTER, GENERAL, RATING

SIZE = 448


def reference_prepare(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """The demo app's preprocessing, written independently: numpy alpha blend and padding, PIL bicubic resize."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[:, :, 3:] / 255.0
    rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    height, width = rgb.shape[:2]
    side = max(height, width)
    square = np.full((side, side, 3), 255.0)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = rgb
    square = np.round(square).astype(np.uint8)
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))
    return square[:, :, [2, 1, 0]].astype(np.float32)


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=2)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def transparent_image() -> Image.Image:
    image = gradient_image(300, 200).convert("RGBA")
    alpha = np.zeros((200, 300), dtype=np.uint8)
    alpha[50:150, 100:200] = 255  # opaque centre
    alpha[:, :50] = 128  # half-transparent stripe
    image.putalpha(Image.fromarray(alpha))
    return image


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (120, 80), 0)
    image.putpalette([10, 200, 30, 250, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (20, 20, 60, 60))
    image.info["transparency"] = 0  # palette entry 0 (green) is transparent: it must come out white
    return image


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(gradient_image(640, 360), id="wide"),
        pytest.param(gradient_image(301, 777), id="tall-odd"),
        pytest.param(gradient_image(100, 60), id="smaller-than-input"),
        pytest.param(gradient_image(448, 448), id="exact-size"),
        pytest.param(transparent_image(), id="rgba"),
        pytest.param(palette_with_transparency(), id="palette-transparency"),
        pytest.param(gradient_image(200, 500, "L"), id="greyscale"),
    ],
)
def test_preprocessing_matches_the_reference(image: Image.Image) -> None:
    ours = prepare_image(image, SIZE)
    assert ours.shape == (SIZE, SIZE, 3) and ours.dtype == np.float32
    # Pillow's integer compositing may round one level differently from the float reference.
    np.testing.assert_allclose(ours, reference_prepare(image), atol=1.0)


def test_exact_size_images_are_not_resampled() -> None:
    image = gradient_image(SIZE, SIZE)
    np.testing.assert_array_equal(prepare_image(image, SIZE), np.asarray(image)[:, :, ::-1])


def test_channels_are_bgr_and_padding_is_white() -> None:
    red = prepare_image(Image.new("RGB", (448, 224), (255, 0, 0)), SIZE)
    assert tuple(red[SIZE // 2, SIZE // 2]) == (0.0, 0.0, 255.0)  # B, G, R
    assert tuple(red[0, 0]) == (255.0, 255.0, 255.0)  # padded band above the image
    transparent = prepare_image(palette_with_transparency(), SIZE)
    assert tuple(transparent[5, 5]) == (255.0, 255.0, 255.0)


def test_model_contract_is_read_from_the_model(wd14_v2_dir: Path, wd14_v3_dir: Path) -> None:
    v2 = WD14Tagger.from_directory(wd14_v2_dir, TaggerOptions(execution_provider="cpu"))
    v3 = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions(execution_provider="cpu"))
    assert (v2.input_name, v2.output_name, v2.batch_size, v2.input_size) == ("input_1:0", "predictions_sigmoid", 1, 448)
    assert (v3.input_name, v3.output_name, v3.batch_size, v3.input_size) == ("input", "output", None, 448)


def test_tags_categories_and_ratings(wd14_v3_dir: Path) -> None:
    tags = read_selected_tags(wd14_v3_dir / "selected_tags.csv")
    assert tags[:4] == [("rating:general", RATING), ("rating:sensitive", RATING), ("rating:questionable", RATING),
                        ("rating:explicit", RATING)]
    vocabulary = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions()).vocabulary()
    assert vocabulary["red_theme"] == GENERAL and vocabulary["sunny_(tagger-eval)"] == CHARACTER
    assert len(vocabulary) == len(WD14_TAGS)


def demo_samples(count: int) -> list[Sample]:
    with Dataset(DEFAULT_DATASET) as dataset:
        posts = [dataset.get(post_id) for post_id in dataset.post_ids()[:count]]
        return [Sample(post, Dataset.load_image(post)) for post in posts]


def expected_probabilities(image: Image.Image) -> np.ndarray:
    """The tiny model's output computed in numpy from the reference preprocessing."""
    mean = reference_prepare(image).reshape(-1, 3).mean(axis=0)
    return 1.0 / (1.0 + np.exp(-(mean @ np.array(WD14_WEIGHTS) + np.array(WD14_BIASES))))


@pytest.mark.parametrize("model_dir", ["wd14_v2_dir", "wd14_v3_dir"])
def test_predictions_follow_the_model_and_batching_changes_nothing(model_dir: str, request) -> None:
    directory = request.getfixturevalue(model_dir)
    tagger = WD14Tagger.from_directory(directory, TaggerOptions(execution_provider="cpu"))
    samples = demo_samples(5)
    batched = tagger.predict(samples)
    one_by_one = [tagger.predict([sample])[0] for sample in samples]
    for sample, together, alone in zip(samples, batched, one_by_one, strict=True):
        assert list(together) == [name for name, _ in read_selected_tags(directory / "selected_tags.csv")]
        np.testing.assert_allclose(list(together.values()), list(alone.values()), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(list(together.values()), expected_probabilities(sample.image), atol=1e-4)


def test_the_highest_rating_row_is_the_rating(wd14_v3_dir: Path) -> None:
    tagger = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions())
    red = Sample(demo_samples(1)[0].post, Image.new("RGB", (64, 64), (255, 0, 0)))
    probabilities = tagger.predict([red])[0]
    ratings = {tag: p for tag, p in probabilities.items() if tag.startswith("rating:")}
    # Red is R in the model's BGR input: the questionable row weighs R highest.
    assert max(ratings, key=ratings.get) == "rating:questionable"
    assert {tag for tag in select_tags(probabilities, 0.35) if tag.startswith("rating:")} == {"rating:questionable"}


def predicted_through_the_session(tmp_path: Path, image: Image.Image, tagger: WD14Tagger, **settings) -> set[str]:
    """The tags the session predicts for one image, through a real one-post data.db and TaggerRun."""
    db_path = build_dataset(tmp_path / "one-post", [(1, "g", "yellow")], {1: image})
    run = TaggerRun(TaggerSettings(TaggerSpec("wd14-onnx", "x"), score_floor=-10, scope="all", **settings), tagger)
    with Dataset(db_path) as dataset:
        result = run.evaluate(dataset, 1)
    return set(result.wrong_tags) | ({"yellow", "rating:general"} - set(result.missed_tags))


def test_character_tags_have_their_own_threshold(wd14_v3_dir: Path, tmp_path: Path) -> None:
    tagger = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions())
    yellow = Image.new("RGB", (64, 64), (110, 110, 0))
    p_sunny = tagger.predict([Sample(demo_samples(1)[0].post, yellow)])[0]["sunny_(tagger-eval)"]
    assert 0.35 < p_sunny < 0.85, "the test needs a character probability between the two thresholds"
    strict = predicted_through_the_session(tmp_path / "a", yellow, tagger, threshold=0.35, character_threshold=0.85)
    lenient = predicted_through_the_session(tmp_path / "b", yellow, tagger, threshold=0.35, character_threshold=None)
    assert "sunny_(tagger-eval)" not in strict
    assert "sunny_(tagger-eval)" in lenient


def test_a_tag_file_that_does_not_match_the_model_is_refused(tmp_path: Path) -> None:
    directory = build_wd14_model(tmp_path / "model", dynamic_batch=True)
    with (directory / "selected_tags.csv").open("a") as file:
        file.write("99,one_more,0,1\n")
    with pytest.raises(ModelLoadError, match=f"outputs {len(WD14_TAGS)} tags but .* lists {len(WD14_TAGS) + 1}"):
        WD14Tagger.from_directory(directory, TaggerOptions())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:200]), "not a loadable ONNX model"),
        (lambda d: (d / "model.onnx").unlink(), "model file not found"),
        (lambda d: (d / "selected_tags.csv").unlink(), "tag file not found"),
        (lambda d: (d / "selected_tags.csv").write_text("id,tag\n1,x\n"), "expected the header"),
        (lambda d: (d / "selected_tags.csv").write_text("tag_id,name,category,count\n1,x,seven,1\n"), "malformed row"),
        (lambda d: (d / "selected_tags.csv").write_text("tag_id,name,category,count\n1,x,3,1\n"), "unknown category 3"),
        (lambda d: (d / "selected_tags.csv").write_bytes("tag_id,name,category,count\n1,café,0,1\n".encode("latin-1")),
         r"selected_tags\.csv: byte 32 \(line 2\) is 0xe9, not UTF-8: expected UTF-8"),
        (lambda d: (d / "selected_tags.csv").write_text("tag_id,name,category,count\n1,x,0,1\n", encoding="utf-16"),
         r"selected_tags\.csv: byte 0 \(line 1\) is 0xff, not UTF-8: expected UTF-8"),
    ],
)
def test_broken_model_directories_give_clear_errors(tmp_path: Path, damage, message: str) -> None:
    directory = build_wd14_model(tmp_path / "model", dynamic_batch=True)
    damage(directory)
    with pytest.raises(ModelLoadError, match=message):
        WD14Tagger.from_directory(directory, TaggerOptions())


def test_a_tag_file_saved_with_a_utf8_bom_reads_as_without(wd14_v3_dir: Path, tmp_path: Path) -> None:
    with_bom = tmp_path / "selected_tags.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + (wd14_v3_dir / "selected_tags.csv").read_bytes())
    assert read_selected_tags(with_bom) == read_selected_tags(wd14_v3_dir / "selected_tags.csv")


def test_an_input_that_is_not_float32_is_refused_at_load(tmp_path: Path) -> None:
    directory = build_wd14_model(tmp_path / "uint8", dynamic_batch=True, input_type="uint8")
    with pytest.raises(ModelLoadError, match=r"model\.onnx: expected a tensor\(float\) input .* found tensor\(uint8\)"):
        WD14Tagger.from_directory(directory, TaggerOptions(execution_provider="cpu"))


def test_a_model_that_outputs_logits_is_refused_naming_the_file(tmp_path: Path) -> None:
    directory = build_wd14_model(tmp_path / "logits", dynamic_batch=True, sigmoid=False)
    tagger = WD14Tagger.from_directory(directory, TaggerOptions(execution_provider="cpu"))
    with pytest.raises(ModelOutputError, match=r"logits/model\.onnx outputs values from -\d+\.\d+ to \d+\.\d+, "
                                               r"outside \[0, 1\]: logits or scores, not probabilities"):
        tagger.predict(demo_samples(2))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (None, r".*nowhere is not a directory; it must hold model\.onnx and selected_tags\.csv"),
        ((), r"no model\.onnx and no selected_tags\.csv in .*model; it must hold model\.onnx and selected_tags"),
        (("selected_tags.csv",), r"no model\.onnx in .*model; it must hold"),
        (("model.onnx",), r"no selected_tags\.csv in .*model; it must hold"),
    ],
)
def test_a_directory_without_the_model_files_is_a_spec_error(tmp_path: Path, wd14_v3_dir: Path, files,
                                                              message: str) -> None:
    directory = tmp_path / ("nowhere" if files is None else "model")
    if files is not None:
        directory.mkdir()
        for name in files:
            (directory / name).write_bytes((wd14_v3_dir / name).read_bytes())
    with pytest.raises(InvalidTaggerSpec, match=rf"--tagger=wd14-onnx:.*: {message}"):
        parse_specs(f"wd14-onnx:{directory}")


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"not a directory: .*nowhere"):
        WD14Tagger.from_directory(tmp_path / "nowhere", TaggerOptions())


def test_provider_selection() -> None:
    assert select_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("auto", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) \
        == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                         "CPUExecutionProvider"])[0] == "TensorrtExecutionProvider"
    with pytest.raises(ModelLoadError, match=r"CUDAExecutionProvider is not available.*onnxruntime-gpu"):
        select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="unknown execution provider 'tpu'"):
        select_providers("tpu", ["CPUExecutionProvider"])


@pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
                    reason="onnxruntime-gpu with a CUDA device is not available here")
def test_cuda_gives_the_cpu_probabilities(wd14_v3_dir: Path) -> None:
    samples = demo_samples(3)
    on_cpu = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions(execution_provider="cpu")).predict(samples)
    tagger = WD14Tagger.from_directory(wd14_v3_dir, TaggerOptions(execution_provider="cuda"))
    assert tagger.session.get_providers()[0] == "CUDAExecutionProvider"
    for cpu, cuda in zip(on_cpu, tagger.predict(samples), strict=True):
        np.testing.assert_allclose(list(cpu.values()), list(cuda.values()), atol=1e-4)


# The Hugging Face hub: a local server speaking the hub's file-resolution protocol, and the real client.

COMMIT = "0123456789abcdef0123456789abcdef01234567"


PINNED = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def fake_hub(httpserver, wd14_v2_dir: Path, wd14_v3_dir: Path):
    """Serve the tiny model as `SmilingWolf/wd-vit-tagger-v3` the way the hub serves files.

    `main` is at COMMIT (the v3 export); the older commit PINNED holds the v2 export.
    """
    from werkzeug import Response

    model = next(m for m in PUBLISHED_MODELS if m.name == "wd-vit-v3")
    hits: list[str] = []

    def serve(request):
        revision, filename = request.path.split("/")[-2:]
        hits.append(f"{request.method} {revision} {filename}")
        data = ((wd14_v2_dir if revision == PINNED else wd14_v3_dir) / filename).read_bytes()
        headers = {"X-Repo-Commit": PINNED if revision == PINNED else COMMIT,
                   "ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Content-Length": str(len(data))}
        return Response(data, headers=headers)  # werkzeug drops the body of a HEAD answer itself

    for revision in ("main", PINNED):
        for filename in model.files.filenames:
            httpserver.expect_request(f"/{model.repo_id}/resolve/{revision}/{filename}").respond_with_handler(serve)
    return model, httpserver.url_for("").rstrip("/"), hits


def test_fetch_then_evaluate_offline_from_the_cache(fake_hub, tmp_path: Path, monkeypatch) -> None:
    model, endpoint, hits = fake_hub
    cache = tmp_path / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    entry = get_entry(model.name)
    assert "tagger-eval fetch wd-vit-v3" in entry.unavailable_reason()

    paths = model.files.download(endpoint=endpoint)
    assert {path.name for path in paths.values()} == {"model.onnx", "selected_tags.csv"}
    assert "GET main model.onnx" in hits
    assert entry.unavailable_reason() is None

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    hits.clear()
    tagger = entry.factory(None, TaggerOptions(execution_provider="cpu"))
    assert tagger.name == "wd-vit-v3" and hits == []  # no request: the cache was enough
    assert (tagger.default_threshold, tagger.default_character_threshold) == (0.35, 0.85)
    assert len(tagger.predict(demo_samples(1))[0]) == len(WD14_TAGS)


def test_a_pinned_revision_is_fetched_and_evaluated(fake_hub, tmp_path: Path, monkeypatch) -> None:
    model, endpoint, hits = fake_hub
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # What HF_ENDPOINT does, set after import: the CLI then talks to the local hub.
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    entry = get_entry(model.name)
    with pytest.raises(ModelFilesError, match=f"at revision {PINNED} not in the Hugging Face cache; run "
                                              f"`tagger-eval fetch wd-vit-v3:{PINNED}`"):
        entry.factory(PINNED, TaggerOptions())

    assert cli_main(["fetch", f"wd-vit-v3:{PINNED}"]) == 0
    assert f"GET {PINNED} model.onnx" in hits and not any(" main " in hit for hit in hits)
    pinned = entry.factory(PINNED, TaggerOptions(execution_provider="cpu"))
    assert pinned.batch_size == 1  # the v2 export that the pinned commit holds
    with pytest.raises(ModelFilesError, match="run `tagger-eval fetch wd-vit-v3` where"):
        entry.factory(None, TaggerOptions())  # `main` was never fetched


def test_fetch_offline_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    files = HubFiles("SmilingWolf/wd-vit-tagger-v3", ("model.onnx",))
    with pytest.raises(ModelFilesError, match=r"HF_HUB_OFFLINE is set: cannot fetch SmilingWolf/wd-vit-tagger-v3"):
        files.download(cache_dir=tmp_path)


def test_fetch_from_an_unreachable_hub_names_the_repository(httpserver, tmp_path: Path) -> None:
    httpserver.expect_request("/SmilingWolf/wd-vit-tagger-v3/resolve/main/model.onnx").respond_with_data(
        "gone", status=404)
    with pytest.raises(ModelFilesError, match="SmilingWolf/wd-vit-tagger-v3"):
        HubFiles("SmilingWolf/wd-vit-tagger-v3", ("model.onnx",)).download(
            cache_dir=tmp_path, endpoint=httpserver.url_for("").rstrip("/"))


def test_a_cached_file_of_the_wrong_input_size_is_refused(tmp_path: Path, monkeypatch, httpserver) -> None:
    small = build_wd14_model(tmp_path / "small", dynamic_batch=True, size=224)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = next(m for m in PUBLISHED_MODELS if m.name == "wd-swinv2-v3")
    from werkzeug import Response

    def serve(request):
        data = (small / request.path.rsplit("/", 1)[-1]).read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.md5(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return Response(data, headers=headers)  # werkzeug drops the body of a HEAD answer itself

    for filename in model.files.filenames:
        httpserver.expect_request(f"/{model.repo_id}/resolve/main/{filename}").respond_with_handler(serve)
    model.files.download(endpoint=httpserver.url_for("").rstrip("/"))
    with pytest.raises(ModelLoadError, match="takes 224px images, wd-swinv2-v3 is published at 448px"):
        WD14Tagger.from_hub(model, TaggerOptions())


def test_the_catalogue_lists_every_published_model() -> None:
    names = {model.name: model.repo_id for model in PUBLISHED_MODELS}
    assert names == {
        "wd14-vit": "SmilingWolf/wd-v1-4-vit-tagger",
        "wd14-convnext": "SmilingWolf/wd-v1-4-convnext-tagger",
        "wd14-vit-v2": "SmilingWolf/wd-v1-4-vit-tagger-v2",
        "wd14-convnext-v2": "SmilingWolf/wd-v1-4-convnext-tagger-v2",
        "wd14-convnextv2-v2": "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
        "wd14-swinv2-v2": "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
        "wd14-moat-v2": "SmilingWolf/wd-v1-4-moat-tagger-v2",
        "wd-vit-v3": "SmilingWolf/wd-vit-tagger-v3",
        "wd-swinv2-v3": "SmilingWolf/wd-swinv2-tagger-v3",
        "wd-convnext-v3": "SmilingWolf/wd-convnext-tagger-v3",
        "wd-vit-large-v3": "SmilingWolf/wd-vit-large-tagger-v3",
        "wd-eva02-large-v3": "SmilingWolf/wd-eva02-large-tagger-v3",
    }
    assert all(model.files.filenames == ("model.onnx", "selected_tags.csv") for model in PUBLISHED_MODELS)
    assert all((model.input_size, model.threshold, model.character_threshold) == (448, 0.35, 0.85)
               for model in PUBLISHED_MODELS)


# Through the plugin, as a user runs it.


def test_the_plugin_evaluates_a_local_model_directory(pytester: pytest.Pytester, wd14_v2_dir: Path,
                                                       wd14_v3_dir: Path) -> None:
    result = pytester.runpytest(f"--tagger=wd14-onnx:{wd14_v2_dir},wd14-onnx:{wd14_v3_dir}", "--benchmark-disable",
                                "--score-floor=-5", "--execution-provider=cpu")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2 * 96)
    rows = [line.split() for line in result.outlines if line.startswith("wd14-onnx:")]
    assert len(rows) == 2
    # Both exports hold the same weights: the same scores, whatever the batch axis.
    assert rows[0][1:5] == rows[1][1:5]
    assert rows[0][1] == "0.35/c0.85"


def test_all_skips_published_models_that_are_not_downloaded(pytester: pytest.Pytester, tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = pytester.runpytest("--tagger=all", "--benchmark-disable")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["not run: * taggers cannot run here (why: -v or tagger-eval list): *"])
    verbose = pytester.runpytest("--tagger=all", "--benchmark-disable", "-v")
    verbose.stdout.fnmatch_lines(
        ["not run: wd-vit-v3: *not in the Hugging Face cache; run `tagger-eval fetch wd-vit-v3`*"])


def test_naming_a_model_that_is_not_downloaded_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = pytester.runpytest("--tagger=wd14-vit-v2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tagger 'wd14-vit-v2' cannot run here: *run `tagger-eval fetch wd14-vit-v2`*"])


def test_an_unavailable_execution_provider_fails_the_tagger_with_the_reason(pytester: pytest.Pytester,
                                                                          wd14_v3_dir: Path) -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here, so asking for it cannot fail")
    result = pytester.runpytest(f"--tagger=wd14-onnx:{wd14_v3_dir}", "--execution-provider=cuda",
                                "--benchmark-disable")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*CUDAExecutionProvider is not available here*onnxruntime-gpu*"])


def test_a_directory_without_a_model_is_one_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = pytester.runpytest(f"--tagger=wd14-onnx:{tmp_path / 'empty'}", "--benchmark-disable")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stderr.str() and "Traceback" not in result.stdout.str()
    result.stderr.fnmatch_lines([f"*--tagger=wd14-onnx:{tmp_path / 'empty'}: no model.onnx and no selected_tags.csv "
                                 f"in {tmp_path / 'empty'}; it must hold model.onnx and selected_tags.csv*"])


def test_a_model_that_fails_to_load_is_named_in_the_summary(pytester: pytest.Pytester, tmp_path: Path) -> None:
    broken = build_wd14_model(tmp_path / "broken", dynamic_batch=True)
    (broken / "model.onnx").write_bytes(b"truncated")  # both files are there: the spec passes, the load fails
    result = pytester.runpytest(f"--tagger=control,wd14-onnx:{broken}", "--benchmark-disable")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=96, failed=1, skipped=95)  # one error for the tagger, its other posts not run
    result.stdout.fnmatch_lines([f"could not load: wd14-onnx:{broken} (96 tests not evaluated): *ModelLoadError: *"
                                 "is not a loadable ONNX model*"])
