"""DeepDanbooru's image preprocessing (`deepdanbooru.data.load_image_for_evaluate`), reproduced step for step.

The image is decoded as 3-channel RGB (an alpha channel is dropped, not composited; a palette image gives its RGB
colours; 16-bit samples keep their high byte, as libpng's 8-bit decoding does), resized with TensorFlow's AREA
method to fit inside the model's input while keeping the aspect ratio (smaller images are scaled up), centred on
the input by a bilinear translation whose padding repeats the edge pixels (`skimage.transform.warp(...,
order=1, mode="edge")`, done here with numpy), divided by 255. EXIF orientation is ignored, as DeepDanbooru's
decoders ignore it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def rgb_array(image: Image.Image) -> np.ndarray:
    """The image as uint8 HxWx3 RGB, as `tf.io.decode_png(..., channels=3)` decodes it.

    Alpha is dropped, not composited (Pillow's RGBA -> RGB conversion does exactly that); a palette image gives
    its colours; 16-bit grey keeps the high byte (Pillow would clip it to 255 instead).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _edge_interpolation(length: int, source_length: int, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: the two source indices and the weight of the second.

    The source coordinate is `index - offset`, clamped into the image ("edge" padding), and interpolated linearly
    between its floor and floor + 1.
    """
    coordinate = np.arange(length, dtype=np.float64) - offset
    low = np.floor(coordinate)
    weight = coordinate - low
    low_index = np.clip(low, 0, source_length - 1).astype(np.intp)
    high_index = np.clip(low + 1, 0, source_length - 1).astype(np.intp)
    return low_index, high_index, weight


def centre_with_edge_padding(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Translate an HxWxC float image by ((width - w) / 2, (height - h) / 2) onto a height x width canvas.

    Bilinear interpolation with edge-clamped coordinates (a half-pixel offset blends two neighbours; the padding
    repeats the edge pixels): what `skimage.transform.warp(image, translation.inverse, output_shape=(height,
    width), order=1, mode="edge")` computes, done as two separable 1-D interpolations.
    """
    source_height, source_width = image.shape[:2]
    data = image.astype(np.float64, copy=False)
    low, high, weight = _edge_interpolation(height, source_height, (height - source_height) / 2)
    data = data[low] * (1 - weight)[:, None, None] + data[high] * weight[:, None, None]
    low, high, weight = _edge_interpolation(width, source_width, (width - source_width) / 2)
    data = data[:, low] * (1 - weight)[None, :, None] + data[:, high] * weight[None, :, None]
    return data.astype(np.float32)


def prepare_image(image: Image.Image, height: int, width: int) -> np.ndarray:
    """One image as the model's HxWx3 float32 input, values 0-1 (DeepDanbooru's `load_image_for_evaluate`).

    TensorFlow is imported here, not at module level: the tagger has loaded it already, and importing this module
    stays cheap.
    """
    import tensorflow as tf

    resized = tf.image.resize(
        rgb_array(image), size=(height, width), method=tf.image.ResizeMethod.AREA, preserve_aspect_ratio=True
    ).numpy()
    return centre_with_edge_padding(resized, height, width) / np.float32(255.0)
