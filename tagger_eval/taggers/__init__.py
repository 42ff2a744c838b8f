"""The tagger interface, the registry, and the built-in taggers (registered here, before any entry point's)."""

from collections.abc import Callable, Mapping

from tagger_eval.config import TaggerOptions, TaggerSpec
from tagger_eval.data.demo_dataset import vocabulary as demo_vocabulary
from tagger_eval.taggers import camie, deepdanbooru, joytag, ml_danbooru, pixai, servers, wd14
from tagger_eval.taggers.base import Sample, Tagger, normalise_prediction, select_tags
from tagger_eval.taggers.control import ControlTagger
from tagger_eval.taggers.demo import HistogramTagger, LowResolutionTagger, PixelTagger
from tagger_eval.taggers.registry import (
    ENTRY_POINT_GROUP,
    InvalidTaggerSpec,
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


def _built_in(cls: type[Tagger], description: str, vocabulary: Callable[[], Mapping[str, int] | None]) -> TaggerEntry:
    """A tagger without argument or model files, whose vocabulary is known without building it."""
    return TaggerEntry(cls.name, description, lambda _argument, _options: cls(),
                       vocabulary=lambda _argument: vocabulary())


for _entry in (
    _built_in(ControlTagger, "returns each post's truth tags; must score exactly 1.0 (checks the scoring)",
              lambda: None),
    _built_in(PixelTagger, "demo: measures shapes and colours at full resolution", demo_vocabulary),
    _built_in(LowResolutionTagger, "demo: the same analysis on a 24x24 thumbnail", demo_vocabulary),
    _built_in(HistogramTagger, "demo: colours only, guesses every shape is a circle", demo_vocabulary),
    *wd14.ENTRIES,
    *camie.ENTRIES,
    *pixai.ENTRIES,
    *joytag.ENTRIES,
    *ml_danbooru.ENTRIES,
    *deepdanbooru.ENTRIES,
    *servers.ENTRIES,
):
    register(_entry)

__all__ = [
    "ENTRY_POINT_GROUP",
    "InvalidTaggerSpec",
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
