"""Which replica runs which stream: rendezvous hashing of stream names. Pure.

Every replica reads the same config and keeps the streams whose highest
score, over all replica indexes, is its own. No coordinator: each replica
decides alone and they agree. Going from N to N+1 replicas moves only the
streams the new replica wins, about 1/(N+1) of them; the others stay put.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass


class ShardError(ValueError):
    """A shard that cannot be understood, phrased for the user."""


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # from 0
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        return owner(name, self.count) == self.index

    def select(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.owns(n)]


def _score(index: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{index}\0{name}".encode()).digest()[:8], "big")


def owner(name: str, count: int) -> int:
    """The replica index that runs stream ``name`` among ``count`` replicas."""
    return max(range(count), key=lambda i: _score(i, name))


MAX_SHARDS = 1024  # each stream's owner is found by hashing its name once per shard


def parse_shard(text: str, hostname: str = "") -> Shard:
    """``I/N`` (I from 0), or ``ordinal/N``: I is the host name's trailing number, as a
    StatefulSet names its pods (``vlm-monitor-2`` is 2). ASCII digits only: ``str.isdigit``
    takes "²" and "٣" too."""
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", count_text) or not 1 <= int(count_text) <= MAX_SHARDS:
        raise ShardError(f"shard {text!r}: expected I/N with N from 1 to {MAX_SHARDS}, e.g. 0/3, "
                         "or ordinal/N")
    count = int(count_text)
    if index_text == "ordinal":
        m = re.search(r"([0-9]+)$", hostname)
        if m is None:
            raise ShardError(f"shard {text!r}: the host name {hostname!r} does not end in a number")
        index_text = m.group(1)
    if not re.fullmatch(r"[0-9]{1,5}", index_text) or not int(index_text) < count:
        raise ShardError(f"shard {text!r}: the index must be a number from 0 to {count - 1}")
    return Shard(int(index_text), count)
