"""The tagger interface, the registry, and the built-in taggers (registered here, before any entry point's)."""

from tagger_eval.config import TaggerOptions, TaggerSpec
from tagger_eval.data.demo_dataset import vocabulary as demo_vocabulary
from tagger_eval.taggers import deepdanbooru, servers, wd14
from tagger_eval.taggers.base import Sample, Tagger, normalise_prediction, select_tags
from tagger_eval.taggers.control import ControlTagger
from tagger_eval.taggers.demo import HistogramTagger, LowResolutionTagger, PixelTagger
from tagger_eval.taggers.registry import (
    ENTRY_POINT_GROUP,
    PluginError,
    TaggerEntry,
    TaggerUnavailableError,
    UnknownTaggerError,
    create,
    entries,
    get_entry,
    parse_specs,
    read_vocabulary,
    register,
    registered,
    unregister,
)

register(TaggerEntry(ControlTagger.name, "returns each post's truth tags; must score exactly 1.0 (checks the scoring)",
                     lambda _argument, _options: ControlTagger(), vocabulary=lambda _argument: None))
for _cls, _description in (
    (PixelTagger, "demo: measures shapes and colours at full resolution"),
    (LowResolutionTagger, "demo: the same analysis on a 24x24 thumbnail"),
    (HistogramTagger, "demo: colours only, guesses every shape is a circle"),
):
    register(TaggerEntry(_cls.name, _description, lambda _argument, _options, cls=_cls: cls(),
                         vocabulary=lambda _argument: demo_vocabulary()))
for _entry in (*wd14.ENTRIES, *deepdanbooru.ENTRIES, *servers.ENTRIES):
    register(_entry)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
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
    "read_vocabulary",
    "register",
    "registered",
    "select_tags",
    "unregister",
]
