"""PixAI Tagger v0.9, as its authors' endpoint handler runs it, from deepghs's ONNX export of their weights.

The authors publish PyTorch weights only, in a gated repository; `deepghs/pixai-tagger-v0.9-onnx` exports the same
model. Preprocessing is the handler's: RGBA pasted on white with its alpha as the mask, a palette image converted to
RGBA and likewise, every other mode converted to RGB (so grey+alpha loses its alpha); stretched to 448x448 with
bilinear resampling (torchvision's `Resize` on a PIL image), scaled to [0, 1] and normalised with mean = std =
0.5, RGB, NCHW. The `prediction` output is already a sigmoid. 13,461 general and character tags and no ratings;
copyrights are not outputs: the handler derives them from the detected characters (`char_ip_map`, the `ips` column
here), so a copyright counts as predicted exactly when one of its characters is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from tagger_eval.taggers.base import read_text_file
from tagger_eval.taggers.hub import PublishedModel
from tagger_eval.taggers.onnx import ModelLoadError
from tagger_eval.taggers.published_onnx import Family, TagList, nchw, published_entries
from tagger_eval.tags import CHARACTER, COPYRIGHT, GENERAL

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
THRESHOLDS_FILE = "thresholds.csv"
TAGS_COLUMNS = ("name", "category", "count", "ips")
WHITE = (255, 255, 255)


def _on_white(image: Image.Image) -> Image.Image:
    """The handler's `pil_to_rgb`: RGBA (and palette, through RGBA) pasted on white with its alpha as the mask."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGB", image.size, WHITE)
    background.paste(image, mask=image.split()[3])
    return background


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    stretched = _on_white(image).resize((size, size), Image.Resampling.BILINEAR)
    return nchw(np.asarray(stretched), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        reader = csv.DictReader(io.StringIO(read_text_file(path, ModelLoadError), newline=""))
        rows = list(reader)
    except csv.Error as error:
        raise ModelLoadError(f"{path}: not a CSV file: {error}") from None
    missing = [column for column in required if column not in (reader.fieldnames or ())]
    if missing:
        raise ModelLoadError(f"{path}: expected the columns {', '.join(required)}; missing {', '.join(missing)}")
    if not rows:
        raise ModelLoadError(f"{path} has a header but no rows")
    return rows


def read_tags(files: Mapping[str, Path]) -> TagList:
    """`selected_tags.csv` (`id,tag_id,name,category,count,ips`: `ips` a JSON list of a character's copyrights) and
    `thresholds.csv` (`category,name,threshold`)."""
    path = files[TAGS_FILE]
    names: list[str] = []
    categories: dict[str, int] = {}
    counts: dict[str, int] = {}
    copyrights: dict[str, list[str]] = {}  # copyright -> its characters
    for line, row in enumerate(_rows(path, TAGS_COLUMNS), start=2):
        try:
            name, category, count, ips = row["name"], int(row["category"]), int(row["count"]), json.loads(row["ips"])
        except (ValueError, TypeError):
            raise ModelLoadError(f"{path}:{line}: malformed row {row}") from None
        if category not in (GENERAL, CHARACTER) or not isinstance(ips, list):
            raise ModelLoadError(f"{path}:{line}: expected category 0 or 4 and a JSON list of copyrights: {row}")
        names.append(name)
        categories[name], counts[name] = category, count
        for ip in ips:
            copyrights.setdefault(str(ip), []).append(name)
    thresholds_path = files[THRESHOLDS_FILE]
    try:
        thresholds = {int(row["category"]): float(row["threshold"])
                      for row in _rows(thresholds_path, ("category", "threshold"))}
    except (ValueError, TypeError):  # TypeError: a short row's missing field is None
        raise ModelLoadError(f"{thresholds_path}: a category or threshold is not a number") from None
    derived = {ip: (COPYRIGHT, tuple(characters)) for ip, characters in copyrights.items() if ip not in categories}
    return TagList(tuple(names), categories, counts, derived, thresholds)


FAMILY = Family("PixAI v0.9", prepare_image, read_tags, output="prediction", logits=False,
                character_categories=frozenset({CHARACTER, COPYRIGHT}))
# The handler's defaults, which deepghs's thresholds.csv copies; the card's "balanced" preset says 0.75 for
# characters, but the code the authors ship and serve uses 0.85.
PUBLISHED_MODELS = (
    PublishedModel("pixai-v0.9", "deepghs/pixai-tagger-v0.9-onnx", MODEL_FILE, TAGS_FILE, input_size=448,
                   threshold=0.3, character_threshold=0.85, extra_files=(THRESHOLDS_FILE,),
                   description="PixAI Tagger v0.9 (13,461 general and character tags; no ratings)",
                   licence="apache-2.0"),
)
ENTRIES = published_entries(FAMILY, PUBLISHED_MODELS)
