"""Builders of tiny models with the exact input/output contracts of the published taggers."""

from __future__ import annotations

from pathlib import Path

# Tiny WD14-contract models: the published input/output names, shapes and tag file, with a few weights.
WD14_TAGS = [
    ("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
    ("red_theme", 0), ("blue_theme", 0), ("white_background", 0), ("dark", 0), ("sunny_(tagger-eval)", 4),
]
# One row per channel in the model's own (B, G, R) order, one column per tag; the means are 0-255.
WD14_WEIGHTS = [
    # general sensitive questionable explicit red blue white dark sunny
    [0.010, 0.000, 0.000, 0.000, -0.04, 0.05, 0.02, -0.02, -0.03],  # B
    [0.000, 0.010, 0.000, 0.000, -0.04, -0.02, 0.02, -0.02, 0.03],  # G
    [0.000, 0.000, 0.012, 0.000, 0.05, -0.04, 0.02, -0.02, 0.03],  # R
]
WD14_BIASES = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, -12.0, 4.0, -6.0]


def build_wd14_model(directory: Path, *, dynamic_batch: bool, tags=WD14_TAGS, size: int = 448) -> Path:
    """A directory with model.onnx and selected_tags.csv: mean colour -> linear -> sigmoid.

    The mean is taken over 16x16 average pools first, so float32 rounding stays far below the tests' tolerances.

    v2 exports: input `input_1:0` with batch 1, output `predictions_sigmoid`; v3: a symbolic batch axis.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory.mkdir(parents=True, exist_ok=True)
    batch = "batch" if dynamic_batch else 1
    names = ("input", "output") if dynamic_batch else ("input_1:0", "predictions_sigmoid")
    weights = np.array(WD14_WEIGHTS, dtype=np.float32)[:, : len(tags)]
    biases = np.array(WD14_BIASES, dtype=np.float32)[: len(tags)]
    if len(tags) > len(WD14_TAGS):  # extra tags get zero weights
        weights = np.pad(weights, ((0, 0), (0, len(tags) - weights.shape[1])))
        biases = np.pad(biases, (0, len(tags) - biases.shape[0]))
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", [names[0]], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
            helper.make_node("ReduceMean", ["pooled"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "biases"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [names[1]]),
        ],
        "wd14_contract",
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [batch, len(tags)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(biases, "biases")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, directory / "model.onnx")
    lines = ["tag_id,name,category,count"] + [f"{i},{name},{category},{1000 - i}" for i, (name, category) in
                                              enumerate(tags)]
    (directory / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory
