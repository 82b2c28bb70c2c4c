"""Remember which run IDs a batch has already seen, exactly and in little memory.

A million UUIDs held as ``str`` cost about 100 bytes each, as ``int`` about 80: more than the
rest of the engine put together. UUIDs are instead spread over 65,536 byte strings, each
holding the last 14 bytes of its UUIDs back to back: about 16 bytes per ID plus a fixed 4 MB,
no Python object per ID, and a lookup is one ``find`` in C over a short bucket. A UUID's
bucket is its first two bytes XOR a CRC-32 of the other 14, so the bucket and the 14 bytes
still give the two back. (By the first two bytes alone, IDs that share them, time-ordered ones
such as UUIDv7 or sequential ones, piled into one bucket: 80,000 took 11 s, quadratic.) Other
run IDs (a custom ``--run-id-pattern``) go in an ordinary set.
"""

from __future__ import annotations

import re
import zlib

__all__ = ["SeenSet"]

# Only the canonical form is packed: any other spelling could make different strings collide.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY_BYTES = 14


class SeenSet:
    """An exact set of run IDs, compact for UUIDs."""

    __slots__ = ("_buckets", "_other", "_uuids")

    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * (1 << 16)
        self._uuids = 0
        self._other: set[str] = set()

    def __repr__(self) -> str:
        return f"SeenSet(size={len(self)})"

    def __len__(self) -> int:
        return self._uuids + len(self._other)

    def __contains__(self, run_id: object) -> bool:
        if not isinstance(run_id, str):
            return False
        if not _CANONICAL_UUID.fullmatch(run_id):
            return run_id in self._other
        index, key = _split(run_id)
        bucket = self._buckets[index]
        return bucket is not None and _holds(bucket, key)

    def add(self, run_id: str) -> bool:
        """Add ``run_id``; return False when it was already there."""
        if not _CANONICAL_UUID.fullmatch(run_id):
            if run_id in self._other:
                return False
            self._other.add(run_id)
            return True
        index, key = _split(run_id)
        bucket = self._buckets[index]
        if bucket is None:
            self._buckets[index] = bytearray(key)
        elif _holds(bucket, key):
            return False
        else:
            bucket += key
        self._uuids += 1
        return True


def _split(run_id: str) -> tuple[int, bytes]:
    """Return a canonical UUID's bucket (its first two bytes, spread by the CRC-32 of the
    rest) and key (the other 14 bytes)."""
    packed = bytes.fromhex(run_id.replace("-", ""))
    key = packed[2:]
    return (packed[0] << 8 | packed[1]) ^ (zlib.crc32(key) & 0xFFFF), key


def _holds(bucket: bytearray, key: bytes) -> bool:
    # A match must start on a key boundary; one straddling two keys is no match.
    at = bucket.find(key)
    while at >= 0:
        if at % _KEY_BYTES == 0:
            return True
        at = bucket.find(key, at + 1)
    return False
