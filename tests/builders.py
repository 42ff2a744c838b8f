"""Builders of tiny models with the exact input/output contracts of the published taggers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

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


def build_wd14_model(directory: Path, *, dynamic_batch: bool, tags=WD14_TAGS, size: int = 448,
                     input_type: str = "float32", sigmoid: bool = True) -> Path:
    """A directory with model.onnx and selected_tags.csv: mean colour -> linear -> sigmoid.

    The mean is taken over 16x16 average pools first, so float32 rounding stays far below the tests' tolerances.

    v2 exports: input `input_1:0` with batch 1, output `predictions_sigmoid`; v3: a symbolic batch axis. Models
    that break the contract: `input_type` another numpy type (cast to float inside), `sigmoid=False` outputs logits.
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
    element_type = helper.np_dtype_to_tensor_dtype(np.dtype(input_type))
    cast = [] if element_type == TensorProto.FLOAT else [helper.make_node("Cast", [names[0]], ["floats"],
                                                                         to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        [
            *cast,
            helper.make_node("Transpose", [cast[0].output[0] if cast else names[0]], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
            helper.make_node("ReduceMean", ["pooled"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "biases"], ["logits"]),
            helper.make_node("Sigmoid" if sigmoid else "Identity", ["logits"], [names[1]]),
        ],
        "wd14_contract",
        [helper.make_tensor_value_info(names[0], element_type, [batch, size, size, 3])],
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


# Tiny DeepDanbooru-contract models: a tf-keras `.h5` taking (None, 512, 512, 3) RGB 0-1, plus tags.txt.
DD_SIZE = 512
DD_POOL = 64  # 512 / 64 = an 8x8 grid of mean colours: the model sees where the colours are, so centring matters
DD_TAGS = ["1girl", "solo", "red_theme", "blue_theme", "white_background", "hatsune_miku",
           "rating:safe", "rating:questionable", "rating:explicit"]
DD_CHARACTER_TAGS = ["hatsune_miku"]
# Biases: 1girl always predicted, the others by the pixels; rating:safe always the most probable rating.
DD_BIASES = {"1girl": 4.0, "solo": -4.0, "red_theme": -3.0, "blue_theme": -3.0, "white_background": -4.0,
             "hatsune_miku": -6.0, "rating:safe": 3.0, "rating:questionable": -3.0, "rating:explicit": -3.0}
DD_MODEL_NAME = "model-resnet_custom_v3.h5"


def build_deepdanbooru_model(path: Path, n_tags: int, *, input_dtype: str = "float32",
                             activation: str | None = "sigmoid") -> None:
    """Input (None, 512, 512, 3) float32 -> 8x8 average pooling -> Dense(n_tags, sigmoid), fixed weights.

    Models that break the contract: `input_dtype` another type (cast to float inside), `activation=None` logits.
    """
    import warnings

    import numpy as np
    import tf_keras

    inputs = tf_keras.Input(shape=(DD_SIZE, DD_SIZE, 3), dtype=input_dtype)
    floats = inputs if input_dtype == "float32" else tf_keras.layers.Rescaling(1.0)(inputs)  # Rescaling casts
    pooled = tf_keras.layers.AveragePooling2D(pool_size=DD_POOL)(floats)
    outputs = tf_keras.layers.Dense(n_tags, activation=activation)(tf_keras.layers.Flatten()(pooled))
    model = tf_keras.Model(inputs, outputs)
    inputs_count = (DD_SIZE // DD_POOL) ** 2 * 3
    kernel = np.random.default_rng(1234).normal(0.0, 0.05, (inputs_count, n_tags)).astype(np.float32)
    bias = np.array([DD_BIASES.get(tag, 0.0) for tag in DD_TAGS][:n_tags] + [0.0] * max(0, n_tags - len(DD_TAGS)),
                    dtype=np.float32)
    model.set_weights([kernel, bias])
    with warnings.catch_warnings():  # HDF5 is legacy for Keras, and exactly what DeepDanbooru ships
        warnings.simplefilter("ignore", UserWarning)
        model.save(path)


def write_deepdanbooru_project(directory: Path, model_file: Path, tags: Sequence[str] = DD_TAGS, *,
                               image_size: int = DD_SIZE, characters: Sequence[str] = DD_CHARACTER_TAGS) -> Path:
    """A DeepDanbooru project directory around an already built model file."""
    import json
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, directory / DD_MODEL_NAME)
    (directory / "tags.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
    (directory / "tags-character.txt").write_text("\n".join(characters) + "\n", encoding="utf-8")
    context = {"image_width": image_size, "image_height": image_size, "model": "resnet_custom_v3"}
    (directory / "project.json").write_text(json.dumps(context), encoding="utf-8")
    return directory


def build_dataset(root: Path, posts: Sequence[tuple[int, str, str]], images: Mapping[int, Image.Image]) -> Path:
    """A data.db of `(id, rating, general tags)` posts; a post gets an image file only when `images` has one, and
    each row's md5 is its file's (a post without a file gets the md5 of no bytes)."""
    import hashlib
    import sqlite3

    from tagger_eval.data.dataset import create_schema

    (root / "images").mkdir(parents=True, exist_ok=True)
    md5s = {}
    for post_id, image in images.items():
        path = root / "images" / f"{post_id}.png"
        image.save(path)
        md5s[post_id] = hashlib.md5(path.read_bytes()).hexdigest()
    db_path = root / "data.db"
    connection = sqlite3.connect(db_path)
    try:
        create_schema(connection)
        for post_id, rating, general in posts:
            connection.execute(
                "INSERT INTO posts (id, md5, file_ext, rating, tag_string_general, image_path, source)"
                " VALUES (?, ?, 'png', ?, ?, ?, 'test')",
                (post_id, md5s.get(post_id, hashlib.md5(b"").hexdigest()), rating, general, f"images/{post_id}.png"),
            )
        connection.commit()
    finally:
        connection.close()
    return db_path


def comparable_results(document: dict) -> dict:
    """A results document without what legitimately differs between two runs of the same evaluation: the time,
    the machine, the commit and the runtimes."""
    import copy

    document = copy.deepcopy(document)
    for key in ("created_at", "commit", "machine"):
        document.pop(key)
    for tagger in document["taggers"].values():
        tagger["summary"].pop("mean_runtime_s")
        for post in tagger["posts"].values():
            post.pop("runtime_s")
    return document


def without_store_marks(document: dict) -> dict:
    """`comparable_results`, also without what says where the outputs came from: a run after another one of the
    same posts reads their outputs from the prediction store (`from_store`, `posts_from_store`)."""
    document = comparable_results(document)
    for tagger in document["taggers"].values():
        tagger.pop("posts_from_store", None)
        for post in tagger["posts"].values():
            post.pop("from_store", None)
    return document
