"""A control tagger whose model calls a test can watch or slow down, registered with `registered(...)` around an
in-process pytester run instead of a conftest in a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tagger_eval.taggers import Sample, TaggerEntry
from tagger_eval.taggers.control import ControlTagger

Hook = Callable[[Sequence[Sample]], object]


class HookedTagger(ControlTagger):
    """The control tagger under another name, calling `before_predict(samples)` before each model call."""

    def __init__(self, name: str, before_predict: Hook) -> None:
        self.name = name
        self.before_predict = before_predict

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        self.before_predict(samples)
        return super().predict(samples)


def hooked_entry(name: str, before_predict: Hook) -> TaggerEntry:
    """The registry entry of a `HookedTagger`: each run gets a fresh tagger calling the same hook."""
    return TaggerEntry(name, "the control tagger, watched by a test",
                       lambda _argument, _options: HookedTagger(name, before_predict))
