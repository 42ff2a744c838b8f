"""KichangKim's DeepDanbooru: a Keras 2 model in a project directory, run in process on onnxruntime once converted.

A project directory holds the model (`model-<type>.h5`, newer ones `.keras`), `tags.txt` (one tag per line, the
order of the outputs), usually `project.json` (`model`, `image_width`, `image_height`) and sometimes
`tags-character.txt` / `tags-general.txt`.

The model is converted to ONNX the first time it is loaded where TensorFlow is installed, verified and cached
(`tagger_eval.taggers.deepdanbooru_onnx`); from then on it loads without TensorFlow. Preprocessing is DeepDanbooru's
`load_image_for_evaluate`, in `tagger_eval.taggers.deepdanbooru_image`.

TensorFlow and tf-keras are imported only when a model is converted or run on them: importing this module stays
cheap, because the plugin imports every backend's registry entries on each pytest run.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from tagger_eval.checksums import file_digest
from tagger_eval.config import ExecutionProvider, TaggerOptions
from tagger_eval.taggers.base import (
    REAL_MODEL_SCORE_FLOOR,
    Sample,
    Tagger,
    TaggerError,
    check_probabilities,
    read_text_file,
)
from tagger_eval.taggers.deepdanbooru_image import model_input
from tagger_eval.taggers.deepdanbooru_onnx import (
    CACHE_FOLDER,
    CONVERSION_PACKAGES,
    INSTALL_HINT,
    KERAS_PACKAGES,
    DeepDanbooruError,
    KerasModel,
    OnnxModel,
    cached_conversion,
    installed,
    model_digest,
    onnx_or_keras,
)
from tagger_eval.taggers.onnx import preferred_batch_size
from tagger_eval.taggers.registry import InvalidTaggerSpec, TaggerEntry
from tagger_eval.taggers.release import cache_dir, fetch_release_zip
from tagger_eval.tags import CHARACTER, GENERAL, RATING, is_rating, normalise_tag

if TYPE_CHECKING:
    import requests

TAGS_FILE = "tags.txt"
CHARACTER_TAGS_FILE = "tags-character.txt"
PROJECT_FILE = "project.json"
MODEL_SUFFIXES = (".h5", ".keras")
DEFAULT_BATCH_SIZE = 16

# The last public release (Danbooru's ratings of 2021: rating:safe/questionable/explicit).
V3_RELEASE = "v3-20211112-sgd-e28"
V3_URL = f"https://github.com/KichangKim/DeepDanbooru/releases/download/{V3_RELEASE}/deepdanbooru-{V3_RELEASE}.zip"
V3_MAX_BYTES = 1536 << 20  # the zip is several hundred MB; a bound against a wrong or hostile answer
V3_MAX_EXTRACTED_BYTES = 3 << 30

# Danbooru split `safe` into `general` and `sensitive` in 2022; questionable and explicit kept their names.
RATING_ALIASES = MappingProxyType({"rating:safe": frozenset({"rating:general", "rating:sensitive"})})


def missing_package_reason() -> str | None:
    """Why DeepDanbooru cannot run here at all, or None; looks the packages up without importing them.

    onnxruntime alone runs a model converted before; converting one, or running one on TensorFlow, needs
    tensorflow and tf-keras (and onnx to convert).
    """
    if installed(*KERAS_PACKAGES) or installed("onnxruntime"):
        return None
    return ("neither onnxruntime (which runs a converted model) nor tensorflow and tf-keras (which convert it once) "
            f"are installed; install with `{INSTALL_HINT}`")


# --- the project directory ---------------------------------------------------------------------------------------


def read_tag_file(path: Path) -> list[str]:
    """Non-empty stripped lines, in order (DeepDanbooru's own reader)."""
    if not path.is_file():
        raise DeepDanbooruError(f"tag file not found: {path}")
    text = read_text_file(path, DeepDanbooruError)
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_project_json(project_dir: Path) -> dict[str, Any]:
    path = project_dir / PROJECT_FILE
    if not path.is_file():
        return {}
    try:
        context = json.loads(read_text_file(path, DeepDanbooruError))
    except json.JSONDecodeError as error:
        raise DeepDanbooruError(f"{path} is not JSON: {error}") from error
    if not isinstance(context, dict):
        raise DeepDanbooruError(f"{path} is not a JSON object")
    return context


def find_model_file(project_dir: Path, context: Mapping[str, Any] | None = None) -> Path:
    """The project's model: `model-<project.json's model>.h5|.keras` when present, else the last by name."""
    candidates = sorted(
        path for path in project_dir.iterdir() if path.suffix in MODEL_SUFFIXES and path.is_file()
    ) if project_dir.is_dir() else []
    model_type = (context or {}).get("model")
    if isinstance(model_type, str):
        for suffix in MODEL_SUFFIXES:
            named = project_dir / f"model-{model_type}{suffix}"
            if named in candidates:
                return named
    if not candidates:
        raise DeepDanbooruError(f"no model file (*.h5 or *.keras) in the DeepDanbooru project {project_dir}")
    return candidates[-1]


def read_vocabulary(project_dir: Path) -> Mapping[str, int]:
    """Each tags.txt tag (normalised) -> rating, character (in tags-character.txt) or general; no weights needed."""
    tags = read_tag_file(project_dir / TAGS_FILE)
    character_path = project_dir / CHARACTER_TAGS_FILE
    characters = set(read_tag_file(character_path)) if character_path.is_file() else set()
    return MappingProxyType({normalise_tag(tag): RATING if is_rating(tag) else CHARACTER if tag in characters
                             else GENERAL for tag in tags})


def locate_project(directory: Path) -> Path:
    """The project inside `directory`: itself when it holds tags.txt, else its only subdirectory that does."""
    if (directory / TAGS_FILE).is_file() or not directory.is_dir():
        return directory
    nested = [child for child in directory.iterdir() if child.is_dir() and (child / TAGS_FILE).is_file()]
    return nested[0] if len(nested) == 1 else directory


class DeepDanbooruTagger(Tagger):
    """A DeepDanbooru project directory: its model converted to ONNX once and run on onnxruntime (on TensorFlow
    when the conversion is refused); outputs a sigmoid probability per tags.txt line."""

    default_threshold = 0.5  # DeepDanbooru's own tooling
    default_score_floor = REAL_MODEL_SCORE_FLOOR
    rating_aliases = RATING_ALIASES

    def __init__(self, project_dir: str | Path, options: TaggerOptions | None = None, *, name: str = "deepdanbooru",
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.name = name
        self.batch_size = max(1, batch_size)
        self.project_dir = Path(project_dir).expanduser()
        options = options or TaggerOptions()
        self.threads = options.threads or os.cpu_count() or 1  # for preprocessing; the model's are the runtime's
        if not self.project_dir.is_dir():
            raise DeepDanbooruError(f"DeepDanbooru project directory not found: {self.project_dir} "
                                    f"(expected a directory with {TAGS_FILE} and a model-*.h5 file)")
        context = read_project_json(self.project_dir)
        tags_path = self.project_dir / TAGS_FILE
        self.tags = read_tag_file(tags_path)
        self.model_path = find_model_file(self.project_dir, context)
        self._vocabulary = read_vocabulary(self.project_dir)
        self.model_sha256 = model_digest(self.model_path)

        model = self._open(options)
        self.height, self.width = self._input_size(context, model)
        outputs = model.output_shape
        if not (isinstance(outputs, tuple) and len(outputs) == 2):
            raise DeepDanbooruError(f"{self.model_path} has outputs {outputs}; expected one (batch, tags) output")
        if outputs[1] != len(self.tags):
            raise DeepDanbooruError(
                f"{self.model_path} outputs {outputs[1]} tags but {tags_path} has {len(self.tags)} lines: "
                "the model and its tag file do not belong together"
            )
        if isinstance(model, KerasModel):
            model = onnx_or_keras(model, self.model_path, self.model_sha256, (self.height, self.width), options)
        self._model: OnnxModel | KerasModel | None = model
        if isinstance(model, OnnxModel):  # TensorFlow keeps its own batching: one image per call unless asked
            self.preferred_batch_size = preferred_batch_size(model.session.get_providers())

    def _open(self, options: TaggerOptions) -> OnnxModel | KerasModel:
        """The cached conversion on onnxruntime when there is one, else the Keras model (to convert, or to run)."""
        if not installed("onnxruntime"):
            return KerasModel(self.model_path, options, why="DeepDanbooru without onnxruntime")
        if (cached := cached_conversion(self.model_sha256)) is not None:
            return OnnxModel(cached, options)
        return KerasModel(self.model_path, options, why=f"{self.model_path} has no ONNX conversion in "
                                                         f"{cache_dir() / CACHE_FOLDER}: converting it (once)")

    def _input_size(self, context: Mapping[str, Any], model: OnnxModel | KerasModel) -> tuple[int, int]:
        """The input's height and width, once it is known to take float RGB batches (Keras would cast our 0-1
        floats to an integer input's type without a word, and the model would see black images)."""
        shape = model.input_shape
        if not (isinstance(shape, tuple) and len(shape) == 4):
            raise DeepDanbooruError(f"{self.model_path} takes input {shape}; expected one (batch, H, W, 3) input")
        _, height, width, channels = shape
        if channels != 3:
            raise DeepDanbooruError(f"{self.model_path} takes {channels} channels; DeepDanbooru models take RGB")
        if not model.input_is_float:
            raise DeepDanbooruError(f"{self.model_path} takes {model.input_type} input; DeepDanbooru models take "
                                    "float32 RGB 0-1")
        declared = context.get("image_height"), context.get("image_width")
        if height is None or width is None:  # a fully convolutional model: the project says the size
            height, width = height or declared[0], width or declared[1]
            if not (isinstance(height, int) and isinstance(width, int)):
                raise DeepDanbooruError(f"{self.model_path} takes any image size and {PROJECT_FILE} does not set "
                                        "image_width and image_height")
        elif all(isinstance(value, int) for value in declared) and declared != (height, width):
            raise DeepDanbooruError(
                f"{self.model_path} takes {width}x{height} images but {self.project_dir / PROJECT_FILE} says "
                f"{declared[1]}x{declared[0]}: the model and the project do not belong together"
            )
        return height, width

    @property
    def onnx_path(self) -> Path | None:
        """The converted model this tagger runs, or None when it runs the Keras model on TensorFlow."""
        return self._model.path if isinstance(self._model, OnnxModel) else None

    def identity(self) -> dict[str, str]:
        """The model file's sha256 and, when the tagger runs its ONNX conversion, the converted file's."""
        converted = {"onnx_sha256": model_digest(self.onnx_path)} if self.onnx_path else {}
        return {**super().identity(), "model_sha256": self.model_sha256, **converted,
                "tags_sha256": file_digest(self.project_dir / TAGS_FILE)}

    def vocabulary(self) -> Mapping[str, int]:
        """Every tags.txt tag (normalised) -> rating, character (listed in tags-character.txt) or general."""
        return self._vocabulary

    def preprocess(self, samples: Sequence[Sample]) -> np.ndarray:
        """The model's input batch (N, H, W, 3), float32 0-1, from each post's file as DeepDanbooru reads it.

        The images are prepared in threads (the decoders and numpy release the GIL): twice as fast on two cores.
        """
        def prepare(sample: Sample) -> np.ndarray:
            path = sample.post.image_path if sample.post is not None else None
            return model_input(path, sample.image, self.height, self.width)

        with ThreadPoolExecutor(max_workers=max(1, min(len(samples), self.threads))) as pool:
            return np.stack(list(pool.map(prepare, samples)))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The raw model call on a prepared batch, `batch_size` images at a time: a row of probabilities each."""
        if self._model is None:
            raise DeepDanbooruError(f"the DeepDanbooru model {self.model_path} was closed")
        rows = [self._model.run(batch[start : start + self.batch_size])
                for start in range(0, len(batch), self.batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.tags)), dtype=np.float32)

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        if not samples:
            return []
        probabilities = check_probabilities(self.run(self.preprocess(samples)), self.model_path)
        if len(set(self.tags)) == len(self.tags):  # no tag listed twice: nothing to merge
            return [dict(zip(self.tags, row, strict=True)) for row in probabilities.tolist()]
        results = []
        for row in probabilities.tolist():
            result: dict[str, float] = {}
            for tag, probability in zip(self.tags, row, strict=True):
                # A tag listed twice keeps its higher probability; a NaN stays, so the session reports the model.
                previous = result.get(tag)
                if previous is None or probability > previous or math.isnan(probability):
                    result[tag] = probability
            results.append(result)
        return results

    def close(self) -> None:
        self._model = None


# --- the registry entries ----------------------------------------------------------------------------------------


def v3_dir() -> Path:
    """Where `deepdanbooru-v3` is kept: its own folder under the cache directory."""
    return cache_dir() / f"deepdanbooru-{V3_RELEASE}"


def _v3_project(directory: Path | None = None) -> Path | None:
    project = locate_project(directory or v3_dir())
    if not (project / TAGS_FILE).is_file():
        return None
    try:
        find_model_file(project, read_project_json(project))
    except DeepDanbooruError:
        return None
    return project


def v3_unavailable_reason() -> str | None:
    if reason := missing_package_reason():
        return reason
    if (project := _v3_project()) is None:
        return "not downloaded; run `tagger-eval fetch deepdanbooru-v3`"
    if installed(*KERAS_PACKAGES):
        return None
    if cached_conversion(model_digest(find_model_file(project, read_project_json(project)))) is None:
        return (f"not converted to ONNX yet, and converting it (once) needs tensorflow and tf-keras: install with "
                f"`{INSTALL_HINT}`")
    return None


def fetch_v3(url: str = V3_URL, session: requests.Session | None = None) -> Path:
    """Download the v3 release into `v3_dir()`: an earlier copy is replaced only once the new one holds a project.

    Where TensorFlow is installed, the model is converted to ONNX right away, so evaluations never need it.
    """
    fetch_release_zip(url, v3_dir(), max_bytes=V3_MAX_BYTES, max_extracted_bytes=V3_MAX_EXTRACTED_BYTES,
                      session=session, verify=lambda staged: None if _v3_project(staged) else
                      f"no DeepDanbooru project ({TAGS_FILE} and a model file) in the archive")
    project = _downloaded_v3_project()
    if installed(*CONVERSION_PACKAGES):
        try:
            DeepDanbooruTagger(project, TaggerOptions(execution_provider=ExecutionProvider.CPU)).close()
        except TaggerError as error:
            warnings.warn(f"deepdanbooru-v3 was fetched but cannot be loaded: {error}", RuntimeWarning, stacklevel=2)
    return project


def _downloaded_v3_project() -> Path:
    if (project := _v3_project()) is None:
        raise DeepDanbooruError(f"deepdanbooru-v3 is not in {v3_dir()}: run `tagger-eval fetch deepdanbooru-v3`")
    return project


def _project_argument(argument: str | None) -> Path:
    if not argument:
        raise DeepDanbooruError("deepdanbooru needs a project directory: --tagger=deepdanbooru:DIR")
    return Path(argument).expanduser()


def check_project_argument(argument: str | None) -> None:
    """`deepdanbooru:DIR` must name a project directory with its tag list and a model file: checked when
    `--tagger` is parsed, so a wrong path stops the run before any test instead of failing its tagger's load."""
    directory = _project_argument(argument)
    must_hold = f"it must hold {TAGS_FILE} and a model-*.h5 or .keras file (a DeepDanbooru project)"
    if not directory.is_dir():
        raise InvalidTaggerSpec(f"{directory} is not a directory; {must_hold}")
    try:
        missing = [] if (directory / TAGS_FILE).is_file() else [TAGS_FILE]
        try:
            find_model_file(directory)
        except DeepDanbooruError:
            missing.append("model file")
        nested = locate_project(directory)
    except OSError as error:
        raise InvalidTaggerSpec(f"cannot read {directory}: {error.strerror or error}") from None
    if missing:
        hint = f" (the project seems to be in {nested}: give that directory)" if nested != directory else ""
        raise InvalidTaggerSpec(f"no {' and no '.join(missing)} in {directory}; {must_hold}{hint}")


ENTRIES: list[TaggerEntry] = [
    TaggerEntry(
        "deepdanbooru",
        "DeepDanbooru project directory (model-*.h5 or .keras, tags.txt), converted to ONNX once",
        lambda argument, options: DeepDanbooruTagger(_project_argument(argument), options),
        needs_argument=True,
        argument_name="DIR",
        unavailable_reason=missing_package_reason,
        vocabulary=lambda argument: read_vocabulary(_project_argument(argument)),
        check_argument=check_project_argument,
    ),
    TaggerEntry(
        "deepdanbooru-v3",
        f"DeepDanbooru {V3_RELEASE}, the last public release (ratings safe/questionable/explicit)",
        lambda _argument, options: DeepDanbooruTagger(_downloaded_v3_project(), options, name="deepdanbooru-v3"),
        unavailable_reason=v3_unavailable_reason,
        fetch=fetch_v3,
        vocabulary=lambda _argument: read_vocabulary(_downloaded_v3_project()),
    ),
]
