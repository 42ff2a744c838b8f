"""SmilingWolf's WD14 (wd-v1-4, v2) and WD v3 taggers, run in process with onnxruntime.

Preprocessing follows the models' own demo app: alpha composited onto white (palette transparency included), the
image padded to a centred white square, resized with bicubic only when the square's side differs from the model's
input, RGB turned into BGR, float32 0-255, NHWC. Images smaller than the input are padded to a square and then
upscaled (the v3 demo app's choice; the webui extension instead pads them with white up to the input size).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from tagger_eval.checksums import file_digest
from tagger_eval.config import TaggerOptions
from tagger_eval.taggers.base import REAL_MODEL_SCORE_FLOOR, Sample, Tagger, check_probabilities, read_text_file
from tagger_eval.taggers.hub import PublishedModel
from tagger_eval.taggers.onnx import ModelLoadError, create_session, missing_package_reason, preferred_batch_size
from tagger_eval.taggers.registry import InvalidTaggerSpec, TaggerEntry
from tagger_eval.tags import CHARACTER, GENERAL, RATING, RATING_PREFIX

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
TAGS_HEADER = ["tag_id", "name", "category", "count"]
INPUT_TYPE = "tensor(float)"  # onnxruntime's name of float32
OUTPUT_TYPES = frozenset({"tensor(float)", "tensor(float16)", "tensor(double)"})
KNOWN_CATEGORIES = {RATING, GENERAL, CHARACTER}

# SmilingWolf's published taggers: all 448px, thresholds general 0.35 and character 0.85, Apache-2.0.
_published = partial(PublishedModel, model_file=MODEL_FILE, tags_file=TAGS_FILE, input_size=448, threshold=0.35,
                     character_threshold=0.85, licence="apache-2.0")
PUBLISHED_MODELS = (
    _published("wd14-vit", "SmilingWolf/wd-v1-4-vit-tagger"),
    _published("wd14-convnext", "SmilingWolf/wd-v1-4-convnext-tagger"),
    _published("wd14-vit-v2", "SmilingWolf/wd-v1-4-vit-tagger-v2"),
    _published("wd14-convnext-v2", "SmilingWolf/wd-v1-4-convnext-tagger-v2"),
    _published("wd14-convnextv2-v2", "SmilingWolf/wd-v1-4-convnextv2-tagger-v2"),
    _published("wd14-swinv2-v2", "SmilingWolf/wd-v1-4-swinv2-tagger-v2"),
    _published("wd14-moat-v2", "SmilingWolf/wd-v1-4-moat-tagger-v2"),
    _published("wd-vit-v3", "SmilingWolf/wd-vit-tagger-v3"),
    _published("wd-swinv2-v3", "SmilingWolf/wd-swinv2-tagger-v3"),
    _published("wd-convnext-v3", "SmilingWolf/wd-convnext-tagger-v3"),
    _published("wd-vit-large-v3", "SmilingWolf/wd-vit-large-tagger-v3"),
    # Its card: "requires onnxruntime >= 1.17.0" (the opsets of its export); the same I/O as every WD v3 model.
    _published("wd-eva02-large-v3", "SmilingWolf/wd-eva02-large-tagger-v3", min_onnxruntime=(1, 17)),
)


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """The tag file's rows, read as UTF-8 (any other encoding is a `ModelLoadError` naming the byte)."""
    if not path.is_file():
        raise ModelLoadError(f"tag file not found: {path}")
    return csv.reader(io.StringIO(read_text_file(path, ModelLoadError), newline=""))


def read_selected_tags(path: Path) -> list[tuple[str, int]]:
    """`selected_tags.csv` as (name, category) in output order; rating rows become `rating:<name>`."""
    rows = _csv_rows(path)
    try:
        header = next(rows, None)
        if header != TAGS_HEADER:
            raise ModelLoadError(f"{path}: expected the header {','.join(TAGS_HEADER)}, found {header}")
        tags = [_tag(path, line_number, row) for line_number, row in enumerate(rows, start=2)]
    except csv.Error as error:  # a field beyond csv's size limit, an unterminated quote
        raise ModelLoadError(f"{path}: not a CSV file: {error}") from None
    if not tags:
        raise ModelLoadError(f"{path} lists no tags")
    return tags


def _tag(path: Path, line_number: int, row: list[str]) -> tuple[str, int]:
    try:
        name, category = row[1], int(row[2])
    except (IndexError, ValueError):
        raise ModelLoadError(f"{path}:{line_number}: malformed row {row}") from None
    if category not in KNOWN_CATEGORIES:
        raise ModelLoadError(f"{path}:{line_number}: unknown category {category} for {name!r}")
    return (f"{RATING_PREFIX}{name}" if category == RATING else name, category)


def read_vocabulary(path: Path) -> dict[str, int]:
    """`selected_tags.csv` as tag -> category, as the tagger reads it, without loading the model."""
    return dict(read_selected_tags(path))


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """One image as the model's input row: (size, size, 3) float32, BGR, 0-255."""
    rgba = image.convert("RGBA")
    flattened = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flattened.alpha_composite(rgba)
    rgb = flattened.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


class WD14Tagger(Tagger):
    default_threshold = 0.35
    default_character_threshold: float | None = 0.85
    default_score_floor = REAL_MODEL_SCORE_FLOOR

    def __init__(self, name: str, model_path: Path, tags_path: Path, options: TaggerOptions) -> None:
        self.name = name
        self.model_path, self.tags_path = model_path, tags_path
        self.revision: str | None = None  # with repo_id, set for a published model: where the files came from
        self.repo_id: str | None = None
        self.session = create_session(model_path, options)
        self.preferred_batch_size = preferred_batch_size(self.session.get_providers())
        tags = read_selected_tags(tags_path)
        self.tag_names = [tag for tag, _ in tags]
        self._vocabulary = dict(tags)
        self._read_contract()

    def _read_contract(self) -> None:
        """The input and output names, sizes and element types, checked against the WD contract at load, so a
        model that cannot be fed our images (another layout, uint8 input) fails once, naming the file."""
        model_path = self.model_path
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelLoadError(f"{model_path}: expected one input and an output, found {len(inputs)} inputs")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or not isinstance(shape[1], int):
            raise ModelLoadError(f"{model_path}: expected an NHWC square RGB input, found shape {shape}")
        if inputs[0].type != INPUT_TYPE:
            raise ModelLoadError(f"{model_path}: expected a {INPUT_TYPE} input (float32 BGR 0-255, the WD "
                                 f"contract), found {inputs[0].type}")
        if outputs[0].type not in OUTPUT_TYPES:
            raise ModelLoadError(f"{model_path}: expected a floating-point output of probabilities, found "
                                 f"{outputs[0].type}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_size: int = shape[1]
        # v2 exports fix the batch at 1; v3 exports leave it symbolic.
        self.batch_size: int | None = shape[0] if isinstance(shape[0], int) else None
        width = outputs[0].shape[-1]
        if isinstance(width, int) and width != len(self.tag_names):
            raise ModelLoadError(
                f"{model_path} outputs {width} tags but {self.tags_path} lists {len(self.tag_names)}: "
                "the model and its tag file do not belong together"
            )

    @classmethod
    def from_directory(cls, directory: Path, options: TaggerOptions, name: str = "wd14-onnx") -> WD14Tagger:
        if not directory.is_dir():
            raise ModelLoadError(f"not a directory: {directory} (expected one with {MODEL_FILE} and {TAGS_FILE})")
        return cls(name, directory / MODEL_FILE, directory / TAGS_FILE, options)

    @classmethod
    def from_hub(cls, model: PublishedModel, options: TaggerOptions) -> WD14Tagger:
        paths = model.cached_files()
        tagger = cls(model.name, paths[model.model_file], paths[model.tags_file], options)
        if tagger.input_size != model.input_size:
            raise ModelLoadError(f"{paths[model.model_file]} takes {tagger.input_size}px images, {model.name} "
                                 f"is published at {model.input_size}px: the cached file is not that model")
        tagger.default_threshold, tagger.default_character_threshold = model.threshold, model.character_threshold
        tagger.revision = paths[model.model_file].parent.name  # the hub cache keeps files under snapshots/<commit>/
        tagger.repo_id = model.repo_id
        return tagger

    def vocabulary(self) -> Mapping[str, int]:
        return self._vocabulary

    def tag_counts(self) -> dict[str, int] | None:
        counts = [row[3] if len(row) > 3 else "" for row in list(_csv_rows(self.tags_path))[1:]]
        if len(counts) != len(self.tag_names) or not all(count.isdigit() for count in counts):
            return None
        return {name: int(count) for name, count in zip(self.tag_names, counts, strict=True)}

    def identity(self) -> dict[str, str]:
        identity = {**super().identity(), "model_sha256": file_digest(self.model_path),
                    "tags_sha256": file_digest(self.tags_path)}
        if self.repo_id is not None and self.revision is not None:
            identity.update(repo_id=self.repo_id, revision=self.revision)
        return identity

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        batch = np.stack([prepare_image(sample.image, self.input_size) for sample in samples])
        if self.batch_size is None:
            probabilities = self.run(batch)
        else:
            probabilities = np.concatenate([self.run(batch[i : i + self.batch_size])
                                            for i in range(0, len(batch), self.batch_size)])
        check_probabilities(probabilities, self.model_path)
        return [dict(zip(self.tag_names, row.tolist(), strict=True)) for row in probabilities]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The raw model call: already sigmoid probabilities, one row per image."""
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def _directory_vocabulary(argument: str | None) -> dict[str, int]:
    return read_vocabulary(Path(argument or "") / TAGS_FILE)


def check_directory(argument: str | None) -> None:
    """`wd14-onnx:DIR` must name a directory holding the model and its tag file: checked when `--tagger` is parsed,
    so a wrong path stops the run before any test instead of failing the load (the files are read at load)."""
    directory = Path(argument or "")
    must_hold = f"it must hold {MODEL_FILE} and {TAGS_FILE} (a WD14 / WD v3 ONNX export)"
    if not directory.is_dir():
        raise InvalidTaggerSpec(f"{directory} is not a directory; {must_hold}")
    missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (directory / name).is_file()]
    if missing:
        raise InvalidTaggerSpec(f"no {' and no '.join(missing)} in {directory}; {must_hold}")


ENTRIES = [
    TaggerEntry(
        "wd14-onnx",
        "WD14/WD v3 ONNX model from a local directory with model.onnx and selected_tags.csv",
        lambda argument, options: WD14Tagger.from_directory(Path(argument or ""), options),
        needs_argument=True,
        argument_name="DIR",
        unavailable_reason=missing_package_reason,
        vocabulary=_directory_vocabulary,
        check_argument=check_directory,
    ),
    *(model.entry(WD14Tagger.from_hub, missing_package=missing_package_reason,
                  read_tags=lambda files: read_vocabulary(files[TAGS_FILE]))
      for model in PUBLISHED_MODELS),
]
