"""Our TensorFlow-free DeepDanbooru preprocessing against TensorFlow and DeepDanbooru's own code: pixels bit-identical
to `tf.io.decode_png(bytes, channels=3)` (what DeepDanbooru calls) for every JPEG, PNG and GIF kind made here, the AREA
resize bit-identical to `tf.image.resize`, probabilities within 1e-4 of `evaluate_image` on a small ResNet built by
DeepDanbooru's own code."""

from __future__ import annotations

import importlib.util
import io
import struct
import sys
import types
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagger_eval.taggers.deepdanbooru_decode import decode_like_tensorflow, read_gif_frame
from tagger_eval.taggers.deepdanbooru_image import area_resize, fitted_size, model_input, prepare_image

tf = pytest.importorskip("tensorflow")
simplejpeg = pytest.importorskip("simplejpeg")
pytest.importorskip("skimage")
if importlib.util.find_spec("deepdanbooru") is None:
    pytest.skip("deepdanbooru is not installed", allow_module_level=True)

SIZE = 64
TAGS = [f"tag_{index}" for index in range(12)]
SIZES = [(1, 1), (2, 3), (9, 17), (16, 16), (67, 45), (130, 61)]  # width, height


def smooth(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Gradients plus noise: JPEG's IDCT and upsampling differences show on it, unlike on flat colour."""
    rng = np.random.default_rng(seed)
    x, y = np.linspace(0, 1, width)[None, :, None], np.linspace(0, 1, height)[:, None, None]
    base = np.concatenate([255 * x + 0 * y, 255 * y + 0 * x, 255 * x * y, 200 * (1 - x) + 0 * y], axis=2)
    return np.clip(base[:, :, :channels] + rng.normal(0, 30, (height, width, channels)), 0, 255).astype(np.uint8)


def pillow_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def without_app14(data: bytes) -> bytes:
    """The JPEG with its Adobe (APP14) segments removed: a CMYK file libjpeg reads as not Adobe's."""
    out, position = bytearray(data[:2]), 2
    while data[position + 1] != 0xDA:
        length = struct.unpack_from(">H", data, position + 2)[0]
        if data[position + 1] != 0xEE:
            out += data[position : position + 2 + length]
        position += 2 + length
    return bytes(out + data[position:])


# EXIF with orientation 6 (rotate 90 on display), which TensorFlow, and so DeepDanbooru, ignores.
ROTATED_EXIF = b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0"
PILLOW_JPEGS: dict[str, tuple[str, dict[str, Any]]] = {  # kind -> Pillow mode and save options
    "420": ("RGB", {}), "444": ("RGB", {"subsampling": 0}), "422": ("RGB", {"subsampling": 1}),
    "progressive": ("RGB", {"progressive": True}), "progressive-444": ("RGB", {"progressive": True, "subsampling": 0}),
    "optimized": ("RGB", {"optimize": True}), "restarts": ("RGB", {"restart_marker_blocks": 3}),
    "exif-rotated": ("RGB", {"exif": ROTATED_EXIF}), "grey": ("L", {}),
    "grey-progressive": ("L", {"progressive": True}),
    "cmyk": ("CMYK", {}), "cmyk-progressive": ("CMYK", {"progressive": True}), "cmyk-not-adobe": ("CMYK", {}),
}
JPEG_KINDS = [*PILLOW_JPEGS, "440", "411", "ycck"]


def jpeg(kind: str, width: int, height: int, quality: int) -> bytes:
    """One JPEG of a kind: Pillow's (libjpeg-turbo) encoder, simplejpeg's for 4:4:0, 4:1:1 and YCCK."""
    if kind in ("440", "411"):
        return simplejpeg.encode_jpeg(smooth(width, height), quality=quality, colorsubsampling=kind)
    if kind == "ycck":
        return simplejpeg.encode_jpeg(smooth(width, height, 4), quality=quality, colorspace="CMYK")
    mode, options = PILLOW_JPEGS[kind]
    pixels = smooth(width, height, len(mode))  # RGB, L, CMYK
    data = pillow_bytes(Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode), "JPEG", quality=quality,
                        **options)
    return without_app14(data) if kind == "cmyk-not-adobe" else data


def tensorflow_pixels(data: bytes) -> np.ndarray:
    return tf.io.decode_png(data, channels=3).numpy()


@pytest.mark.parametrize("kind", JPEG_KINDS)
def test_jpeg_pixels_are_tensorflows(kind: str) -> None:
    for (width, height), quality in [(size, quality) for size in SIZES for quality in (30, 90)]:
        data = jpeg(kind, width, height, quality)
        np.testing.assert_array_equal(decode_like_tensorflow(data), tensorflow_pixels(data),
                                      err_msg=f"{kind} {width}x{height} q{quality}")


def test_jpeg_simplejpeg_refuses_goes_to_tensorflow_then_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampling layouts TurboJPEG's API rejects (luma 3x1, chroma finer than luma) are TensorFlow's to decode."""
    data = jpeg("420", 67, 45, 80)

    def refuse(_: bytes) -> None:
        raise ValueError("tjDecompressHeader3(): Could not determine subsampling level of JPEG image")

    monkeypatch.setattr(simplejpeg, "decode_jpeg_header", refuse)
    np.testing.assert_array_equal(decode_like_tensorflow(data), tensorflow_pixels(data))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # not installed: the caller's Pillow image is used
    assert decode_like_tensorflow(data) is None


# --- PNG ----------------------------------------------------------------------------------------------------------
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rows(samples: np.ndarray, bits: int) -> bytes:
    """Filter-0 scanlines of an HxWxC sample array at 1, 2, 4, 8 or 16 bits."""
    if not samples.size:
        return b""
    rows = samples.reshape(samples.shape[0], -1)
    if bits == 16:
        packed = rows.astype(">u2").view(np.uint8).reshape(rows.shape[0], -1)
    elif bits == 8:
        packed = rows.astype(np.uint8)
    else:
        unpacked = np.unpackbits(rows.astype(np.uint8)[:, :, None], axis=2)[:, :, 8 - bits :]
        packed = np.packbits(unpacked.reshape(rows.shape[0], -1), axis=1)
    return b"".join(b"\x00" + row.tobytes() for row in packed)


def png(samples: np.ndarray, colour_type: int, bits: int, *, palette: bytes | None = None,
        transparency: bytes | None = None, interlaced: bool = False) -> bytes:
    """A PNG of any colour type and bit depth (Pillow writes only some), Adam7-interlaced on request."""
    height, width = samples.shape[:2]
    passes = ADAM7 if interlaced else [(0, 0, 1, 1)]
    raw = b"".join(png_rows(samples[y::dy, x::dx], bits) for x, y, dx, dy in passes)
    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, int(interlaced))
    chunks = [(b"IHDR", header), (b"PLTE", palette), (b"tRNS", transparency), (b"IDAT", zlib.compress(raw))]
    chunks.append((b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks if data is not None)


def png_case(colour_type: int, bits: int, variant: str, width: int, height: int) -> bytes:
    rng = np.random.default_rng(colour_type * 100 + bits)
    samples = rng.integers(0, 1 << bits, (height, width, CHANNELS[colour_type]))
    palette = transparency = None
    if colour_type == 3:
        entries = (1 << bits) // 2 if variant == "short-palette" else 1 << bits  # indices past it: black
        palette = rng.integers(0, 256, 3 * max(entries, 1)).astype(np.uint8).tobytes()
        transparency = rng.integers(0, 256, 5).astype(np.uint8).tobytes() if variant == "tRNS" else None
    elif variant == "tRNS":
        transparency = b"".join(struct.pack(">H", int(value)) for value in samples[0, 0])
    return png(samples, colour_type, bits, palette=palette, transparency=transparency,
               interlaced=variant == "interlaced")


PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type -> bits
PNG_KINDS = [(colour_type, bits, variant)
             for colour_type, depths in PNG_DEPTHS.items()
             for bits in depths
             for variant in ("plain", "interlaced", *(("tRNS",) if colour_type in (0, 2, 3) else ()),
                             *(("short-palette",) if colour_type == 3 else ()))]


@pytest.mark.parametrize(("colour_type", "bits", "variant"), PNG_KINDS)
def test_png_pixels_are_tensorflows(colour_type: int, bits: int, variant: str) -> None:
    """Alpha and tRNS dropped, 16 bits cut to the high byte, palettes and low-depth grey expanded, as libpng does."""
    for width, height in SIZES:
        data = png_case(colour_type, bits, variant, width, height)
        np.testing.assert_array_equal(decode_like_tensorflow(data), tensorflow_pixels(data),
                                      err_msg=f"{width}x{height}")


# --- GIF ----------------------------------------------------------------------------------------------------------

def palette_image(width: int, height: int, seed: int = 0, colours: int = 16) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, colours, (height, width)).astype(np.uint8), "P")
    image.putpalette(rng.integers(0, 256, 3 * colours).astype(np.uint8).tolist())
    return image


def gif_with_frame_offset(data: bytes, left: int, top: int) -> bytes:
    """The one frame moved to (left, top) on a screen grown to hold it. TensorFlow ignores the screen: its canvas
    is the largest frame's size, and the frame is shifted and cropped on it, the rest black."""
    width, height = struct.unpack_from("<HH", data, 6)
    patched = bytearray(data)
    patched[6:10] = struct.pack("<HH", width + left, height + top)
    descriptor = data.index(b"\x2c\x00\x00\x00\x00", 13)
    patched[descriptor + 1 : descriptor + 5] = struct.pack("<HH", left, top)
    return bytes(patched)


def with_control_block_first(data: bytes, block: bytes) -> bytes:
    """Another graphic control block before the file's own: giflib, and so TensorFlow, reads only the first."""
    position = 13 + 3 * (2 << (data[10] & 7))  # after the global colour table
    return data[:position] + block + data[position:]


GIFS: dict[str, Callable[[int, int], bytes]] = {
    "plain": lambda w, h: pillow_bytes(palette_image(w, h), "GIF"),
    "transparent": lambda w, h: pillow_bytes(palette_image(w, h), "GIF", transparency=3),
    "interlaced": lambda w, h: pillow_bytes(palette_image(w, h), "GIF", interlace=True),
    "grey": lambda w, h: pillow_bytes(Image.fromarray(smooth(w, h)[:, :, 0]), "GIF"),
    "frame-offset": lambda w, h: gif_with_frame_offset(
        pillow_bytes(palette_image(w, h), "GIF", transparency=5, background=7), 2, 3),
    "first-control-block-counts": lambda w, h: with_control_block_first(
        pillow_bytes(palette_image(w, h), "GIF", transparency=3), b"\x21\xf9\x04\x01\x00\x00\x05\x00"),
    "malformed-control-block": lambda w, h: with_control_block_first(  # 5 bytes, not 4: no transparency
        pillow_bytes(palette_image(w, h), "GIF", transparency=3), b"\x21\xf9\x05\x01\x00\x00\x05\x00\x00"),
}


@pytest.mark.parametrize("kind", GIFS)
def test_gif_pixels_are_tensorflows(kind: str) -> None:
    """The first frame, transparent pixels black (Pillow gives their palette colour)."""
    for width, height in SIZES:
        data = GIFS[kind](width, height)
        np.testing.assert_array_equal(decode_like_tensorflow(data), tensorflow_pixels(data),
                                      err_msg=f"{width}x{height}")


def test_animated_gif_gives_its_first_frame_as_tensorflow_decodes_it() -> None:
    frames = [palette_image(30, 20, seed) for seed in range(3)]
    data = pillow_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated gifs"):
        tensorflow_pixels(data)  # and so DeepDanbooru's loader fails
    np.testing.assert_array_equal(decode_like_tensorflow(data), tf.io.decode_gif(data).numpy()[0])


def test_gif_index_past_its_colour_table_is_left_to_pillow() -> None:
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) % 16, "P")
    image.putpalette(list(range(12)))  # 4 colours, indices up to 15
    data = pillow_bytes(image, "GIF", optimize=False)
    frame = read_gif_frame(data)
    assert frame is not None and len(frame.colours) == 4
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside of color map range"):
        tensorflow_pixels(data)
    assert decode_like_tensorflow(data) is None


# --- AREA resize --------------------------------------------------------------------------------------------------
RESIZE_SOURCES = [(1, 1), (1, 7), (3, 2), (63, 64), (64, 64), (65, 64), (100, 37), (37, 100), (511, 512),
                  (513, 777), (700, 701), (1000, 333), (97, 1531), (1200, 900), (1, 3000)]  # height, width


@pytest.mark.parametrize("target", [(SIZE, SIZE), (512, 512), (299, 299), (448, 320), (7, 5)])
def test_area_resize_is_tensorflows_bit_for_bit(target: tuple[int, int]) -> None:
    rng = np.random.default_rng(target[0])
    for height, width in RESIZE_SOURCES:
        pixels = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        try:
            expected = tf.image.resize(pixels, target, method="area", preserve_aspect_ratio=True).numpy()
        except tf.errors.InvalidArgumentError:  # a side rounds to 0 pixels: DeepDanbooru fails, we keep 1 pixel
            assert 1 in fitted_size(height, width, *target)
            continue
        size = fitted_size(height, width, *target)
        assert size == expected.shape[:2], (height, width)
        np.testing.assert_array_equal(area_resize(pixels, *size), expected, err_msg=f"{height}x{width}")


# --- the whole pipeline against DeepDanbooru's own code -----------------------------------------------------------

def rgba_with_holes() -> Image.Image:
    pixels = np.concatenate([smooth(70, 50), np.full((50, 70, 1), 255, np.uint8)], axis=2)
    pixels[10:30, 20:60, 3] = 0  # transparent, colours kept: DeepDanbooru drops alpha without compositing
    return Image.fromarray(pixels, "RGBA")


FILES: dict[str, Callable[[], bytes]] = {
    "baseline.jpg": lambda: jpeg("420", 130, 61, 75),
    "progressive.jpg": lambda: jpeg("progressive", 40, 90, 85),
    "444.jpg": lambda: jpeg("444", 64, 64, 90),
    "exif-rotated.jpg": lambda: jpeg("exif-rotated", 100, 37, 80),
    "grey.jpg": lambda: jpeg("grey", 33, 17, 70),
    "cmyk.jpg": lambda: jpeg("cmyk", 90, 70, 80),
    "ycck.jpg": lambda: jpeg("ycck", 50, 80, 80),
    "rgb.png": lambda: pillow_bytes(Image.fromarray(smooth(150, 80)), "PNG"),
    "rgba.png": lambda: pillow_bytes(rgba_with_holes(), "PNG"),
    "la.png": lambda: pillow_bytes(rgba_with_holes().convert("LA"), "PNG"),
    "palette-trns.png": lambda: png_case(3, 8, "tRNS", 45, 67),
    "grey-16.png": lambda: png_case(0, 16, "plain", 80, 20),
    "rgb-16.png": lambda: png_case(2, 16, "interlaced", 30, 50),
    "grey-1.png": lambda: png_case(0, 1, "plain", 61, 29),
    "plain.gif": lambda: GIFS["plain"](70, 40),
    "transparent.gif": lambda: GIFS["transparent"](40, 70),
    "frame-offset.gif": lambda: GIFS["frame-offset"](64, 30),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("dd-reference")
    for name, make in FILES.items():
        (directory / name).write_bytes(make())
    return {name: directory / name for name in FILES}


@pytest.fixture(scope="module")
def dd() -> types.ModuleType:
    """DeepDanbooru itself; it imports tensorflow_io only for WebP, so a stand-in does where that is not installed."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():  # its import silences all warnings
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # which it sets; restored afterwards
        if importlib.util.find_spec("tensorflow_io") is None:
            patch.setitem(sys.modules, "tensorflow_io", types.ModuleType("tensorflow_io"))
        import deepdanbooru
        return deepdanbooru


@pytest.fixture(scope="module")
def model(dd: types.ModuleType) -> Any:
    """DeepDanbooru's ResNet built by its own code, small (64x64 input, two stages), seeded He-normal weights."""
    keras = tf.keras
    inputs = keras.Input(shape=(SIZE, SIZE, 3), dtype="float32")
    features = dd.model.resnet.resnet_original_bottleneck_model(inputs, filter_sizes=[32, 64], repeat_sizes=[1, 1],
                                                                final_pool=False)
    outputs = keras.layers.Activation("sigmoid", dtype="float32")(dd.model.layers.conv_gap(features, len(TAGS)))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0, np.sqrt(2 / np.prod(weight.shape[:3])), weight.shape).astype(np.float32)
                       if weight.ndim == 4 else weight for weight in model.get_weights()])
    return model


def pillow_image(path: Path) -> Image.Image:
    """The image as the dataset hands it to a tagger: Pillow's decoding of the file."""
    with Image.open(path) as image:
        image.load()
        return image


@pytest.mark.parametrize(("height", "width"), [(SIZE, SIZE), (80, 48), (40, 96)])
def test_model_input_is_deepdanbooru_load_image_for_evaluate(dd: types.ModuleType, files: dict[str, Path],
                                                            height: int, width: int) -> None:
    for name, path in files.items():
        expected = dd.data.load_image_for_evaluate(str(path), width=width, height=height)
        ours = model_input(path, pillow_image(path), height, width)
        assert ours.shape == (height, width, 3) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6, err_msg=name)


def test_probabilities_are_deepdanbooru_evaluate_image(dd: types.ModuleType, model: Any,
                                                       files: dict[str, Path]) -> None:
    expected = np.array([[score for _, score in dd.commands.evaluate_image(str(path), model, TAGS, 0.0)]
                         for path in files.values()])
    ours = model.predict(np.stack([model_input(path, pillow_image(path), SIZE, SIZE) for path in files.values()]))
    assert expected.shape == ours.shape == (len(files), len(TAGS))
    assert np.abs(ours - expected).max() <= 1e-4
    # Pillow's pixels (accurate IDCT, GIF transparency in its palette colour) move them far more: the model sees it.
    names = [name for name in files if name.endswith((".jpg", "transparent.gif"))]
    pillow = model.predict(np.stack([prepare_image(pillow_image(files[name]), SIZE, SIZE) for name in names]))
    rows = [list(files).index(name) for name in names]
    assert np.abs(pillow - expected[rows]).max(axis=1).min() > 5e-4


@pytest.mark.parametrize("name", ["picture.bmp", "picture.tiff", "animated.gif"])
def test_files_deepdanbooru_cannot_read_are_still_evaluated(dd: types.ModuleType, tmp_path: Path, name: str) -> None:
    """DeepDanbooru's loader fails on BMP (TensorFlow's "wrong op"), TIFF (then tensorflow-io's WebP decoder fails too)
    and animated GIF; we take Pillow's pixels, and the GIF's first frame as `tf.io.decode_gif` gives it."""
    path = tmp_path / name
    frames = [palette_image(50, 30, seed) for seed in range(2)]
    path.write_bytes(pillow_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]) if name.endswith(".gif")
                     else pillow_bytes(Image.fromarray(smooth(50, 30)), path.suffix[1:].upper()))
    assert decode_like_tensorflow(path.read_bytes()) is None or name.endswith(".gif")
    with pytest.raises((AttributeError, tf.errors.OpError)):
        dd.data.load_image_for_evaluate(str(path), width=SIZE, height=SIZE)
    image = pillow_image(path)
    first_frame = Image.fromarray(tf.io.decode_gif(path.read_bytes()).numpy()[0]) if name.endswith(".gif") else image
    np.testing.assert_array_equal(model_input(path, image, SIZE, SIZE), prepare_image(first_frame, SIZE, SIZE))


@pytest.mark.parametrize(("alpha", "options"), [(False, {"quality": 60}), (False, {"lossless": True}),
                                                (True, {"quality": 60}), (True, {"lossless": True})])
def test_webp_is_libwebps_rgb_with_alpha_dropped(tmp_path: Path, alpha: bool, options: dict[str, Any]) -> None:
    """DeepDanbooru reads WebP with tensorflow-io's libwebp decoder and drops alpha (`rgba_to_rgb`); Pillow's libwebp
    gives the same RGB as TensorFlow's own `tf.io.decode_webp`, where that exists."""
    path = tmp_path / "picture.webp"
    path.write_bytes(pillow_bytes(rgba_with_holes() if alpha else Image.fromarray(smooth(70, 50)), "WEBP", **options))
    image = pillow_image(path)
    assert decode_like_tensorflow(path.read_bytes()) is None
    if hasattr(tf.io, "decode_webp"):
        decoded = tf.io.decode_webp(path.read_bytes()).numpy()  # H x W x C, or frames x H x W x C
        first_frame = decoded.reshape(-1, *decoded.shape[-3:])[0]
        np.testing.assert_array_equal(np.asarray(image.convert("RGBA"))[:, :, :3], first_frame[:, :, :3])
    np.testing.assert_array_equal(model_input(path, image, SIZE, SIZE), prepare_image(image, SIZE, SIZE))


def test_without_a_path_the_pillow_image_is_used(files: dict[str, Path]) -> None:
    image = pillow_image(files["rgba.png"])
    np.testing.assert_array_equal(model_input(None, image, SIZE, SIZE), prepare_image(image, SIZE, SIZE))
