"""fancyfeast's JoyTag, as its README and validation code (`prepare_image`) run it.

The image is pasted without a mask at the centre of a white square of its long side (alpha ignored: transparent
pixels keep their stored colour), resized to 448x448 with bicubic only when the square's side differs, scaled to
[0, 1] and normalised with CLIP's mean and std, RGB, NCHW. The output is logits: a sigmoid is applied. 5,813 tags
in danbooru2021-era names (`top_tags.txt`, one per line), no categories and no ratings; threshold 0.4 with `>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from tagger_eval.taggers.base import read_text_file
from tagger_eval.taggers.hub import PublishedModel
from tagger_eval.taggers.onnx import ModelLoadError
from tagger_eval.taggers.published_onnx import Family, TagList, nchw, published_entries

MODEL_FILE = "model.onnx"
TAGS_FILE = "top_tags.txt"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return nchw(np.asarray(square), CLIP_MEAN, CLIP_STD)


def read_tags(files: Mapping[str, Path]) -> TagList:
    path = files[TAGS_FILE]
    names = tuple(line.strip() for line in read_text_file(path, ModelLoadError).splitlines() if line.strip())
    if not names:
        raise ModelLoadError(f"{path} lists no tags")
    return TagList(names)


FAMILY = Family("JoyTag", prepare_image, read_tags, output=None, logits=True)
PUBLISHED_MODELS = (
    PublishedModel("joytag", "fancyfeast/joytag", MODEL_FILE, TAGS_FILE, input_size=448, threshold=0.4,
                   description="JoyTag (5,813 tags, no categories, no ratings)", licence="apache-2.0"),
)
ENTRIES = published_entries(FAMILY, PUBLISHED_MODELS)
