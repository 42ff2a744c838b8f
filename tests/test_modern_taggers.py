"""Camie v2, PixAI v0.9, JoyTag and ML-Danbooru on tiny models built to each family's published contract.

The preprocessing is checked against references written here from the authors' code as the contracts describe it
(per-pixel numpy in float64; PIL only for the resampling the authors' code itself calls), the predictions against
logits computed by hand from the models' weights, and the whole path as a user takes it: the Hugging Face cache,
the registry, a pytest run and `tagger-eval fetch` from a stand-in hub.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants as hub_constants
from modern_builders import (
    Head,
    build_model,
    cache_hub_files,
    camie_outputs,
    grid_features,
    make_head,
    pixai_outputs,
    write_camie_metadata,
    write_joytag_tags,
    write_ml_danbooru_classes,
    write_pixai_tags,
    write_pixai_thresholds,
)
from modern_builders import Output as ModelOutput
from PIL import Image

from tagger_eval.cli import main as cli_main
from tagger_eval.data.dataset import Post
from tagger_eval.taggers import (
    Sample,
    TaggerOptions,
    TaggerSpec,
    camie,
    create,
    get_entry,
    joytag,
    ml_danbooru,
    pixai,
    read_vocabulary,
    select_tags,
)
from tagger_eval.taggers.onnx import ModelLoadError
from tagger_eval.taggers.published_onnx import Family, PublishedOnnxTagger
from tagger_eval.tags import ARTIST, CHARACTER, COPYRIGHT, GENERAL, META, RATING, UNKNOWN_CATEGORY, YEAR

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning"),
    # Pillow's own, when the authors' convert('RGB') or paste meets palette alpha given as bytes, as it warns them.
    pytest.mark.filterwarnings("ignore:Palette images with Transparency expressed in bytes:UserWarning"),
]

COMMIT = "5eed0123456789abcdef0123456789abcdef0123"
CPU = TaggerOptions(execution_provider="cpu")
POST = Post(id=1, md5="", file_ext="png", rating="g", tags={}, image_path=Path("1.png"))

# The published input sizes, from the contracts (not from the library).
CAMIE_SIZE, PIXAI_SIZE, JOYTAG_SIZE, CAFORMER_SIZE, TRESNET_SIZE = 512, 448, 448, 448, 640
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

# Tags in output order, in each family's own spelling, and what the library must make of them.
CAMIE_TAGS = [("1girl", "general"), ("hatsune_miku", "character"), ("vocaloid", "copyright"), ("wlop", "artist"),
              ("highres", "meta"), ("rating_general", "rating"), ("rating_sensitive", "rating"),
              ("rating_questionable", "rating"), ("rating_explicit", "rating"), ("year_2021", "year")]
CAMIE_VOCABULARY = {"1girl": GENERAL, "hatsune_miku": CHARACTER, "vocaloid": COPYRIGHT, "wlop": ARTIST,
                    "highres": META, "rating:general": RATING, "rating:sensitive": RATING,
                    "rating:questionable": RATING, "rating:explicit": RATING, "year_2021": YEAR}
# Two heads whose biases differ, so reading `initial_predictions` instead of `refined_predictions` is seen; every
# tag but a rating stays far below any threshold, so the demo posts pass their floors.
CAMIE_INITIAL = make_head(11, [-5.0] * 5 + [0.0, -1.0, -2.0, -3.0] + [-5.0])
CAMIE_REFINED = make_head(12, [-4.0] * 5 + [2.0, -1.0, -2.0, -3.0] + [-4.0])
PIXAI_TAGS = [("1girl", GENERAL, []), ("solo", GENERAL, []), ("long_hair", GENERAL, []),
              ("hatsune_miku", CHARACTER, ["vocaloid"]), ("kagamine_rin", CHARACTER, ["vocaloid", "project_diva"]),
              ("hakurei_reimu", CHARACTER, ["touhou"]), ("original_girl_(tagger-eval)", CHARACTER, [])]
PIXAI_DERIVED = {"vocaloid": ("hatsune_miku", "kagamine_rin"), "project_diva": ("kagamine_rin",),
                 "touhou": ("hakurei_reimu",)}
PIXAI_HEAD = make_head(21, [-3.0, -3.5, -4.0, -5.0, -5.5, -6.0, -6.5], scale=0.1)
JOYTAG_TAGS = ["1girl", "bangs", "solo", "black_legwear", "eyebrows_visible_through_hair", "megumin",
               "fate_(series)", "\\m/"]
JOYTAG_HEAD = make_head(31, [-3.0 - 0.25 * index for index in range(len(JOYTAG_TAGS))], scale=0.1)
ML_DANBOORU_TAGS = ["1girl", "solo", "bangs", "long_hair", "smile", "black_legwear"]
CAFORMER_HEAD = make_head(41, [-3.0, -3.2, -3.4, -3.6, -3.8, -4.0], scale=0.1)
TRESNET_HEAD = make_head(42, [-3.0, -3.2, -3.4, -3.6, -3.8, -4.0], scale=0.1)


# The references: the authors' preprocessing, per pixel.

def stored_rgb(image: Image.Image) -> np.ndarray:
    """The colour each pixel stores, whatever its alpha, (H, W, 3) uint8, read from the raw bands."""
    bands = np.asarray(image)
    if image.mode == "P":
        palette = np.asarray(image.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
        return palette[bands]
    if image.mode in ("L", "LA"):
        grey = bands if image.mode == "L" else bands[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2)
    assert image.mode in ("RGB", "RGBA"), image.mode
    return bands[:, :, :3]


def alpha_of(image: Image.Image) -> np.ndarray | None:
    """Each pixel's opacity 0-255 (a palette image's from its transparent index, or its tRNS bytes: one alpha per
    index, opaque past them), or None without alpha."""
    if image.mode in ("RGBA", "LA"):
        return np.asarray(image)[:, :, -1]
    transparency = image.info.get("transparency") if image.mode == "P" else None
    if isinstance(transparency, int):
        return np.where(np.asarray(image) == transparency, 0, 255).astype(np.uint8)
    if isinstance(transparency, bytes):
        table = np.full(256, 255, dtype=np.uint8)
        table[: len(transparency)] = np.frombuffer(transparency, dtype=np.uint8)
        return table[np.asarray(image)]
    return None


def on_white(image: Image.Image) -> np.ndarray:
    """The stored colour composited on white with the alpha: PIL's `paste(mask=alpha)` rounds
    (colour * a + 255 * (255 - a)) / 255 to the nearest integer."""
    rgb, alpha = stored_rgb(image).astype(np.float64), alpha_of(image)
    if alpha is None:
        return rgb.astype(np.uint8)
    a = alpha.astype(np.float64)[:, :, None]
    return np.floor((rgb * a + 255.0 * (255.0 - a)) / 255.0 + 0.5).astype(np.uint8)


def chw(pixels: np.ndarray, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)
        ) -> np.ndarray:
    """ToTensor then Normalize, one channel at a time in float64."""
    return np.stack([(pixels[:, :, channel] / 255.0 - mean[channel]) / std[channel] for channel in range(3)])


def camie_reference(image: Image.Image, size: int, *, truncate: bool = True, alpha: str = "stored") -> np.ndarray:
    """`onnx_inference.py`: RGB (alpha dropped), long side to `size` and the short side `int(size / aspect)`
    (truncated) with LANCZOS, centred on (124, 116, 104), ImageNet mean and std."""
    rgb = stored_rgb(image) if alpha == "stored" else on_white(image)
    height, width = rgb.shape[:2]
    short = (lambda value: int(value)) if truncate else round
    new_width, new_height = (size, short(size / (width / height))) if width > height else (
        short(size * (width / height)), size)
    resized = np.asarray(Image.fromarray(rgb).resize((new_width, new_height), Image.Resampling.LANCZOS))
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:, :] = (124, 116, 104)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    return chw(canvas, IMAGENET_MEAN, IMAGENET_STD)


def pixai_reference(image: Image.Image, size: int, *, alpha: str | None = None) -> np.ndarray:
    """The handler's `pil_to_rgb` (RGBA and palette on white with the alpha as mask, every other mode
    `convert('RGB')`), `Resize((448, 448))` (PIL bilinear), mean = std = 0.5."""
    composite = alpha == "white" if alpha is not None else image.mode in ("RGBA", "P")
    rgb = on_white(image) if composite else stored_rgb(image)
    stretched = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return chw(stretched, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def joytag_reference(image: Image.Image, size: int, *, alpha: str = "stored") -> np.ndarray:
    """`prepare_image`: pasted without a mask at the centre of a white square of the long side, BICUBIC to 448
    only when that side differs, CLIP mean and std."""
    rgb = stored_rgb(image) if alpha == "stored" else on_white(image)
    height, width = rgb.shape[:2]
    side = max(height, width)
    square = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = rgb
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))
    return chw(square, CLIP_MEAN, CLIP_STD)


def ml_danbooru_reference(image: Image.Image, size: int, *, alpha: str = "stored") -> np.ndarray:
    """`demo.py`: `convert('RGB')`, `Resize((S, S))` (PIL bilinear), `ToTensor()` without mean or std."""
    rgb = stored_rgb(image) if alpha == "stored" else on_white(image)
    return chw(np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)))


# Images that expose each rule.

def texture(width: int, height: int, seed: int) -> np.ndarray:
    """A gradient with noise: resampling, placement and the short side's rounding all show in it."""
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(-40, 41, (height, width, 3))
    base = np.stack([x * 200 // max(width - 1, 1), y * 200 // max(height - 1, 1), (x * 3 + y * 5) % 200], axis=2)
    return np.clip(base + 30 + noise, 0, 255).astype(np.uint8)


def alpha_ramp(width: int, height: int) -> np.ndarray:
    """Transparent on the left third, a ramp in the middle, opaque on the right."""
    x = np.arange(width)
    ramp = np.clip((x - width / 3) * 255 / (width / 3), 0, 255).astype(np.uint8)
    return np.repeat(ramp[None, :], height, axis=0)


def rgba_image() -> Image.Image:
    """Transparent pixels whose stored colour is a saturated red, not white; 300x41: Camie's short side is 69.97."""
    rgb = texture(300, 41, 3)
    rgb[:, :100] = (200, 30, 60)
    return Image.fromarray(np.dstack([rgb, alpha_ramp(300, 41)]), "RGBA")


def palette_image() -> Image.Image:
    """41x300 (portrait), index 3 transparent with a green stored colour."""
    indices = (texture(41, 300, 4)[:, :, 0] // 16).astype(np.uint8)
    indices[:100] = 3
    image = Image.fromarray(indices, "P")
    colours = np.random.default_rng(5).integers(0, 256, (16, 3)).astype(np.uint8)
    colours[3] = (20, 160, 40)
    image.putpalette(colours.reshape(-1).tolist())
    image.info["transparency"] = 3
    return image


def palette_alpha_image() -> Image.Image:
    """60x45, tRNS bytes: indices 0-3 at alpha 0, 60, 128 and 200 over saturated colours, the rest opaque."""
    indices = (texture(60, 45, 10)[:, :, 1] // 16).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    colours = np.random.default_rng(11).integers(0, 256, (16, 3)).astype(np.uint8)
    colours[:4] = [(250, 0, 0), (0, 0, 250), (0, 120, 0), (90, 0, 90)]
    image.putpalette(colours.reshape(-1).tolist())
    image.info["transparency"] = bytes([0, 60, 128, 200])
    return image


def la_image() -> Image.Image:
    """Grey with alpha, 50x37: Camie's short side is 378.88."""
    grey = texture(50, 37, 6)[:, :, 0]
    grey[:, :16] = 40  # dark where transparent: white would differ
    return Image.fromarray(np.dstack([grey, alpha_ramp(50, 37)]), "LA")


IMAGES: dict[str, Callable[[int], Image.Image]] = {
    "rgb-landscape-large": lambda _size: Image.fromarray(texture(1100, 700, 1)),  # Camie: 325.8 -> 325
    "rgb-portrait-small": lambda _size: Image.fromarray(texture(37, 50, 2)),  # upscaled; Camie: 378.88 -> 378
    "rgba-transparent": lambda _size: rgba_image(),
    "palette-transparent": lambda _size: palette_image(),
    "palette-alpha-bytes": lambda _size: palette_alpha_image(),
    "la": lambda _size: la_image(),
    "greyscale": lambda _size: Image.fromarray(texture(901, 1500, 7)[:, :, 1]),  # L; Camie: 307.54 -> 307
    "square-of-the-input": lambda size: Image.fromarray(texture(size, size, 8)),  # JoyTag: no resize
    "long-side-of-the-input": lambda size: Image.fromarray(texture(size, 300, 9)),  # JoyTag: padded, no resize
}


@dataclass(frozen=True)
class Published:
    """One published model as the tests build it: its files, where the hub keeps them, and how to predict it."""

    name: str
    repo_id: str
    size: int
    family: Family
    reference: Callable[[Image.Image, int], np.ndarray]
    head: Head
    names: tuple[str, ...]  # the library's tag names in output order
    files: tuple[str, ...]  # the published file names, model first

    def expected(self, image: Image.Image) -> dict[str, float]:
        """The probability of each output tag, by hand: the model's head on the reference input, then a sigmoid."""
        logits = self.head.logits(grid_features(self.reference(image, self.size)))
        return dict(zip(self.names, (1.0 / (1.0 + np.exp(-logits))).tolist(), strict=True))


CAMIE = Published("camie-v2", "Camais03/camie-tagger-v2", CAMIE_SIZE, camie.FAMILY, camie_reference, CAMIE_REFINED,
                  tuple(CAMIE_VOCABULARY), ("camie-tagger-v2.onnx", "camie-tagger-v2-metadata.json"))
PIXAI = Published("pixai-v0.9", "deepghs/pixai-tagger-v0.9-onnx", PIXAI_SIZE, pixai.FAMILY, pixai_reference,
                  PIXAI_HEAD, tuple(name for name, _, _ in PIXAI_TAGS),
                  ("model.onnx", "selected_tags.csv", "thresholds.csv"))
JOYTAG = Published("joytag", "fancyfeast/joytag", JOYTAG_SIZE, joytag.FAMILY, joytag_reference, JOYTAG_HEAD,
                   tuple(JOYTAG_TAGS), ("model.onnx", "top_tags.txt"))
CAFORMER = Published("ml-danbooru-caformer", "deepghs/ml-danbooru-onnx", CAFORMER_SIZE, ml_danbooru.FAMILY,
                     ml_danbooru_reference, CAFORMER_HEAD, tuple(ML_DANBOORU_TAGS),
                     ("ml_caformer_m36_dec-5-97527.onnx", "classes.json"))
TRESNET = Published("ml-danbooru-tresnet", "deepghs/ml-danbooru-onnx", TRESNET_SIZE, ml_danbooru.FAMILY,
                    ml_danbooru_reference, TRESNET_HEAD, tuple(ML_DANBOORU_TAGS),
                    ("TResnet-D-FLq_ema_6-30000.onnx", "classes.json"))
MODELS = {model.name: model for model in (CAMIE, PIXAI, JOYTAG, CAFORMER, TRESNET)}
LIBRARY_MODELS = {model.name: model for model in (*camie.PUBLISHED_MODELS, *pixai.PUBLISHED_MODELS,
                                                  *joytag.PUBLISHED_MODELS, *ml_danbooru.PUBLISHED_MODELS)}


def load(model: Published, files: Mapping[str, Path]) -> PublishedOnnxTagger:
    """The tagger built on the given files, as the registry builds it from the cache."""
    return PublishedOnnxTagger(LIBRARY_MODELS[model.name], model.family, files, CPU)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Each model's published files (file name -> path), built once for the module."""
    root = tmp_path_factory.mktemp("published")
    camie_files = {
        "camie-tagger-v2.onnx": build_model(root / "camie" / "camie-tagger-v2.onnx", CAMIE_SIZE,
                                            camie_outputs(CAMIE_INITIAL, CAMIE_REFINED)),
        "camie-tagger-v2-metadata.json": write_camie_metadata(root / "camie" / "camie-tagger-v2-metadata.json",
                                                              CAMIE_TAGS),
    }
    pixai_files = {
        "model.onnx": build_model(root / "pixai" / "model.onnx", PIXAI_SIZE, pixai_outputs(PIXAI_HEAD)),
        "selected_tags.csv": write_pixai_tags(root / "pixai" / "selected_tags.csv", PIXAI_TAGS),
        "thresholds.csv": write_pixai_thresholds(root / "pixai" / "thresholds.csv"),
    }
    joytag_files = {
        "model.onnx": build_model(root / "joytag" / "model.onnx", JOYTAG_SIZE,
                                  [ModelOutput("output", "logits", JOYTAG_HEAD)]),
        "top_tags.txt": write_joytag_tags(root / "joytag" / "top_tags.txt", JOYTAG_TAGS),
    }
    classes = write_ml_danbooru_classes(root / "ml-danbooru" / "classes.json", ML_DANBOORU_TAGS)
    ml_files = {  # one repository, one classes.json; both exports take any height and width
        model.name: {model.files[0]: build_model(root / "ml-danbooru" / model.files[0], model.size,
                                                 [ModelOutput("output", "logits", model.head)], dynamic_sides=True),
                     "classes.json": classes}
        for model in (CAFORMER, TRESNET)
    }
    return {"camie-v2": camie_files, "pixai-v0.9": pixai_files, "joytag": joytag_files, **ml_files}


@pytest.fixture(scope="module")
def filled_cache(published: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache holding every model at COMMIT, as `tagger-eval fetch` leaves it."""
    cache = tmp_path_factory.mktemp("hub")
    for name, files in published.items():
        cache_hub_files(cache, MODELS[name].repo_id, files, COMMIT)
    return cache


@pytest.fixture
def hub_cache(filled_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(filled_cache))
    return filled_cache


# 1-2. The preprocessing, against the references.

def test_the_published_models_declare_the_contracts_sizes_and_files() -> None:
    """The sizes and file names the references and the hub layout here assume are the library's."""
    assert LIBRARY_MODELS.keys() == MODELS.keys()
    for model in MODELS.values():
        entry = LIBRARY_MODELS[model.name]
        assert (entry.repo_id, entry.input_size, entry.files.filenames) == (model.repo_id, model.size, model.files)


@pytest.mark.parametrize("case", list(IMAGES))
@pytest.mark.parametrize("model", [CAMIE, PIXAI, JOYTAG, CAFORMER, TRESNET], ids=lambda model: model.name)
def test_preprocessing_matches_the_authors_code(model: Published, case: str) -> None:
    image = IMAGES[case](model.size)
    prepared = model.family.prepare(image, model.size)
    assert prepared.shape == (3, model.size, model.size) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, model.reference(image, model.size), rtol=0, atol=1e-6)


# Each rule, and the wrong reading of it the images above must tell apart (else the test above proves nothing).
WRONG_READINGS = [
    *[(CAMIE, case, {"truncate": False}) for case in ("rgb-landscape-large", "rgb-portrait-small",
                                                      "rgba-transparent", "palette-transparent", "la", "greyscale")],
    *[(model, case, {"alpha": "white"}) for model in (CAMIE, JOYTAG, CAFORMER, TRESNET)
      for case in ("rgba-transparent", "palette-transparent", "palette-alpha-bytes", "la")],
    (PIXAI, "rgba-transparent", {"alpha": "stored"}),
    (PIXAI, "palette-transparent", {"alpha": "stored"}),
    (PIXAI, "palette-alpha-bytes", {"alpha": "stored"}),
    (PIXAI, "la", {"alpha": "white"}),  # convert('RGB') drops LA's alpha: no white
]


@pytest.mark.parametrize(("model", "case", "wrong"), WRONG_READINGS,
                         ids=[f"{model.name}-{case}-" + ",".join(f"{key}={value}" for key, value in wrong.items())
                              for model, case, wrong in WRONG_READINGS])
def test_the_images_tell_each_rule_from_its_wrong_reading(model: Published, case: str,
                                                          wrong: dict[str, object]) -> None:
    image = IMAGES[case](model.size)
    prepared = model.family.prepare(image, model.size)
    assert np.abs(prepared - model.reference(image, model.size, **wrong)).max() > 0.05


def test_joytag_does_not_resample_an_image_whose_long_side_is_the_input() -> None:
    """448x300: white bands above and below, the pixels themselves untouched."""
    image = IMAGES["long-side-of-the-input"](JOYTAG_SIZE)
    prepared = joytag.FAMILY.prepare(image, JOYTAG_SIZE).astype(np.float64)
    pixels = prepared.transpose(1, 2, 0) * np.array(CLIP_STD) + np.array(CLIP_MEAN)
    np.testing.assert_allclose(pixels[74:374] * 255.0, np.asarray(image), atol=1e-3)
    np.testing.assert_allclose(pixels[:74] * 255.0, 255.0, atol=1e-3)
    np.testing.assert_allclose(pixels[374:] * 255.0, 255.0, atol=1e-3)


# 3. End to end from the hub cache: the registry builds each tagger, which predicts what the weights say.

@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_predictions_are_the_sigmoid_of_the_published_output(model: Published, hub_cache: Path) -> None:
    tagger = create(TaggerSpec(model.name), CPU)
    try:
        images = [IMAGES["rgba-transparent"](model.size), IMAGES["rgb-portrait-small"](model.size)]
        predictions = tagger.predict([Sample(POST, image) for image in images])  # one batch of two
        assert len(predictions) == 2
        for image, predicted in zip(images, predictions, strict=True):
            expected = model.expected(image)
            if model is PIXAI:
                expected |= {ip: max(expected[character] for character in characters)
                             for ip, characters in PIXAI_DERIVED.items()}
            assert predicted.keys() == expected.keys()
            assert predicted == pytest.approx(expected, rel=0, abs=1e-5)
    finally:
        tagger.close()


def test_camie_reads_refined_not_initial_predictions(hub_cache: Path) -> None:
    """The initial head's probabilities differ from the refined head's by far more than the tolerance above."""
    image = IMAGES["rgba-transparent"](CAMIE_SIZE)
    [predicted] = create(TaggerSpec("camie-v2"), CPU).predict([Sample(POST, image)])
    initial = CAMIE_INITIAL.logits(grid_features(camie_reference(image, CAMIE_SIZE)))
    assert max(abs(predicted[name] - 1.0 / (1.0 + np.exp(-logit)))
               for name, logit in zip(CAMIE_VOCABULARY, initial, strict=True)) > 0.01


def test_a_fixed_batch_export_is_fed_image_by_image(published: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    """The author's Camie export may declare a batch of 1: a batch of two still gives each image its own row."""
    path = build_model(tmp_path / "camie-tagger-v2.onnx", CAMIE_SIZE, camie_outputs(CAMIE_INITIAL, CAMIE_REFINED),
                       batch=1)
    tagger = load(CAMIE, {**published["camie-v2"], "camie-tagger-v2.onnx": path})
    images = [IMAGES["la"](CAMIE_SIZE), IMAGES["greyscale"](CAMIE_SIZE)]
    assert tagger.batch_size == 1
    predictions = tagger.predict([Sample(POST, image) for image in images])
    assert predictions == [pytest.approx(CAMIE.expected(image), rel=0, abs=1e-5) for image in images]


def test_camie_vocabulary_ratings_and_years(hub_cache: Path) -> None:
    tagger = create(TaggerSpec("camie-v2"), CPU)
    assert dict(tagger.vocabulary()) == CAMIE_VOCABULARY
    assert read_vocabulary(TaggerSpec("camie-v2")) == CAMIE_VOCABULARY  # from the metadata alone
    assert tagger.threshold_profiles == {"micro-opt": 0.614286, "macro-opt": 0.491837}
    assert (tagger.default_profile, tagger.default_threshold, tagger.default_character_threshold) == (
        "micro-opt", 0.614286, None)


def test_pixai_vocabulary_derives_copyrights_from_characters(hub_cache: Path) -> None:
    tagger = create(TaggerSpec("pixai-v0.9"), CPU)
    expected = {name: category for name, category, _ in PIXAI_TAGS} | dict.fromkeys(PIXAI_DERIVED, COPYRIGHT)
    assert dict(tagger.vocabulary()) == expected
    assert read_vocabulary(TaggerSpec("pixai-v0.9")) == expected
    assert (tagger.default_threshold, tagger.default_character_threshold) == (0.3, 0.85)
    assert dict(tagger.tag_counts()) == {name: 5000 - index for index, (name, _, _) in enumerate(PIXAI_TAGS)}
    # A copyright derived from a character takes the character threshold, as its character does.
    probabilities = {"1girl": 0.31, "hatsune_miku": 0.84, "vocaloid": 0.84, "touhou": 0.86, "hakurei_reimu": 0.86}
    assert select_tags(probabilities, 0.3, 0.85, tagger.vocabulary(), tagger.character_categories) == {
        "1girl", "touhou", "hakurei_reimu"}


def test_pixai_thresholds_come_from_its_thresholds_file(published: dict[str, dict[str, Path]],
                                                        tmp_path: Path) -> None:
    files = {**published["pixai-v0.9"], "thresholds.csv": write_pixai_thresholds(tmp_path / "t.csv", 0.25, 0.8)}
    tagger = load(PIXAI, files)
    assert (tagger.default_threshold, tagger.default_character_threshold) == (0.25, 0.8)


@pytest.mark.parametrize(("name", "tags"), [("joytag", JOYTAG_TAGS), ("ml-danbooru-caformer", ML_DANBOORU_TAGS),
                                            ("ml-danbooru-tresnet", ML_DANBOORU_TAGS)])
def test_taggers_without_categories_leave_them_unknown(name: str, tags: list[str], hub_cache: Path) -> None:
    tagger = create(TaggerSpec(name), CPU)
    assert dict(tagger.vocabulary()) == dict.fromkeys(tags, UNKNOWN_CATEGORY)
    assert read_vocabulary(TaggerSpec(name)) == dict.fromkeys(tags, UNKNOWN_CATEGORY)
    assert tagger.threshold_profiles == {} and tagger.default_character_threshold is None
    assert tagger.default_threshold == {"joytag": 0.4}.get(name, 0.7)


def test_ml_danbooru_reads_the_authors_dict_of_classes(published: dict[str, dict[str, Path]],
                                                       tmp_path: Path) -> None:
    """`{"0": name, ...}` written in reverse key order: the names follow the keys."""
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({str(index): ML_DANBOORU_TAGS[index]
                                for index in reversed(range(len(ML_DANBOORU_TAGS)))}), encoding="utf-8")
    files = {CAFORMER.files[0]: published["ml-danbooru-caformer"][CAFORMER.files[0]], "classes.json": path}
    tagger = load(CAFORMER, files)
    image = IMAGES["la"](CAFORMER_SIZE)
    assert tagger.tags.names == tuple(ML_DANBOORU_TAGS)
    assert tagger.predict([Sample(POST, image)])[0] == pytest.approx(CAFORMER.expected(image), rel=0, abs=1e-5)


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_identity_names_the_repository_commit_and_files(model: Published, hub_cache: Path,
                                                        published: dict[str, dict[str, Path]]) -> None:
    identity = create(TaggerSpec(model.name), CPU).identity()
    assert (identity["repo_id"], identity["revision"], identity["family"]) == (model.repo_id, COMMIT,
                                                                              model.family.name)
    # The model and its tags under the WD models' keys, so results compare across families; other files by name.
    keys = {model.files[0]: "model", model.files[1]: "tags"}
    digests = {f"{keys.get(name, Path(name).stem)}_sha256": hashlib.sha256(path.read_bytes()).hexdigest()
               for name, path in published[model.name].items()}
    assert {key: value for key, value in identity.items() if key.endswith("_sha256")} == digests


# 4. A file that is not the published model fails at load, naming the file.

def test_a_model_of_another_input_size_is_refused(published: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    small = build_model(tmp_path / "model.onnx", 224, [ModelOutput("output", "logits", JOYTAG_HEAD)])
    with pytest.raises(ModelLoadError, match=r"takes 224x224 images, joytag is published at 448px") as error:
        load(JOYTAG, {**published["joytag"], "model.onnx": small})
    assert str(small) in str(error.value)


def test_an_nhwc_model_is_refused_by_an_nchw_family(published: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    nhwc = build_model(tmp_path / "model.onnx", 448, [ModelOutput("output", "logits", JOYTAG_HEAD)], layout="NHWC")
    with pytest.raises(ModelLoadError, match=r"expected an NCHW RGB input \(JoyTag\), found shape") as error:
        load(JOYTAG, {**published["joytag"], "model.onnx": nhwc})
    assert str(nhwc) in str(error.value)


def test_a_camie_model_without_refined_predictions_is_refused(published: dict[str, dict[str, Path]],
                                                              tmp_path: Path) -> None:
    path = build_model(tmp_path / "camie-tagger-v2.onnx", CAMIE_SIZE,
                       camie_outputs(CAMIE_INITIAL, CAMIE_REFINED, refined_name="refined"))
    with pytest.raises(ModelLoadError, match=r"no output named 'refined_predictions' \(Camie v2\); its outputs are "
                                             r"\['initial_predictions', 'refined', 'selected_candidates'\]") as error:
        load(CAMIE, {**published["camie-v2"], "camie-tagger-v2.onnx": path})
    assert str(path) in str(error.value)


@pytest.mark.parametrize("model", [CAMIE, PIXAI, JOYTAG, CAFORMER], ids=lambda model: model.name)
def test_a_tag_file_of_another_length_is_refused(model: Published, published: dict[str, dict[str, Path]],
                                                 tmp_path: Path) -> None:
    """One tag fewer in the tag file than the model outputs."""
    writers: dict[str, Callable[[Path], Path]] = {
        "camie-tagger-v2-metadata.json": lambda path: write_camie_metadata(path, CAMIE_TAGS[:-1]),
        "selected_tags.csv": lambda path: write_pixai_tags(path, PIXAI_TAGS[:-1]),
        "top_tags.txt": lambda path: write_joytag_tags(path, JOYTAG_TAGS[:-1]),
        "classes.json": lambda path: write_ml_danbooru_classes(path, ML_DANBOORU_TAGS[:-1]),
    }
    tags_file = model.files[1]
    files = {**published[model.name], tags_file: writers[tags_file](tmp_path / tags_file)}
    width = model.head.width
    with pytest.raises(ModelLoadError, match=f"outputs {width} tags but its tag file lists {width - 1}") as error:
        load(model, files)
    assert str(files[model.files[0]]) in str(error.value)


CAMIE_METADATA = json.dumps({"dataset_info": {"tag_mapping": {"idx_to_tag": {"0": "1girl"},
                                                              "tag_to_category": {"1girl": "general"}}}})
PIXAI_HEADER = "id,tag_id,name,category,count,ips\n"
MALFORMED = [
    (CAMIE, "camie-tagger-v2-metadata.json", "{not json", r"not Camie v2 metadata"),
    (CAMIE, "camie-tagger-v2-metadata.json", CAMIE_METADATA.replace("tag_to_category", "categories"),
     r"not Camie v2 metadata .*KeyError: 'tag_to_category'"),
    (CAMIE, "camie-tagger-v2-metadata.json", CAMIE_METADATA.replace('"general"', '"species"'),
     r"not Camie v2 metadata .*KeyError: 'species'"),
    (CAMIE, "camie-tagger-v2-metadata.json", CAMIE_METADATA.replace('"0"', '"1"'), r"not Camie v2 metadata"),
    (PIXAI, "selected_tags.csv", PIXAI_HEADER + "0,1,1girl,general,10,[]\n", r":2: malformed row"),
    (PIXAI, "selected_tags.csv", PIXAI_HEADER + "0,1,1girl,0,10,[]\n1,2,reimu,4,10,touhou\n", r":3: malformed row"),
    (PIXAI, "selected_tags.csv", PIXAI_HEADER + "0,1,touhou,3,10,[]\n", r":2: expected category 0 or 4"),
    (PIXAI, "selected_tags.csv", PIXAI_HEADER + '0,1,reimu,4,10,"{""a"": 1}"\n', r"a JSON list of copyrights"),
    (PIXAI, "selected_tags.csv", "id,tag_id,name,category,count\n0,1,1girl,0,10\n", r"missing ips"),
    (PIXAI, "selected_tags.csv", PIXAI_HEADER + "0,1,1girl\n", r":2: malformed row"),
    (PIXAI, "thresholds.csv", "category,name,threshold\n0,general,high\n", r"not a number"),
    (PIXAI, "thresholds.csv", "category,name,limit\n0,general,0.3\n", r"missing threshold"),
    (JOYTAG, "top_tags.txt", "\n\n", r"lists no tags"),
    (CAFORMER, "classes.json", "{not json", r"expected a list of tag names"),
    (CAFORMER, "classes.json", '{"0": "1girl", "2": "solo"}', r"expected a list of tag names"),
    (CAFORMER, "classes.json", "[1, 2]", r"expected a non-empty list of tag names"),
    (CAFORMER, "classes.json", "[]", r"expected a non-empty list of tag names"),
]


@pytest.mark.parametrize(("model", "filename", "content", "message"), MALFORMED,
                         ids=[f"{model.name}-{index}" for index, (model, *_) in enumerate(MALFORMED)])
def test_malformed_tag_files_are_refused_naming_the_file(model: Published, filename: str, content: str,
                                                         message: str, published: dict[str, dict[str, Path]],
                                                         tmp_path: Path) -> None:
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelLoadError, match=message) as error:
        load(model, {**published[model.name], filename: path})
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize(("content", "message"), [
    ("category,name,threshold\n0,general\n", "a category or threshold is not a number"),  # a short row
    ("category,name,threshold\n", "has a header but no rows"),
])
def test_a_thresholds_file_without_thresholds_is_refused(published: dict[str, dict[str, Path]], tmp_path: Path,
                                                         content: str, message: str) -> None:
    path = tmp_path / "thresholds.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ModelLoadError, match=message) as error:
        load(PIXAI, {**published["pixai-v0.9"], "thresholds.csv": path})
    assert str(error.value).startswith(str(path))


# 5. A run through pytest, from the cache.

def summary_lines(result: pytest.RunResult) -> dict[str, str]:
    """The summary table's rows by tagger, as printed."""
    lines = result.outlines
    start = next(index for index, line in enumerate(lines) if "tagger-eval summary" in line)
    rows = {}
    for line in lines[start + 5 :]:
        if not line or line.startswith(("=", "not run:", "could not load:")):
            break
        rows[line.split()[0]] = line
    return rows


ROW = re.compile(r"(?P<tagger>\S+)\s+(?P<threshold>\d\.\d\d(?:/c\d\.\d\d)?(?: \S+)?)\s+(?P<posts>\d+)\s+"
                 r"(?P<mean>-?\d\.\d{3})\s+(?P<median>-?\d\.\d{3})\s+(?P<ms>\d+\.\d)\s+(?P<wrong>-|\S+%)\s+"
                 r"(?P<practical>-|\S+%)\s+(?P<rating>n/a|\d+\.\d%)\s+(?P<passed>\d+)\s+(?P<failed>\d+)\s+"
                 r"(?P<skipped>\d+)\s+(?P<errors>\d+)$")


@pytest.mark.parametrize(("profile", "camie_threshold"), [(None, "0.61 micro-opt"), ("macro-opt", "0.49 macro-opt")])
def test_a_pytest_run_of_three_families(profile: str | None, camie_threshold: str, pytester: pytest.Pytester,
                                        demo_subset: Callable[..., Path], hub_cache: Path) -> None:
    db_path = demo_subset(6)
    options = [f"--threshold-profile={profile}"] if profile else []
    result = pytester.runpytest_inprocess("--tagger=joytag,pixai-v0.9,camie-v2", f"--dataset={db_path}",
                                          "--benchmark-disable", *options)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=3 * 6)
    rows = {name: ROW.fullmatch(line) for name, line in summary_lines(result).items()}
    assert sorted(rows) == ["camie-v2", "joytag", "pixai-v0.9"] and all(rows.values()), summary_lines(result)
    cells = {name: match.groupdict() for name, match in rows.items() if match}
    assert [cells[name]["threshold"] for name in ("camie-v2", "pixai-v0.9", "joytag")] == [
        camie_threshold, "0.30/c0.85", "0.40"]
    assert cells["joytag"]["rating"] == cells["pixai-v0.9"]["rating"] == "n/a"
    assert cells["camie-v2"]["rating"] != "n/a"
    assert all((cell["posts"], cell["passed"], cell["errors"]) == ("6", "6", "0") for cell in cells.values())


def test_an_unpublished_profile_fails_the_load_naming_the_published_ones(
        pytester: pytest.Pytester, demo_subset: Callable[..., Path], hub_cache: Path) -> None:
    db_path = demo_subset(3)
    result = pytester.runpytest_inprocess("--tagger=joytag,camie-v2", f"--dataset={db_path}", "--benchmark-disable",
                                          "--threshold-profile=camie-v2=nope")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1, skipped=2)
    output = result.stdout.str()
    assert "--threshold-profile: camie-v2 has no profile 'nope'; it publishes micro-opt, macro-opt" in output
    assert re.search(r"could not load: camie-v2 \(\d+ tests not evaluated\): .*no profile 'nope'", output)


# 6. `tagger-eval fetch` fills the cache from a hub.

@pytest.fixture
def stand_in_hub(httpserver, published: dict[str, dict[str, Path]], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """JoyTag and PixAI served as the hub serves files (`/{repo}/resolve/{revision}/{filename}`), HF_ENDPOINT
    pointing at it and an empty cache."""
    from werkzeug import Response

    hits: list[str] = []

    def serve(request) -> Response:
        repo_id = "/".join(request.path.strip("/").split("/")[:2])
        filename = request.path.rsplit("/", 1)[-1]
        name = next(model.name for model in (JOYTAG, PIXAI) if model.repo_id == repo_id)
        hits.append(f"{request.method} {repo_id} {filename}")
        data = published[name][filename].read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return Response(data, headers=headers)  # werkzeug drops the body of a HEAD answer itself

    for model in (JOYTAG, PIXAI):
        for filename in model.files:
            httpserver.expect_request(f"/{model.repo_id}/resolve/main/{filename}").respond_with_handler(serve)
    cache = tmp_path / "hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", httpserver.url_for("").rstrip("/"))
    return cache, hits


def test_fetch_fills_the_cache_from_the_hub(stand_in_hub: tuple[Path, list[str]],
                                            published: dict[str, dict[str, Path]], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cache, hits = stand_in_hub
    for model in (JOYTAG, PIXAI):
        reason = get_entry(model.name).unavailable_reason()
        assert reason is not None and f"run `tagger-eval fetch {model.name}`" in reason
    assert cli_main(["fetch", "joytag", "pixai-v0.9"]) == 0, capsys.readouterr().err
    assert {f"GET {model.repo_id} {filename}" for model in (JOYTAG, PIXAI) for filename in model.files} <= set(hits)
    for model in (JOYTAG, PIXAI):
        assert get_entry(model.name).unavailable_reason() is None
        snapshot = cache / f"models--{model.repo_id.replace('/', '--')}" / "snapshots" / COMMIT
        for filename in model.files:
            assert (snapshot / filename).read_bytes() == published[model.name][filename].read_bytes()
    # Evaluation never asks the hub: offline, the fetched files are enough.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    hits.clear()
    image = IMAGES["palette-transparent"](PIXAI_SIZE)
    [predicted] = create(TaggerSpec("pixai-v0.9"), CPU).predict([Sample(POST, image)])
    assert hits == [] and predicted["touhou"] == pytest.approx(PIXAI.expected(image)["hakurei_reimu"], abs=1e-5)
