"""Names -> tagger factories, the parsing of `--tagger=SPEC[,SPEC...]`, and the `tagger_eval.taggers` entry points.

The registry is open: besides the built-in entries, every installed package may add taggers through the entry point
group `tagger_eval.taggers` (as pytest plugins use `pytest11`). They are loaded when the registry is first read, after
the built-ins, and a broken one is an error that names it: a tagger that silently disappears would make a leaderboard
quietly shorter.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
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
    # without a model): raises `InvalidTaggerSpec` saying what is wrong and how to fix it (`parse_specs` prefixes
    # the message with the `--tagger=VALUE` it came from, so it need not name the option).
    check_argument: Callable[[str | None], None] | None = None

    @property
    def usage(self) -> str:
        if self.needs_argument:
            return f"{self.name}:{self.argument_name}"
        return f"{self.name}[:{self.argument_name}]" if self.accepts_argument else self.name


_REGISTRY: dict[str, TaggerEntry] = {}
_plugins_loaded = False


def _taken(name: str, names: Iterable[str]) -> bool:
    """Whether `name` clashes with one of `names` or `all` in any letter case: `--tagger` matches names that way."""
    folded = name.casefold()
    return folded == ALL or any(folded == other.casefold() for other in names)


def register(entry: TaggerEntry) -> None:
    if _taken(entry.name, _REGISTRY):
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
            if _taken(entry.name, _REGISTRY):
                raise PluginError(f"{where}: tagger name {entry.name!r} is already taken by a registered tagger")
            if entry.name.casefold() in owners:
                raise PluginError(f"{where}: tagger name {entry.name!r} is already taken by "
                                  f"{owners[entry.name.casefold()]}")
            owners[entry.name.casefold()] = where
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
    """The entry of `name` in any letter case (`Demo-Pixel` is `demo-pixel`; no two names differ only in case)."""
    by_folded = {entry.name.casefold(): entry for entry in _registry().values()}
    try:
        return by_folded[name.casefold()]
    except KeyError:
        close = difflib.get_close_matches(name.casefold(), by_folded, n=3)
        hint = f" (did you mean {' or '.join(repr(by_folded[match].name) for match in close)}?)" if close else ""
        known = ", ".join(entry.name for entry in entries())
        raise UnknownTaggerError(f"unknown tagger {name!r}{hint}; known taggers: {known} (or 'all')") from None


_SPEC_ERRORS = (UnknownTaggerError, TaggerUnavailableError, InvalidTaggerSpec)


def _without_credentials(value: str) -> str:
    """The option value as an error may quote it: `user:password@` in a URL replaced by `***@`."""
    return re.sub(r"(://)[^/@\s]*@", r"\1***@", value)


def parse_specs(text: str | Iterable[str]) -> tuple[list[TaggerSpec], dict[str, str]]:
    """The selected taggers, and for `all` the ones it left out with the reason.

    `text` is one `--tagger` value or several, each `SPEC[,SPEC...]`. Duplicates are dropped; an unknown name, an
    empty item, or an argument missing or out of place is an error naming the `--tagger=VALUE` it came from.
    """
    specs: list[TaggerSpec] = []
    skipped: dict[str, str] = {}
    for value in [text] if isinstance(text, str) else text:
        try:
            for part in _items(value):
                if part.casefold() == ALL:
                    _select_all(specs, skipped)
                else:
                    specs.append(_spec(part))
        except _SPEC_ERRORS as error:
            kind = next(kind for kind in _SPEC_ERRORS if isinstance(error, kind))  # a check may raise a subclass
            raise kind(f"--tagger={_without_credentials(value)}: {error}") from None
    return list(dict.fromkeys(specs)), skipped


def _items(value: str) -> list[str]:
    """The comma-separated items of one `--tagger` value; an empty one is a slip, never silently skipped."""
    items = [item.strip() for item in value.split(",")]
    if "" in items:
        what = "no tagger given" if not value.strip() else "an empty item (a doubled or trailing comma)"
        raise InvalidTaggerSpec(f"{what}; give registered names separated by single commas, such as "
                                "--tagger=control,demo-pixel (`tagger-eval list` shows them)")
    return items


def _select_all(specs: list[TaggerSpec], skipped: dict[str, str]) -> None:
    """`all`: every entry that runs without an argument; those that cannot run here go to `skipped` with why."""
    for entry in entries():
        if entry.needs_argument:
            continue
        reason = entry.unavailable_reason()
        if reason is None:
            specs.append(TaggerSpec(entry.name))
        else:
            skipped[entry.name] = reason


def _spec(part: str) -> TaggerSpec:
    """One `NAME[:ARG]` item, checked against its entry (and by the entry's own check) before any test runs."""
    name, colon, argument = part.partition(":")
    entry = get_entry(name.strip())
    usage = f"--tagger={entry.usage}"
    if colon and not (entry.needs_argument or entry.accepts_argument):
        raise InvalidTaggerSpec(f"tagger {entry.name!r} takes no argument (got {part!r}); give {usage}")
    if entry.needs_argument and not argument:
        raise InvalidTaggerSpec(f"tagger {entry.name!r} needs its {entry.argument_name}; give {usage}")
    if colon and not argument:
        raise InvalidTaggerSpec(f"tagger {entry.name!r} got an empty {entry.argument_name} after ':'; give {usage}")
    reason = entry.unavailable_reason()
    if reason is not None:
        raise TaggerUnavailableError(f"tagger {entry.name!r} cannot run here: {reason}")
    if entry.check_argument is not None:
        entry.check_argument(argument or None)
    return TaggerSpec(entry.name, argument or None)


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
