"""The control tagger: returns each post's own truth, so any score but 1.0 means the scoring is broken."""

from __future__ import annotations

from collections.abc import Sequence

from tagger_eval.taggers.base import Sample, Tagger


class ControlTagger(Tagger):
    name = "control"
    default_threshold = 0.5
    default_score_floor = 1.0
    storable = False  # its output is the post's truth, which the run's options change, not the image's

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        return [dict.fromkeys(sample.post.tags, 1.0) for sample in samples]
