"""Tiny models and tag files with the published contracts of Camie v2, PixAI v0.9, JoyTag and ML-Danbooru.

Every model has the family's exact input (`input`, NCHW float32, a symbolic batch axis) and output names; its body
is a 4x4 grid of mean colours (AveragePool) followed by one linear layer per output, so a test can compute the
expected logits by hand from the weights and a reference-preprocessed image, and a pixel put in the wrong place
changes them.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRID = 4  # the model sees a GRID x GRID grid of mean colours per channel
BLOCK = 16  # pooled first in BLOCK x BLOCK blocks: every published size (448, 512, 640) is a multiple of 64
FEATURES = 3 * GRID * GRID


@dataclass(frozen=True)
class Head:
    """One linear layer over the grid features: `features @ weights + biases`."""

    weights: np.ndarray  # (FEATURES, tags) float32
    biases: np.ndarray  # (tags,) float32

    @property
    def width(self) -> int:
        return int(self.biases.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The layer in float64, from the features of one image (`grid_features`)."""
        return features @ self.weights.astype(np.float64) + self.biases.astype(np.float64)


def make_head(seed: int, biases: Sequence[float], scale: float = 0.05) -> Head:
    """Small seeded weights, so that the biases decide what is predicted and the pixels move the logits a little."""
    weights = np.random.default_rng(seed).normal(0.0, scale, (FEATURES, len(biases))).astype(np.float32)
    return Head(weights, np.asarray(biases, dtype=np.float32))


def grid_features(tensor: np.ndarray) -> np.ndarray:
    """What the tiny models compute before their heads, for one (3, S, S) input, in float64: the mean of each of
    the GRID x GRID cells, flattened (channel, row, column)."""
    channels, height, width = tensor.shape
    cells = tensor.astype(np.float64).reshape(channels, GRID, height // GRID, GRID, width // GRID)
    return cells.mean(axis=(2, 4)).reshape(-1)


@dataclass(frozen=True)
class Output:
    """One graph output: `kind` is `logits`, `sigmoid` (of the head's logits), `top3` (int64 indices of the three
    largest logits, as Camie's `selected_candidates`) or `features` (PixAI's `embedding`)."""

    name: str
    kind: str
    head: Head | None = None


def build_model(path: Path, size: int, outputs: Sequence[Output], *, layout: str = "NCHW",
                dynamic_sides: bool = False, batch: int | str = "batch") -> Path:
    """An ONNX model with input `input` of shape [batch, 3, size, size] (`layout="NHWC"`: [batch, size, size, 3];
    `dynamic_sides`: [batch, 3, height, width]) and the given outputs; `batch` a symbolic axis, or 1 as an export
    with a fixed batch has it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height, width = ("height", "width") if dynamic_sides else (size, size)
    shape = [batch, 3, height, width] if layout == "NCHW" else [batch, height, width, 3]
    nodes = [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2])] if layout == "NHWC" else []
    # Two stages (16x16 blocks, then the grid's cells), so float32 sums stay short and within the tests' 1e-5.
    cell = size // (BLOCK * GRID)
    nodes += [
        helper.make_node("AveragePool", ["nchw" if layout == "NHWC" else "input"], ["blocks"],
                         kernel_shape=[BLOCK, BLOCK], strides=[BLOCK, BLOCK]),
        helper.make_node("AveragePool", ["blocks"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
    ]
    top3 = any(output.kind == "top3" for output in outputs)
    initializers = [numpy_helper.from_array(np.array([3], dtype=np.int64), "k")] if top3 else []
    graph_outputs = []
    for index, output in enumerate(outputs):
        if output.kind == "features":
            nodes.append(helper.make_node("Identity", ["features"], [output.name]))
            graph_outputs.append(helper.make_tensor_value_info(output.name, TensorProto.FLOAT, [batch, FEATURES]))
            continue
        assert output.head is not None, output
        weights, biases, raw, logits = f"w{index}", f"b{index}", f"raw{index}", f"logits{index}"
        initializers += [numpy_helper.from_array(output.head.weights, weights),
                         numpy_helper.from_array(output.head.biases, biases)]
        nodes += [helper.make_node("MatMul", ["features", weights], [raw]),
                  helper.make_node("Add", [raw, biases], [logits])]
        if output.kind == "top3":
            nodes.append(helper.make_node("TopK", [logits, "k"], [f"values{index}", output.name], axis=-1))
            graph_outputs.append(helper.make_tensor_value_info(output.name, TensorProto.INT64, [batch, 3]))
        else:
            operator = {"logits": "Identity", "sigmoid": "Sigmoid"}[output.kind]
            nodes.append(helper.make_node(operator, [logits], [output.name]))
            graph_outputs.append(helper.make_tensor_value_info(output.name, TensorProto.FLOAT,
                                                               [batch, output.head.width]))
    graph = helper.make_graph(nodes, "published_contract",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              graph_outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def camie_outputs(initial: Head, refined: Head, *, refined_name: str = "refined_predictions") -> list[Output]:
    """Camie v2's three outputs in the published order: two heads of logits and the int64 candidates."""
    return [Output("initial_predictions", "logits", initial), Output(refined_name, "logits", refined),
            Output("selected_candidates", "top3", refined)]


def pixai_outputs(head: Head) -> list[Output]:
    """deepghs's PixAI v0.9 export: `embedding`, `logits`, `prediction` (the sigmoid of `logits`)."""
    return [Output("embedding", "features"), Output("logits", "logits", head), Output("prediction", "sigmoid", head)]


# Tag files, in each family's published format.

def write_camie_metadata(path: Path, tags: Sequence[tuple[str, str]], *, size: int = 512) -> Path:
    """`camie-tagger-v2-metadata.json` for (name, category name) tags in output order. `idx_to_tag` is written
    with its keys in reverse order, so a reader that trusts the object's order rather than its keys misplaces
    every tag."""
    names = [name for name, _ in tags]
    document = {
        "model_info": {"img_size": size, "backbone": "tiny test model"},
        "dataset_info": {
            "total_tags": len(tags),
            "tag_mapping": {
                "idx_to_tag": {str(index): names[index] for index in reversed(range(len(names)))},
                "tag_to_idx": {name: index for index, name in enumerate(names)},
                "tag_to_category": dict(tags),
            },
        },
        "output_spec": {name: {"shape": [1, len(tags)]} for name in ("initial_predictions", "refined_predictions",
                                                                      "selected_candidates")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def write_pixai_tags(path: Path, tags: Sequence[tuple[str, int, Sequence[str]]]) -> Path:
    """`selected_tags.csv` (`id,tag_id,name,category,count,ips`) for (name, category, copyrights) tags, `ips` a
    JSON list as deepghs writes it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "tag_id", "name", "category", "count", "ips"])
    for index, (name, category, ips) in enumerate(tags):
        writer.writerow([index, 1000 + index, name, category, 5000 - index, json.dumps(list(ips))])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def write_pixai_thresholds(path: Path, general: float = 0.3, character: float = 0.85) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"category,name,threshold\n0,general,{general}\n4,character,{character}\n", encoding="utf-8")
    return path


def write_joytag_tags(path: Path, names: Sequence[str]) -> Path:
    """`top_tags.txt`: one tag per line, no trailing newline, as the published file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(names), encoding="utf-8")
    return path


def write_ml_danbooru_classes(path: Path, names: Sequence[str], *, as_dict: bool = False) -> Path:
    """`classes.json`: a JSON list (deepghs), or the author's `{"0": name, ...}` (`as_dict`)."""
    classes: object = {str(index): name for index, name in enumerate(names)} if as_dict else list(names)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(classes), encoding="utf-8")
    return path


def cache_hub_files(cache: Path, repo_id: str, files: Mapping[str, Path], commit: str) -> Path:
    """Copy files into the Hugging Face cache layout as `hf_hub_download` leaves it: the files under
    `snapshots/COMMIT/`, and `refs/main` pointing at COMMIT. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
