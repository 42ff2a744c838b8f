"""DeepDanbooru's Keras model converted once to ONNX and cached, so evaluations run on onnxruntime without TensorFlow.

Importing TensorFlow, loading a `.h5` and building its first graph cost about 10 s per run; onnxruntime loads the
converted model in a fraction of that (0.4 s for a ResNet-50, 2 s for the 650 MB v3 model on two cores). The
converted model is cached as `$TAGGER_EVAL_CACHE/deepdanbooru-onnx/<sha256 of the model file>.onnx`, so it follows
the file's bytes, not its name or place. It is written only once verified: the ONNX and Keras outputs on a few
inputs agree within `TOLERANCE`, else the conversion is refused and the model runs on TensorFlow, with a warning
naming it. The file appears whole or not at all (a temporary file beside it, renamed into place) and carries its
verification in its metadata. A refusal is recorded beside it (`<sha256>.refused.json`), so later runs go straight
to TensorFlow instead of converting again; a newer converter tries again.

This module also loads the Keras model itself (with tf-keras, as DeepDanbooru saves it) for the conversion and for
the models that are not converted. Nothing here imports TensorFlow until a Keras model is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tagger_eval.checksums import file_digest
from tagger_eval.config import ExecutionProvider, TaggerOptions
from tagger_eval.taggers.base import TaggerError
from tagger_eval.taggers.onnx import create_session
from tagger_eval.taggers.release import cache_dir

CACHE_FOLDER = "deepdanbooru-onnx"
DIGESTS_FILE = "digests.json"
TOLERANCE = 1e-4  # the largest difference of one output probability, ONNX against Keras
CONVERTER = "tagger_eval.taggers.keras_onnx 1"  # a refusal by another converter is not taken as final
KERAS_PACKAGES = ("tensorflow", "tf_keras")
CONVERSION_PACKAGES = (*KERAS_PACKAGES, "onnx", "onnxruntime")
INSTALL_HINT = 'pip install "tagger-eval[onnx,deepdanbooru]"'
FLOAT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}


class DeepDanbooruError(TaggerError, ValueError):
    """A DeepDanbooru project that cannot be used; the message names the file or directory at fault."""


class ConversionRefused(TaggerError):
    """The ONNX conversion of a model could not be made or trusted; the message says why."""


def installed(*packages: str) -> bool:
    """Whether every package can be imported, looked up without importing it."""
    for package in packages:
        try:
            if importlib.util.find_spec(package) is None:
                return False
        except (ImportError, ValueError):  # a blocked (`sys.modules[name] = None`) or broken module
            return False
    return True


def model_digest(path: Path) -> str:
    """The file's sha256, from the cache's index when it recorded the file unchanged since (same size, inode,
    modification and change times), else hashed: the 650 MB v3 model and its conversion took about a second to
    hash on every run. Files are recorded once this cache folder exists (something was converted here)."""
    stamp, key = _stamp(path), str(path.resolve())
    entry = _read_index().get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_digest(path)
    if (cache_dir() / CACHE_FOLDER).is_dir():
        _record_digests({path: digest})
    return digest


def _stamp(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns]


def _read_index() -> dict[str, Any]:
    try:
        index = json.loads((cache_dir() / CACHE_FOLDER / DIGESTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _record_digests(digests: dict[Path, str]) -> None:
    """Remember files' sha256 in the index (concurrent writers may drop an entry: it is hashed again)."""
    index = _read_index()
    index.update({str(path.resolve()): {"stamp": _stamp(path), "sha256": digest} for path, digest in digests.items()})
    _write_atomically(cache_dir() / CACHE_FOLDER / DIGESTS_FILE, json.dumps(index, indent=1).encode())


def _write_atomically(path: Path, *chunks: bytes) -> None:
    """The chunks as `path`, whole or not at all: a temporary file beside it, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            for chunk in chunks:
                stream.write(chunk)
        os.chmod(name, 0o644)  # mkstemp's 0600 would keep a shared cache's other users out
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def converted_path(digest: str) -> Path:
    return cache_dir() / CACHE_FOLDER / f"{digest}.onnx"


def refusal_path(digest: str) -> Path:
    return cache_dir() / CACHE_FOLDER / f"{digest}.refused.json"


def cached_conversion(digest: str) -> Path | None:
    """The verified ONNX model converted from the model file with this sha256, if there is one."""
    path = converted_path(digest)
    return path if path.is_file() else None


def recorded_refusal(digest: str) -> str | None:
    """Why this converter refused the model before, when it did (an unreadable record counts as none)."""
    try:
        record = json.loads(refusal_path(digest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("reason") if isinstance(record, dict) and record.get("converter") == CONVERTER else None


# --- the two runtimes ----------------------------------------------------------------------------------------------


class OnnxModel:
    """A converted model on onnxruntime, with the run's execution provider and threads."""

    def __init__(self, path: Path, options: TaggerOptions) -> None:
        self.path = path
        self.session = create_session(path, options)
        (model_input,), (output,) = self.session.get_inputs(), self.session.get_outputs()
        self.input_name, self.output_name = model_input.name, output.name
        self.input_shape = tuple(size if isinstance(size, int) else None for size in model_input.shape)
        self.output_shape = tuple(size if isinstance(size, int) else None for size in output.shape)
        self.input_is_float = model_input.type in FLOAT_TYPES
        self.input_type = FLOAT_TYPES.get(model_input.type, model_input.type)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output_name], {self.input_name: batch})[0])


class KerasModel:
    """The model file loaded with tf-keras (Keras 2, which reads DeepDanbooru's `.h5` files), run by TensorFlow."""

    def __init__(self, path: Path, options: TaggerOptions, why: str) -> None:
        """`why`: what the error says when TensorFlow is not installed (what it was needed for)."""
        tf, tf_keras = _import_keras(why)
        _configure_tensorflow(tf, options)
        try:
            self.model = tf_keras.models.load_model(str(path), compile=False)
        except Exception as error:  # h5py, Keras and TensorFlow raise many kinds for a damaged file: one message
            raise DeepDanbooruError(
                f"cannot load the DeepDanbooru model {path}: {type(error).__name__}: {error}") from error
        self.input_shape, self.output_shape = self.model.input_shape, self.model.output_shape
        dtype = self.model.inputs[0].dtype
        self.input_type, self.input_is_float = dtype.name, dtype.is_floating

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch))


def _import_keras(why: str) -> tuple[Any, Any]:
    """tensorflow and tf_keras, with TensorFlow's logs quietened."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError as error:
        raise DeepDanbooruError(f"{why} needs tensorflow and tf-keras ({error}); install with `{INSTALL_HINT}`"
                                ) from error
    return tf, tf_keras


def _configure_tensorflow(tf: Any, options: TaggerOptions) -> None:
    """Threads and devices, which TensorFlow accepts only before it starts; afterwards a warning says so.

    GPUs get memory growth, so TensorFlow does not take a whole GPU from the other taggers of the same run;
    `execution_provider="cpu"` hides them from TensorFlow.
    """
    changes: list[tuple[str, Any]] = []
    if options.threads is not None:
        changes.append((f"{options.threads} intra-op threads",
                        lambda: tf.config.threading.set_intra_op_parallelism_threads(options.threads)))
    gpus = tf.config.list_physical_devices("GPU")
    if options.execution_provider == ExecutionProvider.CPU:
        if tf.config.get_visible_devices("GPU"):
            changes.append(("running on the CPU only", lambda: tf.config.set_visible_devices([], "GPU")))
    else:
        growing = [gpu for gpu in gpus if not tf.config.experimental.get_memory_growth(gpu)]
        if growing:
            changes.append(("GPU memory growth",
                            lambda: [tf.config.experimental.set_memory_growth(gpu, True) for gpu in growing]))
    for description, change in changes:
        try:
            change()
        except RuntimeError:  # "cannot be modified after initialization"
            warnings.warn(f"TensorFlow is already running in this process: {description} cannot apply to "
                          "DeepDanbooru", RuntimeWarning, stacklevel=4)


# --- conversion ----------------------------------------------------------------------------------------------------


def verification_inputs(height: int, width: int) -> np.ndarray:
    """Three images in [0, 1]: seeded noise, a two-way colour gradient, flat grey."""
    noise = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    rows, columns = np.linspace(0, 1, height, dtype=np.float32), np.linspace(0, 1, width, dtype=np.float32)
    gradient = np.stack(np.broadcast_arrays(rows[:, None], columns[None, :], (rows[:, None] + columns) / 2), axis=2)
    return np.stack([noise, gradient, np.full((height, width, 3), 0.5, dtype=np.float32)])


def convert(keras: KerasModel, model_path: Path, digest: str, size: tuple[int, int],
            tolerance: float = TOLERANCE) -> Path:
    """Convert the model, verify it against Keras on `verification_inputs(*size)` and cache it; the cached path.

    Raises `ConversionRefused` (and records the refusal) when the model cannot be translated, onnxruntime cannot
    run the translation, or an output differs by more than `tolerance`; `OSError` when the cache is not writable.
    """
    from tagger_eval.taggers.keras_onnx import UnsupportedLayer, keras_to_onnx

    inputs = verification_inputs(*size)
    try:
        data = keras_to_onnx(keras.model).SerializeToString()
        outputs = _onnx_outputs(data, inputs)
    except UnsupportedLayer as error:
        raise _refuse(digest, model_path, f"{error}") from None
    except Exception as error:  # an unexpected layer configuration, a model onnxruntime refuses: Keras still runs
        raise _refuse(digest, model_path, f"{type(error).__name__}: {error}") from None
    difference = float(np.max(np.abs(outputs - keras.run(inputs))))
    if not difference <= tolerance:  # NaN included
        raise _refuse(digest, model_path, f"its ONNX conversion differs from Keras by {difference:.3g} (tolerance "
                                          f"{tolerance:g})")
    # Protobuf appends repeated fields: a message of metadata alone, written after the model, adds to its metadata.
    record = _verification_record(model_path, digest, difference, tolerance, len(inputs))
    target = converted_path(digest)
    _write_atomically(target, data, record)
    converted_digest = hashlib.sha256(data)
    converted_digest.update(record)
    _record_digests({model_path: digest, target: converted_digest.hexdigest()})
    return target


def _onnx_outputs(data: bytes, inputs: np.ndarray) -> np.ndarray:
    """The serialised model's outputs on the CPU (the conversion is verified, not the run's device)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: inputs})[0])


def _verification_record(model_path: Path, digest: str, difference: float, tolerance: float, inputs: int) -> bytes:
    from onnx import ModelProto, StringStringEntryProto

    record = {"source_file": model_path.name, "source_sha256": digest, "converter": CONVERTER,
              "max_abs_difference": f"{difference:.3g}", "tolerance": f"{tolerance:g}", "verified_inputs": str(inputs)}
    return ModelProto(metadata_props=[StringStringEntryProto(key=f"tagger_eval.{key}", value=value)
                                      for key, value in record.items()]).SerializeToString()


def _refuse(digest: str, model_path: Path, reason: str) -> ConversionRefused:
    """Record the refusal where the cache is writable (the record only spares later runs a conversion) and return
    the error to raise."""
    record = {"model": str(model_path), "converter": CONVERTER, "reason": reason}
    with contextlib.suppress(OSError):
        _write_atomically(refusal_path(digest), json.dumps(record).encode())
    return ConversionRefused(reason)


def onnx_or_keras(keras: KerasModel, model_path: Path, digest: str, size: tuple[int, int],
                  options: TaggerOptions) -> OnnxModel | KerasModel:
    """The converted model when it can be made and trusted, else the Keras model, with a warning that says why."""
    if not installed("onnx", "onnxruntime"):
        reason = f"onnx and onnxruntime are needed to convert it (install with `{INSTALL_HINT}`)"
    elif (recorded := recorded_refusal(digest)) is not None:
        reason = f"{recorded}; recorded in {refusal_path(digest)}, delete it to try again"
    else:
        try:
            return OnnxModel(convert(keras, model_path, digest, size), options)
        except ConversionRefused as refused:
            reason = str(refused)
        except OSError as error:
            reason = f"its conversion could not be cached in {converted_path(digest).parent}: {error}"
    warnings.warn(f"DeepDanbooru model {model_path} runs on TensorFlow, not converted to ONNX: {reason}",
                  RuntimeWarning, stacklevel=3)
    return keras
