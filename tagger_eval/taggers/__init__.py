"""The tagger interface, the registry, and the built-in taggers."""

from tagger_eval.config import TaggerOptions, TaggerSpec
from tagger_eval.taggers import deepdanbooru, servers, wd14
from tagger_eval.taggers.base import Sample, Tagger, normalise_prediction, select_tags
from tagger_eval.taggers.control import ControlTagger
from tagger_eval.taggers.demo import HistogramTagger, LowResolutionTagger, PixelTagger
from tagger_eval.taggers.registry import (
    TaggerEntry,
    TaggerUnavailableError,
    UnknownTaggerError,
    create,
    entries,
    get_entry,
    parse_specs,
    register,
)

for _cls, _description in (
    (ControlTagger, "returns each post's truth tags; must score exactly 1.0 (checks the scoring)"),
    (PixelTagger, "demo: measures shapes and colours at full resolution"),
    (LowResolutionTagger, "demo: the same analysis on a 24x24 thumbnail"),
    (HistogramTagger, "demo: colours only, guesses every shape is a circle"),
):
    register(TaggerEntry(_cls.name, _description, lambda _argument, _options, cls=_cls: cls()))
for _entry in (*wd14.ENTRIES, *deepdanbooru.ENTRIES, *servers.ENTRIES):
    register(_entry)

__all__ = [
    "Sample",
    "Tagger",
    "TaggerEntry",
    "TaggerOptions",
    "TaggerSpec",
    "TaggerUnavailableError",
    "UnknownTaggerError",
    "create",
    "entries",
    "get_entry",
    "normalise_prediction",
    "parse_specs",
    "register",
    "select_tags",
]
