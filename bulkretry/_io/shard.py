"""``--shard K/N``: which input records one of N processes takes, so that N of them split a batch.

Every process reads the same input and keeps the records whose key hashes to its own shard:
the run ID for a valid record (so every line of one run, results lines fed back included, lands
in the same shard, and a run is deduplicated and judged by its evidence there), the line number
and text for an invalid one. The hash is BLAKE2b of the key, not Python's ``hash()``,
whose seed differs between processes. The N shards' records are then disjoint and
together every record, whatever the order of the processes or the speed of each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .source import InputRecord

__all__ = ["MAX_SHARDS", "Shard", "parse_shard"]

#: More shards than this is a typo (or a job for another tool), not a batch.
MAX_SHARDS = 1024


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count <= MAX_SHARDS:
            raise ValueError(f"shard {self.index}/{self.count} is not K/N with 1 <= K <= N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, record: InputRecord) -> bool:
        """True when ``record`` belongs to this shard."""
        if self.count == 1:
            return True
        run_id = record.run_id
        key = run_id if run_id is not None else f"{record.line}\0{record.text}"
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1


def parse_shard(text: str) -> Shard:
    """Read ``K/N`` (shard K of N, 1-based); ValueError, saying what is expected, otherwise."""
    index, slash, count = text.strip().partition("/")
    try:
        if not slash:
            raise ValueError
        shard = Shard(int(index), int(count))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a shard: expected K/N, shard K of N processes, "
            f"1 <= K <= N <= {MAX_SHARDS} (e.g. 2/4)"
        ) from None
    return shard
