"""Taggers for the demo dataset that really read the pixels, at three levels of skill.

- `demo-pixel` measures each quadrant's shape (fill ratio of its bounding box) and colour at full resolution.
- `demo-lowres` runs the same analysis on a 24x24 thumbnail: small shapes blur away, frames fade.
- `demo-histogram` counts colours only: it sees backgrounds and frames but guesses every shape is a circle.
They exist so that the demo evaluation compares taggers of visibly different quality, like a real leaderboard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from tagger_eval.data import demo_dataset as demo
from tagger_eval.taggers.base import Sample, Tagger
from tagger_eval.tags import RATING_LETTERS

_FRAME_RATINGS = {colour: RATING_LETTERS[letter] for letter, colour in demo.RATING_FRAMES.items() if colour}
_SHAPE_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "star": 0.34}
_INSET = demo.BORDER + 2  # first pixel row/column that is always background
_FOREGROUND_DISTANCE = 60.0


def _palette(colours: Mapping[str, tuple[int, int, int]]) -> tuple[list[str], np.ndarray]:
    return list(colours), np.array(list(colours.values()), dtype=np.float32)


def _soft_nearest(colour: np.ndarray, colours: Mapping[str, tuple[int, int, int]], sigma: float) -> dict[str, float]:
    """A probability per named colour, falling off with the distance to `colour`."""
    names, values = _palette(colours)
    distances = np.linalg.norm(values - colour, axis=1)
    weights = np.exp(-0.5 * (distances / sigma) ** 2) + 1e-9
    return dict(zip(names, (weights / weights.sum()).tolist(), strict=True))


def _as_array(image: Image.Image) -> np.ndarray:
    rgb = image.convert("RGB")
    if rgb.size != (demo.SIZE, demo.SIZE):
        rgb = rgb.resize((demo.SIZE, demo.SIZE), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.float32)


def _any_of(probabilities: Sequence[float]) -> float:
    """P(at least one) for independent events."""
    return float(1.0 - np.prod([1.0 - p for p in probabilities])) if probabilities else 0.0


class _DemoTagger(Tagger):
    default_threshold = 0.5

    def vocabulary(self) -> Mapping[str, int]:
        return demo.vocabulary()

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        return [self.analyse(_as_array(sample.image)) for sample in samples]

    def analyse(self, pixels: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    @staticmethod
    def frame_and_background(pixels: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        """Tag probabilities for the frame (hence the rating) and the background, and the background per row."""
        inner_columns = np.concatenate([pixels[:, _INSET : _INSET + 2], pixels[:, -_INSET - 2 : -_INSET]], axis=1)
        background_rows = np.median(inner_columns, axis=1)  # (H, 3): follows a vertical gradient
        top, bottom = background_rows[_INSET], background_rows[-_INSET - 1]
        ring = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                               pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
        ring_colour = np.median(ring, axis=0)
        frame_distance = float(np.linalg.norm(ring_colour - top))
        p_frame = float(np.clip((frame_distance - 20.0) / 40.0, 0.0, 1.0))
        frame_colours = _soft_nearest(ring_colour, {c: demo.SHAPE_COLOURS[c] for c in _FRAME_RATINGS}, 45.0)
        p_gradient = float(np.clip((np.linalg.norm(top - bottom) - 15.0) / 30.0, 0.0, 1.0))
        tags = {"border": p_frame, "gradient_background": p_gradient, "simple_background": 1.0 - p_gradient}
        tags[RATING_LETTERS["g"]] = 1.0 - p_frame
        for colour, p in frame_colours.items():
            tags[f"{colour}_border"] = p_frame * p
            tags[_FRAME_RATINGS[colour]] = p_frame * p
        for name, p in _soft_nearest(top, demo.BACKGROUNDS, 40.0).items():
            tags[f"{name}_background"] = p
        return tags, background_rows


class PixelTagger(_DemoTagger):
    name = "demo-pixel"
    default_score_floor = 0.2

    def analyse(self, pixels: np.ndarray) -> dict[str, float]:
        tags, background_rows = self.frame_and_background(pixels)
        distance = np.linalg.norm(pixels - background_rows[:, None, :], axis=2)
        foreground = distance > _FOREGROUND_DISTANCE
        for border in (foreground[:_INSET], foreground[-_INSET:], foreground[:, :_INSET], foreground[:, -_INSET:]):
            border[...] = False
        half = demo.SIZE // 2
        shapes: list[tuple[float, dict[str, float], dict[str, float]]] = []
        for top, left in ((0, 0), (0, half), (half, 0), (half, half)):
            mask = foreground[top : top + half, left : left + half]
            area = int(mask.sum())
            if area < 12:
                continue
            rows, columns = np.nonzero(mask)
            box = (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
            fill = area / box
            weights = {kind: np.exp(-abs(fill - ideal) / 0.05) for kind, ideal in _SHAPE_FILL.items()}
            total = sum(weights.values())
            kinds = {kind: float(w / total) for kind, w in weights.items()}
            core = pixels[top : top + half, left : left + half][mask & (distance[top : top + half, left : left + half]
                                                                        > 2 * _FOREGROUND_DISTANCE)]
            colour = np.median(core if len(core) else pixels[top : top + half, left : left + half][mask], axis=0)
            present = float(np.clip((area - 12) / 60.0, 0.0, 1.0))
            shapes.append((present, kinds, _soft_nearest(colour, demo.SHAPE_COLOURS, 40.0)))
        tags.update(_shape_tags(shapes))
        return tags


class LowResolutionTagger(PixelTagger):
    name = "demo-lowres"
    default_score_floor = -0.25
    thumbnail = 24

    def analyse(self, pixels: np.ndarray) -> dict[str, float]:
        image = Image.fromarray(pixels.astype(np.uint8))
        small = image.resize((self.thumbnail, self.thumbnail), Image.Resampling.BOX)
        return super().analyse(np.asarray(small.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32))


class HistogramTagger(_DemoTagger):
    name = "demo-histogram"
    default_score_floor = -0.5

    def analyse(self, pixels: np.ndarray) -> dict[str, float]:
        tags, _ = self.frame_and_background(pixels)
        names, values = _palette(demo.SHAPE_COLOURS)
        flat = pixels.reshape(-1, 3)
        distances = np.linalg.norm(flat[:, None, :] - values[None, :, :], axis=2)
        share = np.bincount(distances.argmin(axis=1)[distances.min(axis=1) < 40.0], minlength=len(names)) / len(flat)
        frame = max((p, tag) for tag, p in tags.items() if tag.endswith("_border") and tag != "border")
        # Colours alone: every colour seen is taken for one circle, the most common shape guess.
        shapes = []
        for name, fraction in zip(names, share.tolist(), strict=True):
            if frame[1] == f"{name}_border" and tags["border"] > 0.5:
                fraction -= 0.1  # the frame's own pixels
            if fraction > 0.01:
                shapes.append((min(1.0, fraction * 40), {"circle": 0.6, "square": 0.4}, {name: 1.0}))
        tags.update(_shape_tags(shapes))
        return tags


def _shape_tags(shapes: Sequence[tuple[float, Mapping[str, float], Mapping[str, float]]]) -> dict[str, float]:
    """Tag probabilities from per-quadrant (presence, kind probabilities, colour probabilities) estimates."""
    tags: dict[str, float] = {}
    for kind, tag in demo.SHAPE_TAGS.items():
        tags[tag] = _any_of([present * kinds.get(kind, 0.0) for present, kinds, _ in shapes])
        for colour in demo.SHAPE_COLOURS:
            tags[f"{colour}_{kind}"] = _any_of(
                [present * kinds.get(kind, 0.0) * colours.get(colour, 0.0) for present, kinds, colours in shapes])
    for (colour, kind), character in demo.CHARACTERS.items():
        tags[character] = tags[f"{colour}_{kind}"]
    count = sum(present > 0.5 for present, _, _ in shapes)
    for n, tag in demo.COUNT_TAGS.items():
        tags[tag] = 0.9 if n == count else 0.05
    tags["multiple_shapes"] = 0.9 if count > 1 else 0.05
    return tags
