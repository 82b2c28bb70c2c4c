"""Remember which run IDs a batch has already seen, exactly and in little memory."""

from __future__ import annotations

import re

__all__ = ["SeenSet"]

# Only the canonical form is folded to an integer: int(…, 16) also accepts "0x", "_", "+",
# upper case and dashes anywhere, which would make different strings collide.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class SeenSet:
    """An exact set of run IDs; UUIDs are kept as 128-bit integers rather than strings."""

    __slots__ = ("_other", "_uuids")

    def __init__(self) -> None:
        self._uuids: set[int] = set()
        self._other: set[str] = set()

    def __repr__(self) -> str:
        return f"SeenSet(size={len(self)})"

    def __len__(self) -> int:
        return len(self._uuids) + len(self._other)

    def add(self, run_id: str) -> bool:
        """Add ``run_id``; return False when it was already there."""
        if _CANONICAL_UUID.fullmatch(run_id):
            key = int(run_id.replace("-", ""), 16)
            if key in self._uuids:
                return False
            self._uuids.add(key)
            return True
        if run_id in self._other:
            return False
        self._other.add(run_id)
        return True
