"""Shards of an evaluation: `--tagger-shard=I/N` evaluates every Nth post in id order, starting with the Ith.

A leaf module (standard library only): the option's parser (an argparse `type=` callable, as `config`'s are), the
posts a shard selects, and how many posts each shard of a dataset holds (what `reports.merge` checks the shards'
results against).

Every tagger of a shard evaluates the same posts, so a shard's results are a complete evaluation of its posts, and
the N shards of a dataset are disjoint, cover it, and differ in size by at most one post.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass

_PATTERN = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")
USAGE = "I/N: shard I of N, I from 1 to N"


@dataclass(frozen=True, order=True)
class Shard:
    """Shard `index` (1 to `count`) of `count`: the posts whose rank in id order is `index` - 1 modulo `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist: shards are numbered 1 to N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N`, as `--tagger-shard` and the results' `settings.shard` write it; `ValueError` says what is wrong."""
        match = _PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(f"expected {USAGE} (such as 2/3), got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1:
            raise ValueError(f"the number of shards must be at least 1, got {text!r}")
        if index == 0:
            raise ValueError(f"shards are numbered from 1 to N, got {text!r}: the first shard is 1/{count} (a 0-based "
                             f"index, such as Kubernetes' JOB_COMPLETION_INDEX, is passed as $((INDEX + 1))/{count})")
        if index > count:
            raise ValueError(f"there is no shard {index} of {count}: I must be from 1 to {count}, got {text!r}")
        return cls(index, count)

    def select(self, post_ids: Iterable[int]) -> list[int]:
        """This shard's posts among `post_ids` (the whole dataset's), in the order given."""
        ids = list(post_ids)
        chosen = set(sorted(ids)[self.index - 1 :: self.count])
        return [post_id for post_id in ids if post_id in chosen]

    def size(self, posts: int) -> int:
        """How many of a dataset's `posts` posts this shard holds: `posts // count`, one more for the first
        `posts % count` shards."""
        return len(range(self.index - 1, posts, self.count))

    def describe(self, posts: int) -> str:
        """`shard 2/3: 32 of the dataset's 96 posts (every 3rd post in id order, from the 2nd)`."""
        every = "every post" if self.count == 1 else f"every {_ordinal(self.count)} post in id order, from the " \
                                                     f"{_ordinal(self.index)}"
        return f"shard {self}: {self.size(posts)} of the dataset's {posts} posts ({every})"


def shard_option(text: str) -> Shard:
    """`--tagger-shard`'s argparse `type=`: argparse prefixes the message with `argument --tagger-shard: `."""
    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


shard_option.__name__ = "shard"  # argparse names the type in its own messages


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
