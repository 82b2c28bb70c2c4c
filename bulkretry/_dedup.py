"""Remember which run IDs a batch has already seen, exactly and in little memory."""

from __future__ import annotations

__all__ = ["SeenSet"]

_UUID_LEN = 36


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
        if len(run_id) == _UUID_LEN and run_id[8] == "-":
            try:
                key = int(run_id.replace("-", ""), 16)
            except ValueError:
                pass
            else:
                if key in self._uuids:
                    return False
                self._uuids.add(key)
                return True
        if run_id in self._other:
            return False
        self._other.add(run_id)
        return True
