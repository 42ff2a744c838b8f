"""Keras 2 image models written out as ONNX graphs, layer by layer, for the layers convolutional classifiers use.

A direct translation, not a traced TensorFlow graph: each Keras layer becomes the ONNX operator that computes the
same thing (Conv2D -> Conv with TensorFlow's "same" padding as SAME_UPPER, BatchNormalization -> BatchNormalization,
Dense -> Gemm, ...), its weights copied once. Converting DeepDanbooru's 650 MB v3 model takes seconds and a few GB,
where tracing it through TensorFlow (tf2onnx) takes a minute and 15 GB, or runs out of memory with its optimisers.

The graph runs channels first: the NHWC input is transposed once, and back only where Keras's layout shows (Flatten,
a 4-D output). A layer or setting this module does not know is refused with `UnsupportedLayer`, naming it; the
caller verifies every conversion against Keras itself, so a translation mistake is caught, not shipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

OPSET = 17
IR_VERSION = 8  # opset 17's minimum: onnxruntime 1.17 and later load it
INPUT_NAME, OUTPUT_NAME = "input", "output"
TO_CHANNELS_FIRST, TO_CHANNELS_LAST = [0, 3, 1, 2], [0, 2, 3, 1]
ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
MERGES = {"Add": "Sum", "Average": "Mean", "Maximum": "Max", "Minimum": "Min"}  # variadic ONNX operators
POOLS = {"MaxPooling2D": "MaxPool", "AveragePooling2D": "AveragePool"}
GLOBAL_POOLS = {"GlobalAveragePooling2D": "GlobalAveragePool", "GlobalMaxPooling2D": "GlobalMaxPool"}


class UnsupportedLayer(ValueError):
    """A layer, or a setting of one, that has no translation here; the message names the layer."""


class _Graph:
    """The ONNX nodes and weights built so far, and each Keras tensor's rank (4-D tensors are channels first)."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.ranks: dict[str, int] = {}

    def node(self, op_type: str, inputs: Sequence[str], name: str, **attributes: Any) -> str:
        output = f"{name}/{op_type}_{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def weight(self, array: np.ndarray, name: str) -> str:
        self.weights.append(self.numpy_helper.from_array(np.ascontiguousarray(array), f"{name}/w{len(self.weights)}"))
        return self.weights[-1].name

    def activation(self, name: str, function: object, x: str) -> str:
        if function == "linear":
            return x
        if function in ("swish", "silu"):
            return self.node("Mul", [x, self.node("Sigmoid", [x], name)], name)
        if function == "softmax" and self.ranks.get(x, 2) == 2:
            return self.node("Softmax", [x], name, axis=-1)
        if not isinstance(function, str) or function not in ACTIVATIONS:
            raise UnsupportedLayer(f"layer {name}: activation {function!r}")
        return self.node(ACTIVATIONS[function], [x], name)


def _check_layout(name: str, config: dict[str, Any]) -> None:
    if config.get("data_format", "channels_last") != "channels_last":
        raise UnsupportedLayer(f"layer {name}: data_format {config['data_format']}")


def _window(layer: Any, config: dict[str, Any], kernel: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int] = (1, 1)) -> dict[str, Any]:
    """Kernel, strides, dilations and padding of a convolution or pooling window, as ONNX attributes.

    TensorFlow's "same" pads `(out - 1) * stride + (kernel - 1) * dilation + 1 - in` in all, the odd pixel after:
    written out as explicit pads (onnxruntime refuses automatic padding with dilations); SAME_UPPER, the same rule,
    only where the input size is unknown.
    """
    name = config["name"]
    _check_layout(name, config)
    attributes: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(strides)}
    if any(dilation != 1 for dilation in dilations):
        attributes["dilations"] = list(dilations)
    padding = config.get("padding", "valid")
    if padding == "valid":
        return attributes
    if padding != "same":
        raise UnsupportedLayer(f"layer {name}: padding {padding!r}")
    sizes = list(layer.input_shape[1:3])
    if any(size is None for size in sizes):
        if "dilations" in attributes:
            raise UnsupportedLayer(f"layer {name}: dilated 'same' padding of an input of unknown size")
        return {**attributes, "auto_pad": "SAME_UPPER"}
    totals = [max((-(-size // stride) - 1) * stride + (k - 1) * d + 1 - size, 0)
              for size, k, stride, d in zip(sizes, kernel, strides, dilations, strict=True)]
    return {**attributes, "pads": [total // 2 for total in totals] + [total - total // 2 for total in totals]}


def _conv2d(graph: _Graph, layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    kernel, *bias = layer.get_weights()  # kernel (H, W, in / groups, out)
    name = config["name"]
    weights = [graph.weight(kernel.transpose(3, 2, 0, 1), name), *(graph.weight(b, name) for b in bias)]
    window = _window(layer, config, kernel.shape[:2], config["strides"], config["dilation_rate"])
    y = graph.node("Conv", [inputs[0], *weights], name, group=config.get("groups", 1), **window)
    return graph.activation(name, config["activation"], y)


def _dense(graph: _Graph, layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    name = config["name"]
    if graph.ranks[inputs[0]] != 2:
        raise UnsupportedLayer(f"layer {name}: Dense on a {graph.ranks[inputs[0]]}-D tensor")
    weights = [graph.weight(array, name) for array in layer.get_weights()]
    return graph.activation(name, config["activation"], graph.node("Gemm", [inputs[0], *weights], name))


def _batch_norm(graph: _Graph, layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    name, rank = config["name"], graph.ranks[inputs[0]]
    axis = config["axis"] if isinstance(config["axis"], list) else [config["axis"]]
    if [a % rank for a in axis] != [rank - 1] or config.get("renorm") or config.get("virtual_batch_size"):
        raise UnsupportedLayer(f"layer {name}: batch normalisation over axis {config['axis']} or with renorm")
    weights = list(layer.get_weights())
    gamma = weights.pop(0) if config["scale"] else np.ones_like(weights[-1])
    beta = weights.pop(0) if config["center"] else np.zeros_like(weights[-1])
    arrays = [gamma, beta, *weights]  # then the moving mean and variance
    return graph.node("BatchNormalization", [inputs[0], *(graph.weight(a, name) for a in arrays)], name,
                      epsilon=float(config["epsilon"]))


def _pool(graph: _Graph, layer: Any, config: dict[str, Any], inputs: list[str], op_type: str) -> str:
    size = config["pool_size"]
    return graph.node(op_type, inputs, config["name"], **_window(layer, config, size, config["strides"] or size))


def _global_pool(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str], op_type: str) -> str:
    _check_layout(config["name"], config)
    pooled = graph.node(op_type, inputs, config["name"])
    return pooled if config.get("keepdims") else graph.node("Flatten", [pooled], config["name"], axis=1)


def _flatten(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    _check_layout(config["name"], config)
    x = inputs[0]
    if graph.ranks[x] == 4:  # Keras flattens height, width, channels in that order
        x = graph.node("Transpose", [x], config["name"], perm=TO_CHANNELS_LAST)
    return graph.node("Flatten", [x], config["name"], axis=1)


def _zero_padding(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    _check_layout(config["name"], config)
    (top, bottom), (left, right) = config["padding"]
    pads = graph.weight(np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64), config["name"])
    return graph.node("Pad", [inputs[0], pads], config["name"])


def _merge(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str], op_type: str) -> str:
    if len({graph.ranks[x] for x in inputs}) != 1:
        raise UnsupportedLayer(f"layer {config['name']}: merges tensors of different ranks")
    if op_type != "Mul":
        return graph.node(op_type, inputs, config["name"])
    product = inputs[0]
    for x in inputs[1:]:
        product = graph.node("Mul", [product, x], config["name"])
    return product


def _concatenate(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    rank = graph.ranks[inputs[0]]
    axis = config["axis"] % rank
    if rank == 4:
        axis = {1: 2, 2: 3, 3: 1}.get(axis, 0)
    return graph.node("Concat", inputs, config["name"], axis=axis)


def _activation(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    return graph.activation(config["name"], config["activation"], inputs[0])


def _relu(graph: _Graph, _layer: Any, config: dict[str, Any], inputs: list[str]) -> str:
    if config.get("max_value") is not None or config.get("negative_slope") or config.get("threshold"):
        raise UnsupportedLayer(f"layer {config['name']}: ReLU with a cap, slope or threshold")
    return graph.node("Relu", inputs, config["name"])


def _identity(_graph: _Graph, _layer: Any, _config: dict[str, Any], inputs: list[str]) -> str:
    return inputs[0]  # dropout does nothing at inference


Translation = Callable[[_Graph, Any, dict[str, Any], list[str]], str]
TRANSLATIONS: dict[str, Translation] = {
    "Conv2D": _conv2d, "Dense": _dense, "BatchNormalization": _batch_norm, "Flatten": _flatten,
    "ZeroPadding2D": _zero_padding, "Concatenate": _concatenate, "Activation": _activation, "ReLU": _relu,
    "Dropout": _identity, "Multiply": partial(_merge, op_type="Mul"),
    **{name: partial(_merge, op_type=op) for name, op in MERGES.items()},
    **{name: partial(_pool, op_type=op) for name, op in POOLS.items()},
    **{name: partial(_global_pool, op_type=op) for name, op in GLOBAL_POOLS.items()},
}


def _layer_inputs(configs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """Each layer's config with the names of the layers it reads, in order; a Sequential model is a chain."""
    wired = []
    for index, entry in enumerate(configs):
        if "inbound_nodes" not in entry:  # Sequential: the layer before
            wired.append((entry, [configs[index - 1]["config"]["name"]] if index else []))
            continue
        nodes = entry["inbound_nodes"]
        if len(nodes) > 1:
            raise UnsupportedLayer(f"layer {entry['config']['name']} is shared (called {len(nodes)} times)")
        wired.append((entry, [source[0] for source in nodes[0]] if nodes else []))
    return wired


def _translate(model: Any, config: dict[str, Any], graph: _Graph) -> tuple[list[int | None], str]:
    """Every layer into `graph`, in the model's order: the input's shape and the output tensor's name."""
    tensors: dict[str, str] = {}
    input_shape: list[int | None] = []
    for entry, sources in _layer_inputs(config["layers"]):
        layer_config, kind, name = entry["config"], entry["class_name"], entry["config"]["name"]
        if kind == "InputLayer":
            if tensors or layer_config.get("dtype", "float32") != "float32":
                raise UnsupportedLayer(f"layer {name}: a second input, or one not float32")
            input_shape = list(layer_config["batch_input_shape"])
            tensors[name] = INPUT_NAME if len(input_shape) != 4 else graph.node(
                "Transpose", [INPUT_NAME], INPUT_NAME, perm=TO_CHANNELS_FIRST)
            graph.ranks[tensors[name]] = len(input_shape)
            continue
        layer = model.get_layer(name)
        if kind not in TRANSLATIONS:
            raise UnsupportedLayer(f"layer {name}: {kind} has no translation")
        if getattr(layer, "compute_dtype", "float32") != "float32":
            raise UnsupportedLayer(f"layer {name}: computes in {layer.compute_dtype}")
        tensors[name] = TRANSLATIONS[kind](graph, layer, layer_config, [tensors[source] for source in sources])
        graph.ranks[tensors[name]] = len(layer.output_shape)
    if not input_shape or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayer("the model must have exactly one input and one output")
    return input_shape, tensors[config.get("output_layers", [[model.layers[-1].name]])[0][0]]


def keras_to_onnx(model: Any) -> onnx.ModelProto:
    """The ONNX model of a one-input, one-output tf-keras model; input `input` (NHWC as Keras takes it), output
    `output`, unknown sizes (the batch) left symbolic. Raises `UnsupportedLayer` naming what it cannot translate."""
    from onnx import TensorProto, helper

    graph = _Graph()
    input_shape, result = _translate(model, model.get_config(), graph)
    if graph.ranks[result] == 4:
        result = graph.node("Transpose", [result], OUTPUT_NAME, perm=TO_CHANNELS_LAST)
    graph.nodes.append(helper.make_node("Identity", [result], [OUTPUT_NAME]))
    symbolic = ["batch", "height", "width", "channels"]
    dims = [size if size is not None else symbolic[index] for index, size in enumerate(input_shape)]
    out_dims = ["batch", *(size if size is not None else f"out_{index}"
                           for index, size in enumerate(model.output_shape[1:], start=1))]
    onnx_graph = helper.make_graph(
        graph.nodes, model.name, [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_dims)], graph.weights)
    return helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tagger-eval",
                             ir_version=IR_VERSION)
