"""ML-Danbooru (7eu7d7 / IrisRainbowNeko), as its `demo.py` and `demo_ca.py` run it, from deepghs's ONNX exports.

The image is converted to RGB (alpha dropped: transparent pixels keep their stored colour), stretched to SxS with
bilinear resampling (torchvision's `Resize((S, S))` on a PIL image, the demos' default `keep_ratio=False`) and
scaled to [0, 1] without mean or std, NCHW; S is 448 for the CAFormer and 640 for the TResNet-D. The output is
logits: a sigmoid is applied. 12,547 general tags in danbooru2021-era names (`classes.json`), no characters,
copyrights or ratings; threshold 0.7 with `>` (the README's commands; the demos' argparse default is 0.75).
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

REPOSITORY = "deepghs/ml-danbooru-onnx"
CLASSES_FILE = "classes.json"


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    return nchw(np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)))


def read_classes(files: Mapping[str, Path]) -> TagList:
    """`classes.json`: the tag names in output order, as a list or as the author's `{"0": name, ...}`."""
    path = files[CLASSES_FILE]
    try:
        classes = json.loads(read_text_file(path, ModelLoadError))
        names = classes if isinstance(classes, list) else [classes[str(index)] for index in range(len(classes))]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"{path}: expected a list of tag names or {{\"0\": name, ...}}: "
                             f"{type(error).__name__}: {error}") from None
    if not names or not all(isinstance(name, str) for name in names):
        raise ModelLoadError(f"{path}: expected a non-empty list of tag names")
    return TagList(tuple(names))


FAMILY = Family("ML-Danbooru", prepare_image, read_classes, output="output", logits=True)
PUBLISHED_MODELS = (
    PublishedModel("ml-danbooru-caformer", REPOSITORY, "ml_caformer_m36_dec-5-97527.onnx", CLASSES_FILE,
                   input_size=448, threshold=0.7, licence="mit",
                   description="ML-Danbooru CAFormer-m36 (12,547 general tags only)"),
    PublishedModel("ml-danbooru-tresnet", REPOSITORY, "TResnet-D-FLq_ema_6-30000.onnx", CLASSES_FILE,
                   input_size=640, threshold=0.7, licence="mit",
                   description="ML-Danbooru TResNet-D (12,547 general tags only)"),
)
ENTRIES = published_entries(FAMILY, PUBLISHED_MODELS)
