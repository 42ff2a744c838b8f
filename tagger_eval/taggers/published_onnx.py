"""The runner of the published taggers whose authors feed NCHW RGB images: Camie v2, PixAI v0.9, JoyTag, ML-Danbooru.

What differs between them is declared as data, a `Family`: how the authors prepare an image, which output holds the
predictions and whether it is logits (a sigmoid is applied here, as the authors' code applies it), how the tag
files read, and which categories take the character threshold. The model's input name, size and batch axis and its
output names are read from the model and checked against the family at load, so a file that is not that model
fails once, naming what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tagger_eval.checksums import file_digest
from tagger_eval.config import TaggerOptions
from tagger_eval.taggers.base import REAL_MODEL_SCORE_FLOOR, Sample, Tagger, check_probabilities
from tagger_eval.taggers.hub import PublishedModel
from tagger_eval.taggers.onnx import ModelLoadError, create_session, missing_package_reason, preferred_batch_size
from tagger_eval.taggers.registry import TaggerEntry
from tagger_eval.tags import CHARACTER, GENERAL, UNKNOWN_CATEGORY

FLOAT_INPUT = "tensor(float)"


@dataclass(frozen=True)
class TagList:
    """A model's outputs in order, as its files name them, and what the files say about them."""

    names: tuple[str, ...]
    categories: Mapping[str, int] = field(default_factory=dict)  # only where the files give one
    counts: Mapping[str, int] | None = None  # training-set frequencies, where published
    # Tags the authors derive from the model's outputs rather than predict (PixAI: a copyright from its characters):
    # derived tag -> (its category, the outputs it comes from); its probability is theirs at most.
    derived: Mapping[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    thresholds: Mapping[int, float] = field(default_factory=dict)  # per category, where a file publishes them

    def vocabulary(self) -> dict[str, int]:
        vocabulary = {name: self.categories.get(name, UNKNOWN_CATEGORY) for name in self.names}
        vocabulary.update({name: category for name, (category, _) in self.derived.items()})
        return vocabulary


@dataclass(frozen=True)
class Family:
    """One published family's contract, as its authors' code runs it."""

    name: str
    prepare: Callable[[Image.Image, int], np.ndarray]  # one image -> (3, size, size) float32
    read_tags: Callable[[Mapping[str, Path]], TagList]  # the cached files by name -> the tags
    output: str | None  # the output that holds the predictions; None: the model's only output
    logits: bool  # the output is logits: the authors apply a sigmoid after the model
    character_categories: frozenset[int] = frozenset({CHARACTER})  # categories the character threshold applies to
    threshold_profiles: Mapping[str, float] = field(default_factory=dict)  # the authors' named general thresholds
    default_profile: str | None = None


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float64 (no overflow warning for large negative logits: they give 0)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def nchw(rgb: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 image as torchvision's `ToTensor` and `Normalize` make it: (3, H, W) float32 in [0, 1],
    then `(x - mean) / std` per channel, all in float32 as torch computes it."""
    tensor: np.ndarray = rgb.astype(np.float32) / np.float32(255)
    if mean is not None and std is not None:
        tensor = (tensor - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1))


class PublishedOnnxTagger(Tagger):
    default_score_floor = REAL_MODEL_SCORE_FLOOR

    def __init__(self, model: PublishedModel, family: Family, paths: Mapping[str, Path],
                 options: TaggerOptions) -> None:
        self.name, self.family, self.published = model.name, family, model
        self.paths = dict(paths)
        self.model_path = paths[model.model_file]
        self.tags = family.read_tags(paths)
        # A thresholds file of the model's own (PixAI's) gives the defaults; else the published model's.
        self.default_threshold = self.tags.thresholds.get(GENERAL, model.threshold)
        self.default_character_threshold = self.tags.thresholds.get(CHARACTER, model.character_threshold)
        self.character_categories = family.character_categories
        self.threshold_profiles = dict(family.threshold_profiles)
        self.default_profile = family.default_profile
        self.session = create_session(self.model_path, options)
        self.preferred_batch_size = preferred_batch_size(self.session.get_providers())
        self._read_contract()

    @classmethod
    def from_hub(cls, family: Family, model: PublishedModel, options: TaggerOptions) -> PublishedOnnxTagger:
        return cls(model, family, model.cached_files(), options)

    def _read_contract(self) -> None:
        path, family = self.model_path, self.family
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{path}: expected one input ({family.name}), found {len(inputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ModelLoadError(f"{path}: expected an NCHW RGB input ({family.name}), found shape {shape}")
        if inputs[0].type != FLOAT_INPUT:
            raise ModelLoadError(f"{path}: expected a float32 input ({family.name}), found {inputs[0].type}")
        size = self.published.input_size
        if any(isinstance(side, int) and side != size for side in shape[2:]):
            raise ModelLoadError(f"{path} takes {shape[2]}x{shape[3]} images, {self.name} is published at "
                                 f"{size}px: the file is not that model")
        names = [output.name for output in outputs]
        wanted = family.output or names[0]
        if wanted not in names:
            raise ModelLoadError(f"{path}: no output named {wanted!r} ({family.name}); its outputs are {names}")
        width = outputs[names.index(wanted)].shape[-1]
        if isinstance(width, int) and width != len(self.tags.names):
            raise ModelLoadError(f"{path} outputs {width} tags but its tag file lists {len(self.tags.names)}: the "
                                 "model and its tag file do not belong together")
        self.input_name, self.output_name, self.input_size = inputs[0].name, wanted, size
        self.batch_size: int | None = shape[0] if isinstance(shape[0], int) else None  # a fixed batch axis

    def vocabulary(self) -> Mapping[str, int]:
        return self.tags.vocabulary()

    def tag_counts(self) -> Mapping[str, int] | None:
        return self.tags.counts

    def identity(self) -> dict[str, str]:
        published = self.published
        identity = {**super().identity(), "family": self.family.name, "repo_id": published.repo_id,
                    "revision": self.model_path.parent.name}  # the hub cache keeps files under snapshots/<commit>/
        # The same keys as the WD models' for the model and its tags, so results compare across families.
        names = {published.model_file: "model", published.tags_file: "tags"}
        identity.update({f"{names.get(name, Path(name).stem)}_sha256": file_digest(path)
                         for name, path in self.paths.items()})
        return identity

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's predictions as probabilities, one row per image (a fixed batch axis is fed image by image)."""
        step = self.batch_size or len(batch)
        rows = [self.session.run([self.output_name], {self.input_name: batch[start : start + step]})[0]
                for start in range(0, len(batch), step)]
        output = np.concatenate(rows)
        return sigmoid(output) if self.family.logits else output

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        if not samples:
            return []
        batch = np.stack([self.family.prepare(sample.image, self.input_size) for sample in samples])
        probabilities = check_probabilities(self.run(batch), self.model_path)
        names, derived = self.tags.names, self.tags.derived
        results = []
        for row in probabilities.tolist():
            result = dict(zip(names, row, strict=True))
            for tag, (_, sources) in derived.items():
                result[tag] = max(result[source] for source in sources)
            results.append(result)
        return results


def published_entries(family: Family, models: Sequence[PublishedModel]) -> list[TaggerEntry]:
    """The registry entries of a family's published models."""

    def build(model: PublishedModel, options: TaggerOptions) -> Tagger:
        return PublishedOnnxTagger.from_hub(family, model, options)

    def read_vocabulary(files: Mapping[str, Path]) -> Mapping[str, int]:
        return family.read_tags(files).vocabulary()

    return [model.entry(build, missing_package=missing_package_reason, read_tags=read_vocabulary)
            for model in models]
