"""The options' value parsers: argparse `type=` callables, whose errors argparse prefixes with "argument --OPTION: ".

As pytest-benchmark's `utils.parse_*` do, each checks one value where it is parsed, so a bad value is a usage error
before any test runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

E = TypeVar("E", bound=StrEnum)

TaggerValue = tuple[str | None, float]  # `NAME=FLOAT` or `FLOAT` (name None)


def _split_tagger_value(text: str) -> TaggerValue:
    name, _, number = text.rpartition("=")
    try:
        return name or None, float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FLOAT or NAME=FLOAT, got {text!r}") from None


def tagger_float(text: str) -> TaggerValue:
    """`FLOAT` (every tagger) or `NAME=FLOAT` (one tagger)."""
    name, value = _split_tagger_value(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return name, value


def tagger_profile(text: str) -> tuple[str | None, str]:
    """`PROFILE` (every tagger that publishes threshold profiles) or `NAME=PROFILE` (one tagger)."""
    name, _, profile = text.rpartition("=")
    if not profile.strip():
        raise argparse.ArgumentTypeError(f"expected PROFILE or NAME=PROFILE, got {text!r}")
    return name or None, profile.strip()


def tagger_threshold(text: str) -> TaggerValue:
    """`tagger_float` in [0, 1): a tag is predicted when its probability is strictly greater."""
    name, value = _split_tagger_value(text)
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a threshold must be in [0, 1), got {text!r}")
    return name, value


def _number(convert: Callable[[str], float], minimum: float, maximum: float = math.inf) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not minimum <= value <= maximum:  # NaN fails too
            bound = f"at least {minimum}" if maximum == math.inf else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if not math.isfinite(value):  # `inf` would make a timeout an unbounded wait
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in its own messages
    return parse


positive_int = _number(int, 1)
timeout_seconds = _number(float, 0.001)  # below a millisecond every request would time out
non_negative_float = _number(float, 0.0)
fraction = _number(float, 0.0, 1.0)


def choice(enum: type[E], what: str | None = None) -> Callable[[str], E]:
    """One of `enum`'s values; the error calls the value `what` (default: the enum's name)."""

    def parse(text: str) -> E:
        try:
            return enum(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown {what or enum.__name__} {text!r}; expected one of {', '.join(enum)}") from None

    parse.__name__ = enum.__name__
    return parse
