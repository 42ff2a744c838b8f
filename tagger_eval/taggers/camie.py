"""Camais03's Camie Tagger v2, as its author's `onnx_inference.py` runs it.

The image is converted to RGB (alpha dropped: transparent pixels keep their stored colour), resized with LANCZOS so
its long side is 512 and the short side `int(512 / aspect)` (truncated, as the author's code does), pasted centred
on a 512x512 canvas of the ImageNet mean colour (124, 116, 104), scaled to [0, 1] and normalised with the ImageNet
mean and std, NCHW. The model outputs logits: `refined_predictions` is read and a sigmoid applied. 70,527 tags in
seven categories (general, character, copyright, artist, meta, rating, year), ratings as four ordinary outputs.
The author publishes threshold profiles rather than one threshold; `--threshold-profile` picks one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from tagger_eval.taggers.base import read_text_file
from tagger_eval.taggers.hub import PublishedModel
from tagger_eval.taggers.onnx import ModelLoadError
from tagger_eval.taggers.published_onnx import Family, TagList, nchw, published_entries
from tagger_eval.tags import ARTIST, CHARACTER, COPYRIGHT, GENERAL, META, RATING, RATING_PREFIX, YEAR

MODEL_FILE = "camie-tagger-v2.onnx"
METADATA_FILE = "camie-tagger-v2-metadata.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CANVAS = (124, 116, 104)  # the ImageNet mean as 0-255 colour: about 0 once normalised
CATEGORIES = {"general": GENERAL, "artist": ARTIST, "copyright": COPYRIGHT, "character": CHARACTER, "meta": META,
              "rating": RATING, "year": YEAR}
# The author's validation results (full_validation_results.json): the overall threshold that maximises micro F1
# and the one that maximises macro F1.
PROFILES = {"micro-opt": 0.614286, "macro-opt": 0.491837}
DEFAULT_PROFILE = "micro-opt"


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    rgb = image.convert("RGB")
    aspect = rgb.width / rgb.height
    if aspect > 1:
        width, height = size, max(1, int(size / aspect))
    else:
        width, height = max(1, int(size * aspect)), size
    canvas = Image.new("RGB", (size, size), CANVAS)
    canvas.paste(rgb.resize((width, height), Image.Resampling.LANCZOS), ((size - width) // 2, (size - height) // 2))
    return nchw(np.asarray(canvas), IMAGENET_MEAN, IMAGENET_STD)


def read_metadata(files: Mapping[str, Path]) -> TagList:
    """`camie-tagger-v2-metadata.json`: `dataset_info.tag_mapping` gives `idx_to_tag` (output index as text ->
    name) and `tag_to_category` (name -> category name). Ratings become `rating:<name>` (without a `rating_`
    prefix), so they meet the dataset's."""
    path = files[METADATA_FILE]
    try:
        mapping = json.loads(read_text_file(path, ModelLoadError))["dataset_info"]["tag_mapping"]
        index, categories = mapping["idx_to_tag"], mapping["tag_to_category"]
        names = [index[str(position)] for position in range(len(index))]
        named = [(name, CATEGORIES[categories[name]]) for name in names]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path}: not Camie v2 metadata (dataset_info.tag_mapping with idx_to_tag and "
                             f"tag_to_category over the categories {', '.join(CATEGORIES)}): "
                             f"{type(error).__name__}: {error}") from None
    tags = [(f"{RATING_PREFIX}{name.removeprefix('rating_')}" if category == RATING else name, category)
            for name, category in named]
    return TagList(tuple(name for name, _ in tags), dict(tags))


FAMILY = Family("Camie v2", prepare_image, read_metadata, output="refined_predictions", logits=True,
                threshold_profiles=PROFILES, default_profile=DEFAULT_PROFILE)
PUBLISHED_MODELS = (
    PublishedModel("camie-v2", "Camais03/camie-tagger-v2", MODEL_FILE, METADATA_FILE, input_size=512,
                   threshold=PROFILES[DEFAULT_PROFILE], licence="gpl-3.0",
                   description="Camie Tagger v2 (70,527 tags in 7 categories; threshold profiles micro-opt, the "
                               "default, and macro-opt)"),
)
ENTRIES = published_entries(FAMILY, PUBLISHED_MODELS)
