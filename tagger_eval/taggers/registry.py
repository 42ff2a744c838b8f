"""Names -> tagger factories, the parsing of `--tagger=SPEC[,SPEC...]`, and the `tagger_eval.taggers` entry points.

The registry is open: besides the built-in entries, every installed package may add taggers through the entry point
group `tagger_eval.taggers` (as pytest plugins use `pytest11`). They are loaded when the registry is first read, after
the built-ins, and a broken one is an error that names it: a tagger that silently disappears would make a leaderboard
quietly shorter.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from tagger_eval.config import TaggerOptions, TaggerSpec
from tagger_eval.taggers.base import Tagger

ALL = "all"
ENTRY_POINT_GROUP = "tagger_eval.taggers"


class UnknownTaggerError(ValueError):
    pass


class TaggerUnavailableError(ValueError):
    """A known tagger that cannot run here (a missing package, model files not downloaded); says how to fix it."""


class InvalidTaggerSpec(ValueError):
    """A `--tagger` argument that cannot be right (checked before any test runs); says what to give instead."""


class PluginError(ValueError):
    """An installed `tagger_eval.taggers` entry point that cannot be used; names it and its distribution."""


@dataclass(frozen=True)
class TaggerEntry:
    name: str
    description: str
    factory: Callable[[str | None, TaggerOptions], Tagger]
    # Families such as `wd14-onnx:PATH` need an argument; `all` selects only entries that run without one.
    needs_argument: bool = False
    # Published models take an optional argument instead: the hub revision to pin (`wd-vit-v3:REVISION`).
    accepts_argument: bool = False
    argument_name: str = "ARG"  # how `tagger-eval list` shows the argument: DIR, URL#MODEL, REVISION ...
    # Returns why the tagger cannot run here (a missing package, an uncached model), or None when it can.
    unavailable_reason: Callable[[], str | None] = field(default=lambda: None)
    # How to make it available: `tagger-eval fetch NAME[:ARG]` calls it, with the argument when one is given.
    fetch: Callable[..., object] | None = None
    # Argument -> tag -> category read from the tag file alone (no model weights); None: build the tagger and ask it.
    vocabulary: Callable[[str | None], Mapping[str, int] | None] | None = None
    # Checks the argument when `--tagger` is parsed, before any test runs (a URL that cannot be one, a directory
    # without a model): raises `InvalidTaggerSpec` saying what is wrong and how to fix it.
    check_argument: Callable[[str | None], None] | None = None

    @property
    def usage(self) -> str:
        if self.needs_argument:
            return f"{self.name}:{self.argument_name}"
        return f"{self.name}[:{self.argument_name}]" if self.accepts_argument else self.name


_REGISTRY: dict[str, TaggerEntry] = {}
_plugins_loaded = False


def register(entry: TaggerEntry) -> None:
    if entry.name in _REGISTRY or entry.name == ALL:
        raise ValueError(f"tagger name {entry.name!r} is already taken")
    _REGISTRY[entry.name] = entry


def unregister(name: str) -> TaggerEntry:
    """Remove a registered entry and return it (tests, and plugins that replace a tagger of their own)."""
    try:
        return _REGISTRY.pop(name)
    except KeyError:
        raise UnknownTaggerError(f"cannot unregister {name!r}: no tagger of that name is registered") from None


@contextmanager
def registered(*added: TaggerEntry) -> Iterator[None]:
    """The entries registered for the duration of a `with` block, then removed: tests add taggers without leaving
    them in the process's registry for the tests that follow."""
    done: list[TaggerEntry] = []
    try:
        for entry in added:
            register(entry)
            done.append(entry)
        yield
    finally:
        for entry in reversed(done):
            if _REGISTRY.get(entry.name) is entry:  # the block may have replaced or removed it itself
                del _REGISTRY[entry.name]


def _registry() -> dict[str, TaggerEntry]:
    """The registry, with the installed packages' entry points loaded on first read (after the built-ins)."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True  # set first: a plugin module that reads the registry while loading sees the built-ins
        try:
            for entry in _plugin_entries(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
                _REGISTRY[entry.name] = entry
        except PluginError:
            _plugins_loaded = False  # every later read reports the broken plugin again, none runs without it
            raise
    return _REGISTRY


def _plugin_entries(points: Iterable[importlib.metadata.EntryPoint]) -> list[TaggerEntry]:
    """Every entry point's entries, checked against the registry and each other before any is registered."""
    found: list[TaggerEntry] = []
    owners: dict[str, str] = {}
    for point in points:
        where = _describe(point)
        for entry in _load(point, where):
            if entry.name in _REGISTRY or entry.name == ALL:
                raise PluginError(f"{where}: tagger name {entry.name!r} is already taken by a registered tagger")
            if entry.name in owners:
                raise PluginError(f"{where}: tagger name {entry.name!r} is already taken by {owners[entry.name]}")
            owners[entry.name] = where
            found.append(entry)
    return found


def _describe(point: importlib.metadata.EntryPoint) -> str:
    dist = point.dist
    package = f"distribution {dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"{ENTRY_POINT_GROUP} entry point {point.name!r} ({point.value}) of {package}"


def _load(point: importlib.metadata.EntryPoint, where: str) -> list[TaggerEntry]:
    """A TaggerEntry, an iterable of them, or a zero-argument callable returning either."""
    try:
        loaded = point.load()
        if callable(loaded) and not isinstance(loaded, type):
            loaded = loaded()
        iterable = isinstance(loaded, Iterable) and not isinstance(loaded, str | bytes)
        items = list(loaded) if iterable else [loaded]
    except Exception as error:  # an import error, or anything the plugin's own code raises
        raise PluginError(f"{where} failed to load: {type(error).__name__}: {error}") from error
    wrong = [item for item in items if not isinstance(item, TaggerEntry)]
    if wrong:
        raise PluginError(f"{where} gave {type(wrong[0]).__name__} {wrong[0]!r:.80}; expected a "
                          "tagger_eval.taggers.TaggerEntry, an iterable of them, or a function returning either")
    return items


def entries() -> list[TaggerEntry]:
    return sorted(_registry().values(), key=lambda entry: entry.name)


def get_entry(name: str) -> TaggerEntry:
    try:
        return _registry()[name]
    except KeyError:
        known = ", ".join(entry.name for entry in entries())
        raise UnknownTaggerError(f"unknown tagger {name!r}; known taggers: {known} (or 'all')") from None


def parse_specs(text: str | Iterable[str]) -> tuple[list[TaggerSpec], dict[str, str]]:
    """The selected taggers, and for `all` the ones it left out with the reason.

    Duplicates are dropped; an unknown name or a family given without its argument is an error.
    """
    parts = [text] if isinstance(text, str) else list(text)
    specs: list[TaggerSpec] = []
    skipped: dict[str, str] = {}
    for part in (piece.strip() for chunk in parts for piece in chunk.split(",")):
        if not part:
            continue
        if part == ALL:
            for entry in entries():
                if entry.needs_argument:
                    continue
                reason = entry.unavailable_reason()
                if reason is None:
                    specs.append(TaggerSpec(entry.name))
                else:
                    skipped[entry.name] = reason
            continue
        name, _, argument = part.partition(":")
        entry = get_entry(name)
        if entry.needs_argument and not argument:
            raise UnknownTaggerError(f"tagger {name!r} needs an argument: --tagger={name}:...")
        if argument and not (entry.needs_argument or entry.accepts_argument):
            raise UnknownTaggerError(f"tagger {name!r} takes no argument (got {part!r})")
        reason = entry.unavailable_reason()
        if reason is not None:
            raise TaggerUnavailableError(f"tagger {name!r} cannot run here: {reason}")
        if entry.check_argument is not None:
            entry.check_argument(argument or None)
        specs.append(TaggerSpec(name, argument or None))
    return list(dict.fromkeys(specs)), skipped


def create(spec: TaggerSpec, options: TaggerOptions | None = None) -> Tagger:
    return get_entry(spec.name).factory(spec.argument, options or TaggerOptions())


def read_vocabulary(spec: TaggerSpec, options: TaggerOptions | None = None) -> Mapping[str, int] | None:
    """Tag -> category of everything the tagger can output (None: an open vocabulary).

    From the entry's reader when it has one, which reads the tag file without loading weights (`--tag-scope=shared`
    needs every selected tagger's vocabulary before any runs); else the tagger is built, asked, and closed.
    """
    entry = get_entry(spec.name)
    if entry.vocabulary is not None:
        return entry.vocabulary(spec.argument)
    tagger = entry.factory(spec.argument, options or TaggerOptions())
    try:
        return tagger.vocabulary()
    finally:
        tagger.close()
