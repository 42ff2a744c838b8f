"""Compute-equivalent tagger models for the benchmarks: the published architectures with random weights.

They have the real compute (layers, input size, ~10,000 outputs) and the exact input/output contracts of the
published models, so a benchmark measures realistic inference without downloading weights. Built once into a cache
(`$TAGGER_EVAL_CACHE/benchmark-models`, default `~/.cache/tagger-eval/benchmark-models`); never committed.

- `wd-vit-base-448`, `wd-convnext-base-448`: ViT-B/16 and ConvNeXt-Base at 448x448 (the layer shapes of the
  published architectures, written out below in plain torch), exported to ONNX with the WD v3 contract (NHWC BGR
  float32 0-255 input with a dynamic batch axis, sigmoid output) and a `selected_tags.csv`. Needs torch
  (`pip install torch`).
- `deepdanbooru-resnet50-512`: a tf-keras ResNet-50 at 512x512 with sigmoid outputs, saved as a DeepDanbooru
  project (`model-*.h5`, `tags.txt`, `project.json`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

ONNX_MODELS = ("wd-vit-base-448", "wd-convnext-base-448")
KERAS_MODELS = ("deepdanbooru-resnet50-512",)
OUTPUTS = 10_000
DEEPDANBOORU_OUTPUTS = 9_000
SHARED_VOCABULARY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "danbooru-tags-2021-5500.csv"


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


def _torch_backbone(name: str):
    """ViT-B/16 (12 blocks of width 768, 12 heads, MLP 3072, 16x16 patches) or ConvNeXt-Base (depths 3-3-27-3,
    widths 128-256-512-1024, 7x7 depthwise convolutions, inverted MLPs), for 448x448 inputs and OUTPUTS classes."""
    import torch
    from torch import nn

    if name == "wd-vit-base-448":
        class ViT(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.patches = nn.Conv2d(3, 768, kernel_size=16, stride=16)
                self.cls = nn.Parameter(torch.zeros(1, 1, 768))
                self.position = nn.Parameter(torch.randn(1, 1 + (448 // 16) ** 2, 768) * 0.02)
                layer = nn.TransformerEncoderLayer(768, 12, 3072, activation="gelu", batch_first=True,
                                                   norm_first=True, dropout=0.0)
                self.blocks = nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(768)
                self.head = nn.Linear(768, OUTPUTS)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                tokens = self.patches(x).flatten(2).transpose(1, 2)
                tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.position
                return self.head(self.norm(self.blocks(tokens))[:, 0])

        return ViT()

    class Block(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(width, width, kernel_size=7, padding=3, groups=width)
            self.norm = nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.depthwise(x).permute(0, 2, 3, 1)
            return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)

    class ChannelsLastNorm(nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    widths, depths = (128, 256, 512, 1024), (3, 3, 27, 3)
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], kernel_size=4, stride=4), ChannelsLastNorm(widths[0])]
    for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        if stage:
            layers += [ChannelsLastNorm(widths[stage - 1]), nn.Conv2d(widths[stage - 1], width, 2, stride=2)]
        layers += [Block(width) for _ in range(depth)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(widths[-1]),
                         nn.Linear(widths[-1], OUTPUTS))


def build_onnx(name: str, directory: Path) -> Path:
    import torch

    class WDContract(torch.nn.Module):
        """NHWC, BGR, 0-255 in (as the WD exports take it); sigmoid probabilities out."""

        def __init__(self, backbone: torch.nn.Module) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            rgb = images.permute(0, 3, 1, 2).flip(1) / 127.5 - 1.0
            return torch.sigmoid(self.backbone(rgb))

    torch.manual_seed(0)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder kernel has no ONNX export
    model = WDContract(_torch_backbone(name)).eval()
    directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 448, 448, 3),), str(directory / "model.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
    with (directory / "selected_tags.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows((index, tag, category, 0) for index, (tag, category) in enumerate(vocabulary(OUTPUTS)))
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
        print(ensure(name))


if __name__ == "__main__":
    main()
