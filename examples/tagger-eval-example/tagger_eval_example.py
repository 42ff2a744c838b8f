"""A tagger-eval tagger in a package of its own: it names the background after the image's dominant colour.

It reads the pixels and nothing else: each pixel within a small distance of one of the demo dataset's background
colours counts for that colour, and the share of the image a colour covers is the probability of
`<colour>_background`, predicted above 0.5. It sees no shapes, frames or ratings, and gradient backgrounds rarely
cover half the image, so on the bundled demo it scores low, but it never predicts a wrong tag there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tagger_eval.data.demo_dataset import BACKGROUNDS
from tagger_eval.taggers import Sample, Tagger, TaggerEntry
from tagger_eval.tags import GENERAL

NEAR = 40.0  # the RGB distance within which a pixel counts as a palette colour
TAGS = [f"{name}_background" for name in BACKGROUNDS]
PALETTE = np.array(list(BACKGROUNDS.values()), dtype=np.float32)


class DominantColourTagger(Tagger):
    name = "dominant-colour"
    default_threshold = 0.5  # the colour covers more than half of the image

    def vocabulary(self) -> Mapping[str, int]:
        return dict.fromkeys(TAGS, GENERAL)

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        return [colour_shares(np.asarray(sample.image.convert("RGB"), dtype=np.float32)) for sample in samples]


def colour_shares(pixels: np.ndarray) -> dict[str, float]:
    """`<colour>_background` -> the share of the image's pixels close to that colour."""
    flat = pixels.reshape(-1, 3)
    distances = np.linalg.norm(flat[:, None, :] - PALETTE[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)[distances.min(axis=1) < NEAR]
    counts = np.bincount(nearest, minlength=len(TAGS))
    return {tag: count / len(flat) for tag, count in zip(TAGS, counts.tolist(), strict=True)}


ENTRY = TaggerEntry(
    DominantColourTagger.name,
    "example plugin: the background colour, from the image's dominant colour",
    lambda _argument, _options: DominantColourTagger(),
    vocabulary=lambda _argument: dict.fromkeys(TAGS, GENERAL),  # what it can output, without building it
)
