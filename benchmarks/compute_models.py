"""Compute-equivalent tagger models for the benchmarks: the published architectures with random weights.

They have the real compute (layers, input size, ~10,000 outputs) and the exact input/output contracts of the
published models, so a benchmark measures realistic inference without downloading weights. Built once into a cache
(`$TAGGER_EVAL_CACHE/benchmark-models`, default `~/.cache/tagger-eval/benchmark-models`); never committed.

- `wd-vit-base-448`, `wd-convnext-base-448`: ViT-B/16 and ConvNeXt-Base at 448x448 (the layer shapes of the
  published architectures), written node by node with onnx's helper API from numpy random weights, in seconds and
  without torch: standard ONNX ops at opset 17, the WD v3 contract (NHWC BGR float32 0-255 input with a dynamic
  batch axis, sigmoid output) and a `selected_tags.csv`. Needs the `onnx` package (`pip install onnx`; the
  `deepdanbooru` and `test` extras have it), which the README's `pip install -e ".[onnx]"` does not install.
- `deepdanbooru-resnet50-512`: a tf-keras ResNet-50 at 512x512 with sigmoid outputs, saved as a DeepDanbooru
  project (`model-*.h5`, `tags.txt`, `project.json`). Needs TensorFlow (the `deepdanbooru` extra).

The builders take the architecture's shape as arguments, so the tests build the same graphs at a tiny size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

ONNX_MODELS = ("wd-vit-base-448", "wd-convnext-base-448")
KERAS_MODELS = ("deepdanbooru-resnet50-512",)
OUTPUTS = 10_000
DEEPDANBOORU_OUTPUTS = 9_000
OPSET = 17
SHARED_VOCABULARY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "danbooru-tags-2021-5500.csv"
ONNX_HINT = ("the benchmark models are written with the onnx package, which `pip install -e \".[onnx]\"` does not "
             "install: `pip install onnx` (the deepdanbooru and test extras include it)")


def cache_dir() -> Path:
    base = Path(os.environ.get("TAGGER_EVAL_CACHE", Path.home() / ".cache" / "tagger-eval"))
    return base / "benchmark-models"


def vocabulary(size: int) -> list[tuple[str, int]]:
    """(name, category) rows: four ratings, then real Danbooru tags when shared/ is beside the project, padded."""
    rows = [(name, 9) for name in ("general", "sensitive", "questionable", "explicit")]
    if SHARED_VOCABULARY.is_file():
        with SHARED_VOCABULARY.open(newline="", encoding="utf-8") as file:
            rows += [(row["name"], int(row["category"])) for row in csv.DictReader(file)
                     if int(row["category"]) in (0, 4)]
    rows += [(f"synthetic_tag_{index}", 0) for index in range(size - len(rows))]
    return rows[:size]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise SystemExit(f"benchmarks/compute_models.py: {ONNX_HINT}") from None
    return onnx


class GraphBuilder:
    """Nodes and random initializers of one graph, each value named on creation. The weights follow torch's
    default initialisation (uniform within 1/sqrt(fan_in)), so the outputs spread as a freshly made torch model's."""

    def __init__(self, seed: int = 0) -> None:
        self.onnx = _onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, array: np.ndarray | list[int] | float, prefix: str = "const") -> str:
        name = self.name(prefix)
        value = np.asarray(array, dtype=np.int64 if isinstance(array, list) else None)
        value = value.astype(np.float32) if value.dtype.kind == "f" else value
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def uniform(self, shape: tuple[int, ...], bound: float, prefix: str = "weight") -> str:
        return self.constant((self.rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(bound), prefix)

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        output = self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def linear(self, x: str, fan_in: int, fan_out: int, *, bound: float | None = None, zero_bias: bool = False) -> str:
        """x @ W + b over the last axis (torch's nn.Linear)."""
        bound = fan_in ** -0.5 if bound is None else bound
        bias = self.constant(np.zeros(fan_out), "bias") if zero_bias else self.uniform((fan_out,), fan_in ** -0.5)
        return self.op("Add", self.op("MatMul", x, self.uniform((fan_in, fan_out), bound)), bias)

    def conv(self, x: str, channels_in: int, channels_out: int, kernel: int, *, stride: int = 1, padding: int = 0,
             group: int = 1) -> str:
        fan_in = channels_in // group * kernel * kernel
        return self.op("Conv", x, self.uniform((channels_out, channels_in // group, kernel, kernel), fan_in ** -0.5),
                       self.uniform((channels_out,), fan_in ** -0.5), kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[padding] * 4, group=group)

    def layer_norm(self, x: str, width: int) -> str:
        """LayerNormalization over the last axis, scale 1 and bias 0, epsilon 1e-5 (torch's nn.LayerNorm)."""
        return self.op("LayerNormalization", x, self.constant(np.ones(width), "scale"),
                       self.constant(np.zeros(width), "bias"), axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        """x * 0.5 * (1 + erf(x / sqrt 2)): exact GELU from Erf (the Gelu op is opset 20)."""
        erf = self.op("Erf", self.op("Div", x, self.constant(np.sqrt(2.0))))
        return self.op("Mul", self.op("Mul", x, self.op("Add", erf, self.constant(1.0))), self.constant(0.5))

    def wd_input(self) -> str:
        """The WD contract's NHWC BGR 0-255 input as the backbone's NCHW RGB in [-1, 1]."""
        nchw = self.op("Transpose", "input", perm=[0, 3, 1, 2])
        rgb = self.op("Slice", nchw, self.constant([-1]), self.constant([-4]), self.constant([1]), self.constant([-1]))
        return self.op("Sub", self.op("Div", rgb, self.constant(127.5)), self.constant(1.0))

    def wd_model(self, logits: str, size: int, outputs: int, graph_name: str) -> onnx.ModelProto:
        """The graph closed with a sigmoid `output` of (batch, outputs) for an `input` of (batch, size, size, 3)."""
        helper, float32 = self.onnx.helper, self.onnx.TensorProto.FLOAT
        self.nodes.append(helper.make_node("Sigmoid", [logits], ["output"]))
        graph = helper.make_graph(self.nodes, graph_name,
                                  [helper.make_tensor_value_info("input", float32, ["batch", size, size, 3])],
                                  [helper.make_tensor_value_info("output", float32, ["batch", outputs])],
                                  self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="tagger-eval benchmarks/compute_models.py")


def vit_graph(*, size: int = 448, patch: int = 16, width: int = 768, depth: int = 12, heads: int = 12,
              mlp: int = 3072, outputs: int = OUTPUTS, seed: int = 0) -> onnx.ModelProto:
    """ViT-B/16 at its default arguments: a patch convolution, a class token and learned positions, `depth`
    pre-norm encoder blocks (multi-head self-attention, GELU MLP), a final LayerNorm and a linear head on the class
    token; torch's nn.TransformerEncoderLayer(norm_first=True, activation="gelu") shapes."""
    g, head_width = GraphBuilder(seed), width // heads
    tokens = g.op("Conv", g.wd_input(), g.uniform((width, 3, patch, patch), (3 * patch * patch) ** -0.5),
                  g.uniform((width,), (3 * patch * patch) ** -0.5), kernel_shape=[patch, patch],
                  strides=[patch, patch])
    tokens = g.op("Transpose", g.op("Reshape", tokens, g.constant([0, width, -1])), perm=[0, 2, 1])  # (B, N, W)
    batch = g.op("Slice", g.op("Shape", tokens), g.constant([0]), g.constant([1]))
    cls = g.op("Expand", g.constant(np.zeros((1, 1, width)), "cls"),
               g.op("Concat", batch, g.constant([1, width]), axis=0))
    sequence = 1 + (size // patch) ** 2
    x = g.op("Add", g.op("Concat", cls, tokens, axis=1),
             g.constant(g.rng.standard_normal((1, sequence, width), dtype=np.float32) * 0.02, "position"))
    for _ in range(depth):
        qkv = g.linear(g.layer_norm(x, width), width, 3 * width, bound=(6 / (4 * width)) ** 0.5, zero_bias=True)
        qkv = g.op("Transpose", g.op("Reshape", qkv, g.constant([0, 0, 3, heads, head_width])), perm=[2, 0, 3, 1, 4])
        q, k, v = (g.op("Gather", qkv, g.constant(np.array(index, dtype=np.int64)), axis=0) for index in range(3))
        scores = g.op("MatMul", g.op("Mul", q, g.constant(head_width ** -0.5)), g.op("Transpose", k, perm=[0, 1, 3, 2]))
        attended = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # (B, heads, N, head_width)
        attended = g.op("Reshape", g.op("Transpose", attended, perm=[0, 2, 1, 3]), g.constant([0, 0, width]))
        x = g.op("Add", x, g.linear(attended, width, width, zero_bias=True))
        x = g.op("Add", x, g.linear(g.gelu(g.linear(g.layer_norm(x, width), width, mlp)), mlp, width))
    first = g.op("Gather", g.layer_norm(x, width), g.constant(np.array(0, dtype=np.int64)), axis=1)
    return g.wd_model(g.linear(first, width, outputs), size, outputs, "vit")


def convnext_graph(*, size: int = 448, widths: tuple[int, ...] = (128, 256, 512, 1024),
                   depths: tuple[int, ...] = (3, 3, 27, 3), outputs: int = OUTPUTS, seed: int = 0) -> onnx.ModelProto:
    """ConvNeXt-Base at its default arguments: a 4x4 stride-4 stem, stages of blocks (7x7 depthwise convolution,
    LayerNorm over channels, inverted MLP 4x wide with GELU, residual) joined by LayerNorm + 2x2 stride-2
    convolutions, then global average pooling, LayerNorm and a linear head. NCHW between the convolutions, channels
    last around each LayerNorm and MLP, as torch's ConvNeXt (without layer scale) exports."""
    g = GraphBuilder(seed)

    def channels_last(x: str, block: Callable[[str], str]) -> str:
        return g.op("Transpose", block(g.op("Transpose", x, perm=[0, 2, 3, 1])), perm=[0, 3, 1, 2])

    x = g.conv(g.wd_input(), 3, widths[0], 4, stride=4)
    x = channels_last(x, lambda y: g.layer_norm(y, widths[0]))
    for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        if stage:
            previous = widths[stage - 1]
            x = g.conv(channels_last(x, lambda y, w=previous: g.layer_norm(y, w)), previous, width, 2, stride=2)
        for _ in range(depth):
            mixed = g.conv(x, width, width, 7, padding=3, group=width)
            x = g.op("Add", x, channels_last(mixed, lambda y, w=width: g.linear(
                g.gelu(g.linear(g.layer_norm(y, w), w, 4 * w)), 4 * w, w)))
    pooled = g.op("Flatten", g.op("GlobalAveragePool", x))
    return g.wd_model(g.linear(g.layer_norm(pooled, widths[-1]), widths[-1], outputs), size, outputs, "convnext")


ARCHITECTURES: dict[str, Callable[..., Any]] = {"wd-vit-base-448": vit_graph, "wd-convnext-base-448": convnext_graph}


def parameter_count(model: onnx.ModelProto) -> int:
    """Weights, biases, norms and positions: the float initializers (the shape constants are int64)."""
    return sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer
               if tensor.data_type == _onnx().TensorProto.FLOAT and tensor.dims)


def build_onnx(name: str, directory: Path, **shape: Any) -> Path:
    """`model.onnx` (checked by onnx.checker) and `selected_tags.csv` in `directory`; `shape` overrides the
    architecture's published size (the tests build tiny ones)."""
    onnx = _onnx()
    model = ARCHITECTURES[name](**shape)
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    outputs = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    with (directory / "selected_tags.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows((index, tag, category, 0) for index, (tag, category) in enumerate(vocabulary(outputs)))
    return directory


def build_keras(directory: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_keras

    model = tf_keras.applications.ResNet50(weights=None, input_shape=(512, 512, 3), classes=DEEPDANBOORU_OUTPUTS,
                                           classifier_activation="sigmoid")
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model-resnet50.h5")
    tags = [f"rating:{name}" if category == 9 else name for name, category in vocabulary(DEEPDANBOORU_OUTPUTS)]
    (directory / "tags.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
    (directory / "project.json").write_text(json.dumps({"image_width": 512, "image_height": 512,
                                                        "model": "resnet50"}), encoding="utf-8")
    return directory


def unavailable(name: str) -> str | None:
    """Why `name` cannot be built and measured here, or None. The ResNet-50 is a tf-keras model by nature (the
    DeepDanbooru releases are): building it and converting it to ONNX, as the tagger does, need TensorFlow."""
    if name in KERAS_MODELS:
        missing = [package for package in ("tensorflow", "tf_keras", "onnx") if find_spec(package) is None]
        if missing:
            verb = "are" if len(missing) > 1 and "tensorflow" not in missing else "is"
            named = "TensorFlow" if "tensorflow" in missing else " and ".join(missing)
            return (f"{named} {verb} not installed: the ResNet-50 is a tf-keras model, built and converted to ONNX "
                    'with TensorFlow (pip install -e ".[onnx,deepdanbooru]" to measure it)')
    return None


def ensure(name: str) -> Path:
    """The model's directory, built on first use."""
    directory = cache_dir() / name
    marker = directory / ("model.onnx" if name in ONNX_MODELS else "tags.txt")
    if not marker.is_file():
        print(f"building {name} into {directory} (once) ...", flush=True)
        if name in ONNX_MODELS:
            build_onnx(name, directory)
        else:
            build_keras(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[*ONNX_MODELS, *KERAS_MODELS])
    for name in parser.parse_args().names:
        reason = unavailable(name)
        print(f"{name}: skipped: {reason}" if reason else ensure(name))


if __name__ == "__main__":
    main()
