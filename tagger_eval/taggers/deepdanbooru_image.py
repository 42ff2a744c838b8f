"""DeepDanbooru's image preprocessing (`deepdanbooru.data.load_image_for_evaluate`), reproduced without TensorFlow.

The file is decoded as TensorFlow decodes it for DeepDanbooru (`deepdanbooru_decode`: libjpeg-turbo's fast IDCT
for JPEG, alpha dropped rather than composited, 16-bit samples cut to their high byte, a GIF's transparent pixels
black, EXIF orientation ignored); formats TensorFlow does not read come from Pillow. The pixels are resized with
TensorFlow's AREA method to fit inside the model's input keeping the aspect ratio (smaller images are scaled up),
computed here as TensorFlow's kernel computes it, in float32 and in the same order; centred on the input by a
bilinear translation whose padding repeats the edge pixels (`skimage.transform.warp(..., order=1, mode="edge")`,
done here with numpy); divided by 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tagger_eval.taggers.deepdanbooru_decode import decode_like_tensorflow, rgb_array


def fitted_size(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int]:
    """The size `tf.image.resize(..., preserve_aspect_ratio=True)` picks: float32 scale, rounded half to even.

    TensorFlow fails on a side that rounds to 0 (an image over 1000 times wider than tall for 512x512); it is
    kept at 1 pixel here.
    """
    scale = min(np.float32(target_height) / np.float32(height), np.float32(target_width) / np.float32(width))
    return max(1, int(np.rint(scale * np.float32(height)))), max(1, int(np.rint(scale * np.float32(width))))


def _area_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output index along one axis: the source indices its area cell covers and their float32 weights.

    Every row has as many taps as the widest cell; the extra taps weigh 0, which leaves float32 sums unchanged.
    The weights are resize_area_op.cc's, float32 step for step: the cell spans [i * scale, (i + 1) * scale).
    """
    scale = np.float32(source) / np.float32(target)
    cell_start = np.arange(target, dtype=np.float32) * scale
    cell_end = np.arange(1, target + 1, dtype=np.float32) * scale
    first = np.floor(cell_start).astype(np.int64)
    count = np.ceil(cell_end).astype(np.int64) - first
    index = first[:, None] + np.arange(int(count.max()))[None, :]
    low, high = index.astype(np.float32), (index + 1).astype(np.float32)
    start, end = cell_start[:, None], cell_end[:, None]
    weight = np.where(low < start, np.where(high > end, scale, high - start), np.where(high > end, end - low, 1.0))
    weight = np.where(np.arange(index.shape[1])[None, :] < count[:, None], weight, 0.0).astype(np.float32)
    return np.clip(index, 0, source - 1), weight


def _weighted_sum(data: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Sum over taps, one float32 multiply-add at a time in tap order, as TensorFlow's loop adds them."""
    shape = [1] * data.ndim
    shape[axis] = len(weight)
    total = np.take(data, index[:, 0], axis=axis) * weight[:, 0].reshape(shape)
    for tap in range(1, index.shape[1]):
        total += np.take(data, index[:, tap], axis=axis) * weight[:, tap].reshape(shape)
    return total


def area_resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """`tf.image.resize(pixels, (height, width), method=AREA)`: HxWxC -> height x width x C float32.

    Each output is the mean of the input over its cell: row sums across each row's cells first, then their
    weighted sum down the rows, scaled by 1 / (row scale * column scale), all in float32 like the kernel.
    """
    source_height, source_width = pixels.shape[:2]
    data = _weighted_sum(pixels, 1, *_area_taps(source_width, width))  # uint8 * float32 weights -> float32, exact
    data = _weighted_sum(data, 0, *_area_taps(source_height, height))
    cell_area = (np.float32(source_height) / np.float32(height)) * (np.float32(source_width) / np.float32(width))
    return data * np.float32(1.0 / float(cell_area))


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

    An axis whose offset is a whole number needs no blending: its weights are all 0, and the pixels are only
    gathered (not at all when the image already spans it). For the finite values a resize gives, that is exactly
    what the blend computes, without its float64 passes over the whole image.
    """
    data = image
    for axis, length in enumerate((height, width)):
        source_length = data.shape[axis]
        low, high, weight = _edge_interpolation(length, source_length, (length - source_length) / 2)
        if not weight.any():
            if length != source_length or not np.array_equal(low, np.arange(length)):
                data = np.take(data, low, axis=axis)
            continue
        data = data.astype(np.float64, copy=False)
        shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
        data = (np.take(data, low, axis=axis) * (1 - weight).reshape(shape)
                + np.take(data, high, axis=axis) * weight.reshape(shape))
    return data.astype(np.float32)


def prepare_pixels(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Decoded uint8 RGB pixels as the model's HxWx3 float32 input, values 0-1 (resize, centre, / 255)."""
    resized = area_resize(pixels, *fitted_size(pixels.shape[0], pixels.shape[1], height, width))
    return centre_with_edge_padding(resized, height, width) / np.float32(255.0)


def prepare_image(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A Pillow image as the model's input, its pixels taken as TensorFlow's PNG decoder would give them."""
    return prepare_pixels(rgb_array(image), height, width)


def model_input(path: Path | None, image: Image.Image, height: int, width: int) -> np.ndarray:
    """The model's HxWx3 float32 input (0-1) for one post, from the bytes DeepDanbooru would read.

    The file at `path` is decoded as TensorFlow decodes it for DeepDanbooru (JPEG, PNG, GIF); other formats
    (WebP, BMP, ...), and a missing `path`, use `image`, the same file as Pillow decoded it. So does a PNG, which
    Pillow decodes to TensorFlow's pixels (`rgb_array`): the file is not decoded a second time.
    """
    pixels = decode_like_tensorflow(path.read_bytes()) if path is not None and image.format != "PNG" else None
    return prepare_pixels(rgb_array(image) if pixels is None else pixels, height, width)
