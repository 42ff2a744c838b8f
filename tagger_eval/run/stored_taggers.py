"""A tagger as the prediction store knows it: what decides its outputs besides its identity (part of the store's
key), and what scoring needs of it (so that `tagger-eval rescore` scores without the model).

`Tagger.identity()` names the model (its files' sha256, the hub revision, the server) and the package version. A
release may change any family's preprocessing, so the version alone would do for an installed package; a checkout
changes its code without changing its version. So the store's key also holds a sha256 of the source files of the
tagger's class, of its bases, of the `tagger_eval` modules they use (the families' preprocessing: `wd14.py`,
`deepdanbooru_image.py`, ...) and of the image decoder (`data/dataset.py`); and the versions of Pillow, numpy and
onnxruntime installed, and the execution provider asked for: each can move an output by a few ulps, which a
threshold can turn into another tag. A change to any of them is a new key: the outputs are inferred again.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from types import MappingProxyType, ModuleType
from typing import Any

from tagger_eval.config import TaggerOptions
from tagger_eval.taggers.base import Sample, Tagger, TaggerError

_LIBRARIES = ("pillow", "numpy", "onnxruntime", "onnxruntime-gpu")
_DECODER = "tagger_eval.data.dataset"  # reads and decodes every image a tagger is given
# Modules a tagger uses that find, fetch or configure its model, never compute an output: editing them (an option
# added to config.py) does not make every stored output stale.
_NOT_COMPUTING = frozenset({"tagger_eval.config", "tagger_eval.checksums", "tagger_eval.http_client",
                            "tagger_eval.taggers.registry", "tagger_eval.taggers.hub", "tagger_eval.taggers.release"})


def _modules(tagger: Tagger) -> dict[str, ModuleType]:
    """The modules of the tagger's class and its bases, and the `tagger_eval` modules they use, transitively (the
    names each imports): `deepdanbooru` -> `deepdanbooru_image` -> `deepdanbooru_decode`."""
    pending = [sys.modules[cls.__module__] for cls in type(tagger).__mro__
               if cls.__module__ not in ("builtins", "abc") and cls.__module__ in sys.modules]
    if _DECODER in sys.modules:
        pending.append(sys.modules[_DECODER])
    modules: dict[str, ModuleType] = {}
    while pending:
        module = pending.pop()
        if module.__name__ in modules or module.__name__ in _NOT_COMPUTING:
            continue
        modules[module.__name__] = module
        for value in list(vars(module).values()):
            owner = value if isinstance(value, ModuleType) else inspect.getmodule(value)
            if owner is not None and owner.__name__.startswith("tagger_eval."):
                pending.append(owner)
    return modules


def code_digest(tagger: Tagger) -> str:
    """sha256 of the source of `_modules`, in module-name order; the paths do not count (a checkout and an
    installed copy of the same code agree)."""
    digest = hashlib.sha256()
    for name, module in sorted(_modules(tagger).items()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        try:
            with open(path, "rb") as file:
                source = file.read()
        except OSError:
            continue
        digest.update(name.encode() + b"\0" + hashlib.sha256(source).digest())
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def output_context(tagger: Tagger, options: TaggerOptions) -> dict[str, str]:
    """The code digest, the installed libraries' versions and the execution provider asked for: with the identity,
    the store's key."""
    context = {"code_sha256": code_digest(tagger), "execution_provider": str(options.execution_provider)}
    context.update({name: version for name in _LIBRARIES if (version := _version(name)) is not None})
    return context


def scoring_info(tagger: Tagger) -> dict[str, Any]:
    """What `TaggerRun` reads of a tagger besides its outputs, as JSON builtins (`StoredTagger` gives it back)."""
    vocabulary, counts = tagger.vocabulary(), tagger.tag_counts()
    return {
        "name": tagger.name,
        "vocabulary": None if vocabulary is None else dict(vocabulary),
        "tag_counts": None if counts is None else dict(counts),
        "rating_aliases": {tag: sorted(targets) for tag, targets in tagger.rating_aliases.items()},
        "character_categories": sorted(tagger.character_categories),
        "default_threshold": tagger.default_threshold,
        "default_character_threshold": tagger.default_character_threshold,
        "default_score_floor": tagger.default_score_floor,
        "threshold_profiles": dict(tagger.threshold_profiles),
        "default_profile": tagger.default_profile,
        "threshold_applied_by_server": tagger.threshold_applied_by_server,
    }


class StoredTagger(Tagger):
    """A tagger as the store describes it: everything scoring reads, without its model (it predicts nothing)."""

    def __init__(self, identity: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self.name = info["name"]
        self._identity = dict(identity)
        self._vocabulary = info["vocabulary"]
        self._counts = info["tag_counts"]
        self.rating_aliases = MappingProxyType({tag: frozenset(targets)
                                                for tag, targets in info["rating_aliases"].items()})
        self.character_categories = frozenset(info["character_categories"])
        self.default_threshold = info["default_threshold"]
        self.default_character_threshold = info["default_character_threshold"]
        self.default_score_floor = info["default_score_floor"]
        self.threshold_profiles = MappingProxyType(dict(info["threshold_profiles"]))
        self.default_profile = info["default_profile"]
        self.threshold_applied_by_server = info["threshold_applied_by_server"]

    def vocabulary(self) -> Mapping[str, int] | None:
        return self._vocabulary

    def tag_counts(self) -> Mapping[str, int] | None:
        return self._counts

    def identity(self) -> dict[str, str]:
        return dict(self._identity)

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, float]]:
        raise TaggerError(f"{self.name} is read from the prediction store: its model is not loaded")
