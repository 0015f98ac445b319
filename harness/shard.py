"""Sharding a campaign over CI runners (``ha-chaos run --shard i/N``, ``pytest -m chaos --chaos-shard i/N``).

The split is deterministic and needs no coordination: fixed plans (kept failures, curated ones) go round-robin by
sorted name; generated plans are numbered 0, 1, 2, ... within a campaign, each with a seed derived from the
campaign seed and its number (``plan_seed``), and shard i takes the numbers congruent to i-1 modulo N. So shards
never draw the same plan, and together they run exactly what the unsharded campaign would (for the same count).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str | None, option: str = "--shard") -> Shard:
        if text is None or text == "":
            return UNSHARDED
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise InputError(f"{option} {text!r} is not i/N with 1 <= i <= N",
                             f"pass e.g. {option} 1/4 (the first of four shards)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def owns(self, number: int) -> bool:
        """Whether generated plan number ``number`` (0-based within the campaign) belongs to this shard."""
        return number % self.count == self.index - 1

    def select(self, items: Sequence[T], name: Callable[[T], str]) -> list[T]:
        """This shard's share of ``items``: round-robin over them sorted by ``name``, returned in their given order."""
        ranked = sorted(range(len(items)), key=lambda i: (name(items[i]), i))
        mine = {i for rank, i in enumerate(ranked) if rank % self.count == self.index - 1}
        return [item for i, item in enumerate(items) if i in mine]

    def numbers(self, limit: int | None = None) -> Iterator[int]:
        """This shard's generated-plan numbers below ``limit`` (None: without end)."""
        stream = itertools.count(self.index - 1, self.count)
        return stream if limit is None else itertools.takewhile(lambda n: n < limit, stream)


UNSHARDED = Shard(1, 1)


def plan_seed(campaign_seed: int, number: int) -> int:
    """The seed of generated plan ``number`` of the campaign seeded ``campaign_seed`` (32 bits, from SHA-256, so
    neighbouring numbers and seeds give unrelated streams and no shard's seed is another's)."""
    digest = hashlib.sha256(f"ha-chaos/{campaign_seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
