"""Image files decoded to the pixels TensorFlow gives DeepDanbooru, without TensorFlow.

DeepDanbooru reads a file with `tf.io.decode_png(bytes, channels=3)`, whose kernel sniffs the format and decodes
JPEG, PNG and single-frame GIF (BMP it refuses as the "wrong op", an animated GIF too; an opaque WebP it returns as a
4-D batch that DeepDanbooru's padding step rejects). What each needs to come out bit-identical:

- JPEG: libjpeg-turbo with the fast integer IDCT (TensorFlow's default, `dct_method="INTEGER_FAST"`) and fancy
  (smooth) chroma upsampling; simplejpeg is libjpeg-turbo with both switches. EXIF orientation is ignored. CMYK and
  YCCK files come out of libjpeg-turbo as CMYK and are turned into RGB by TensorFlow's own integer formula, inverted
  when the file has an Adobe marker. The few sampling layouts simplejpeg refuses go to TensorFlow when it is
  installed, else to Pillow (its accurate IDCT is a few levels off).
- PNG: libpng with the alpha channel (or tRNS) stripped, 16-bit samples cut to their high byte, palettes and grey
  expanded; Pillow's decoding plus `rgb_array` gives the same bytes.
- GIF: the first frame on a black canvas, its transparent colour black (TensorFlow's giflib decoder); the palette
  indices come from Pillow, the colour table and frame geometry from the file itself. An animated GIF gives its
  first frame as `tf.io.decode_gif` does.

Anything else (WebP, BMP, TIFF, a GIF without a colour table or whose indices run past it, a JPEG nothing here
decodes) is not TensorFlow's to decode: the caller falls back to Pillow.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGIC = b"GIF8"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# libjpeg only takes an APP14 segment as Adobe's when its data holds at least this many bytes (jdmarker.c).
_ADOBE_SEGMENT_MINIMUM = 12


def rgb_array(image: Image.Image) -> np.ndarray:
    """The image as uint8 HxWx3 RGB, as `tf.io.decode_png(..., channels=3)` decodes it.

    Alpha is dropped, not composited (Pillow's RGBA -> RGB conversion does exactly that); a palette image gives
    its colours; 16-bit grey keeps the high byte (Pillow would clip it to 255 instead).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P":  # through RGBA: Pillow warns when a palette with transparency goes straight to RGB
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)[:, :, :3]
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def decode_like_tensorflow(data: bytes) -> np.ndarray | None:
    """HxWx3 uint8 pixels exactly as `tf.io.decode_png(data, channels=3)` gives them; None where it would fail."""
    if data.startswith(JPEG_MAGIC):
        return _decode_jpeg(data)
    if data.startswith(PNG_MAGIC):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return rgb_array(image)
    if data.startswith(GIF_MAGIC):
        return _decode_gif(data)
    return None


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """libjpeg-turbo with TensorFlow's settings, through simplejpeg; TensorFlow itself for what simplejpeg refuses.

    simplejpeg is imported here: it comes with the `deepdanbooru` extra, and the taggers' registry imports this
    module whatever is installed.
    """
    import simplejpeg  # type: ignore[import-untyped]  # ships a .pyi but no py.typed marker

    try:
        colourspace = simplejpeg.decode_jpeg_header(data)[2]
        if colourspace not in ("CMYK", "YCCK"):
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False, strict=False)
        cmyk = simplejpeg.decode_jpeg(data, colorspace="CMYK", fastdct=True, fastupsample=False, strict=False)
    except ValueError:
        return _decode_with_tensorflow(data)
    return cmyk_to_rgb(cmyk, adobe=has_adobe_marker(data))


def _decode_with_tensorflow(data: bytes) -> np.ndarray | None:
    """TensorFlow's own decoder where it is installed, else None (Pillow: its accurate IDCT differs by a few levels).

    simplejpeg (TurboJPEG's API) refuses sampling factors outside its table (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1,
    grey): luma 3x1, chroma finer than luma and the like, which libjpeg itself decodes.
    """
    try:
        import tensorflow as tf
    except ImportError:
        return None
    try:
        return np.asarray(tf.io.decode_png(data, channels=3))
    except tf.errors.OpError:
        return None


def cmyk_to_rgb(cmyk: np.ndarray, *, adobe: bool) -> np.ndarray:
    """TensorFlow's CMYK -> RGB (jpeg_mem.cc): integer products, inverted values when Adobe wrote the file."""
    values = cmyk.astype(np.int32)
    ink, black = values[:, :, :3], values[:, :, 3:]
    rgb = black * ink // 255 if adobe else (255 - black) * (255 - ink) // 255
    return rgb.astype(np.uint8)


def has_adobe_marker(data: bytes) -> bool:
    """Whether libjpeg sets `saw_Adobe_marker`: an APP14 "Adobe" segment among the markers before the first scan."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = struct.unpack_from(">H", data, position + 2)[0]
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xEE and len(segment) >= _ADOBE_SEGMENT_MINIMUM and segment.startswith(b"Adobe"):
            return True
        position += 2 + length
    return False


@dataclass(frozen=True)
class GifFrame:
    """A GIF's first image as giflib reads it, and the canvas TensorFlow draws it on."""

    canvas: tuple[int, int]  # width, height: the largest frame's, not the file's logical screen
    box: tuple[int, int, int, int]  # left, top, width, height of the first frame
    colours: np.ndarray  # its colour table (local, else global), N x 3 uint8
    transparent: int | None  # from the first graphic control block before it, when that block is well formed


def _sub_blocks_end(data: bytes, position: int) -> int:
    while data[position]:
        position += data[position] + 1
    return position + 1


def _colour_table(data: bytes, position: int, flags: int) -> bytes:
    return data[position : position + 3 * (2 << (flags & 7))] if flags & 0x80 else b""


def _frames(data: bytes) -> list[tuple[tuple[int, int, int, int], bytes, int | None]]:
    """Each image's box, local colour table and transparent index, until the trailer or the data runs out."""
    frames: list[tuple[tuple[int, int, int, int], bytes, int | None]] = []
    position = 13 + len(_colour_table(data, 13, data[10]))
    transparent: int | None = None
    control_seen = False
    try:
        while data[position] in (0x21, 0x2C):
            if data[position] == 0x21:
                if data[position + 1] == 0xF9 and not control_seen:  # giflib: the first control block counts
                    control_seen = True
                    well_formed = data[position + 2] == 4 and data[position + 3] & 1
                    transparent = data[position + 6] if well_formed else None
                position = _sub_blocks_end(data, position + 2)
                continue
            left, top, width, height, flags = struct.unpack_from("<HHHHB", data, position + 1)
            table = _colour_table(data, position + 10, flags)
            frames.append(((left, top, width, height), table, transparent))
            position = _sub_blocks_end(data, position + 11 + len(table))  # + the LZW code size byte
            transparent, control_seen = None, False
    except (IndexError, struct.error):
        pass
    return frames


def read_gif_frame(data: bytes) -> GifFrame | None:
    """The first frame's geometry, colour table and transparency, and TensorFlow's canvas; None without frames."""
    if len(data) < 13:
        return None
    frames = _frames(data)
    if not frames:
        return None
    box, local, transparent = frames[0]
    colours = local or _colour_table(data, 13, data[10])
    table = np.frombuffer(colours[: len(colours) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
    canvas = max(frame[0][2] for frame in frames), max(frame[0][3] for frame in frames)
    return GifFrame(canvas, box, table, transparent)


def _decode_gif(data: bytes) -> np.ndarray | None:
    """TensorFlow's first GIF frame (gif_io.cc): on a black canvas the size of the largest frame, shifted by its
    offset and cropped to that canvas, transparent pixels black; None where TensorFlow fails."""
    frame = read_gif_frame(data)
    if frame is None or not len(frame.colours):
        return None  # TensorFlow: "missing color map"
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        indices = np.asarray(image)
    left, top, width, height = frame.box
    canvas_width, canvas_height = frame.canvas
    visible = indices[top : min(top + height, canvas_height), left : min(left + width, canvas_width)]
    opaque = visible != frame.transparent if frame.transparent is not None else np.ones(visible.shape, dtype=bool)
    if visible[opaque].size and int(visible[opaque].max()) >= len(frame.colours):
        return None  # TensorFlow: "found color index ... outside of color map range"
    canvas = np.zeros((canvas_height, canvas_width, 3), dtype=np.uint8)
    pixels = frame.colours[np.minimum(visible, len(frame.colours) - 1)]
    pixels[~opaque] = 0
    canvas[top : top + visible.shape[0], left : left + visible.shape[1]] = pixels
    return canvas
