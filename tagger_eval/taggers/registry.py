"""Names -> tagger factories, and the parsing of `--tagger=SPEC[,SPEC...]`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tagger_eval.config import TaggerOptions, TaggerSpec
from tagger_eval.taggers.base import Tagger

ALL = "all"


class UnknownTaggerError(ValueError):
    pass


class TaggerUnavailableError(ValueError):
    """A known tagger that cannot run here (a missing package, model files not downloaded); says how to fix it."""


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

    @property
    def usage(self) -> str:
        if self.needs_argument:
            return f"{self.name}:{self.argument_name}"
        return f"{self.name}[:{self.argument_name}]" if self.accepts_argument else self.name


_REGISTRY: dict[str, TaggerEntry] = {}


def register(entry: TaggerEntry) -> None:
    if entry.name in _REGISTRY or entry.name == ALL:
        raise ValueError(f"tagger name {entry.name!r} is already taken")
    _REGISTRY[entry.name] = entry


def entries() -> list[TaggerEntry]:
    return sorted(_REGISTRY.values(), key=lambda entry: entry.name)


def get_entry(name: str) -> TaggerEntry:
    try:
        return _REGISTRY[name]
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
        specs.append(TaggerSpec(name, argument or None))
    return list(dict.fromkeys(specs)), skipped


def create(spec: TaggerSpec, options: TaggerOptions | None = None) -> Tagger:
    return get_entry(spec.name).factory(spec.argument, options or TaggerOptions())
