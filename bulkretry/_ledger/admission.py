"""Tell what the ledger knew of each run the input names, a chunk at a time, exactly and fast.

A run this invocation admitted is in its stage (:mod:`.staging`) or says so in its ``seen``
column; a run of an earlier invocation is
marked admitted in memory, one bit per ``seq`` (marking it in the file cost a write per run,
half of a resume's time, and marks of an invocation that died never matter). Together with the
``run_id`` key that deduplicates exactly without holding IDs in memory.

A resume usually reads the input the ledger was filled from, in the same order: the runs
following the last one found are read ahead in ``seq`` order (a sequential scan, a third of the
cost of looking each ID up in the index), while that keeps hitting.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from . import schema
from .records import DUPLICATE, NEW, Admission, PriorState, Record, admission_of

__all__ = ["CHUNK", "Admitter", "Marks"]

CHUNK = 512  # run IDs looked up in one query
#: States of a run whose re-trigger is known: a line naming it is told so.
_SETTLED = frozenset({"retriggered", "already_retriggered"})
_MAX_MARKS = 1 << 28  # runs marked in a bitmap (32 MiB at most); any other seq goes in a set


class Marks:
    """A set of ``seq`` numbers: a bit each up to ``size``, any other (an edited file) in a set."""

    __slots__ = ("_bits", "_other")

    def __init__(self, size: int) -> None:
        self._bits = bytearray((min(size, _MAX_MARKS) >> 3) + 1)
        self._other: set[int] = set()

    def __repr__(self) -> str:
        return f"Marks({len(self)} marked, {len(self._bits) * 8} bits)"

    def __len__(self) -> int:
        return sum(byte.bit_count() for byte in self._bits) + len(self._other)

    def __contains__(self, seq: int) -> bool:
        byte = seq >> 3
        bits = self._bits
        if 0 <= byte < len(bits):
            return bool(bits[byte] & (1 << (seq & 7)))
        return seq in self._other

    def add(self, seq: int) -> bool:
        """Add ``seq``; return False when it was already there."""
        byte = seq >> 3
        bits = self._bits
        if 0 <= byte < len(bits):
            mask = 1 << (seq & 7)
            if bits[byte] & mask:
                return False
            bits[byte] |= mask
            return True
        if seq in self._other:
            return False
        self._other.add(seq)
        return True


class Admitter:
    """Answer, for each run of the input, what the ledger knew of it before this invocation.

    It only reads: the caller stages the new runs it returns. ``staged`` is the stage's map of
    the new runs not written yet, which the ledger cannot answer for.
    """

    __slots__ = ("_conn", "_cursor", "_read_ahead", "_staged", "invocation", "seen")

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        invocation: int,
        known: int,
        staged: dict[str, tuple[str, int, int]],
    ) -> None:
        self.invocation = invocation
        self._staged = staged
        #: Runs of earlier invocations (``seq`` up to ``known``) admitted in this one.
        self.seen = Marks(known)
        self._conn = conn
        self._cursor = 0  # the largest seq found so far
        self._read_ahead = known > 0

    def __repr__(self) -> str:
        return (
            f"Admitter(invocation={self.invocation}, cursor={self._cursor}, "
            f"read_ahead={self._read_ahead}, seen={self.seen!r})"
        )

    def sort(self, chunk: list[Record]) -> tuple[list[Admission], list[Record]]:
        """Return the admissions of ``chunk`` and its new runs.

        Raise :class:`sqlite3.Error` if the ledger cannot be read.
        """
        # One method, not two: admit_many calls it once per chunk, on the hot path.
        ids = [record[0] for record in chunk]
        conn = self._conn
        found: dict[str, Any] = {}
        missing: list[str | None] = list(ids)
        if self._read_ahead:
            rows = conn.execute(schema.FOLLOWING, (self._cursor, len(ids))).fetchall()
            found = {row[0]: row for row in rows}
            missing = [run_id for run_id in ids if run_id not in found]
            if len(missing) * 2 > len(ids):
                self._read_ahead = False  # another input, or another order: look IDs up
        if missing:
            size = 1 << (len(missing) - 1).bit_length()
            missing += [None] * (size - len(missing))
            looked_up = conn.execute(schema.lookup_sql(size), missing).fetchall()
            if not self._read_ahead and len(looked_up) * 2 > len(ids):
                seqs = [row[2] for row in looked_up]
                # Mostly consecutive runs: the input follows the ledger's order again.
                self._read_ahead = max(seqs) - min(seqs) < 2 * len(ids)
            found.update((row[0], row) for row in looked_up)
        cursor = self._cursor
        for run_id in ids:
            row = found.get(run_id)
            if row is not None and row[2] > cursor:
                cursor = row[2]
        self._cursor = cursor
        # Now answer each record from the rows found, and mark what this invocation admits.
        invocation = self.invocation
        seen = self.seen
        staged = self._staged
        admissions: list[Admission] = []
        inserts: list[Record] = []
        for record in chunk:
            run_id = record[0]
            row = found.get(run_id)
            if row is None:
                if run_id in staged:
                    admissions.append(DUPLICATE)
                    continue
                inserts.append(record)
                admissions.append(NEW)
                found[run_id] = (run_id, invocation)  # a second sight in this chunk
            elif row[1] == invocation:
                admissions.append(DUPLICATE)
            elif not seen.add(row[2]):
                admissions.append(Admission(PriorState.DUPLICATE, seq=row[2]))
            elif row[2] < 0 and row[3] not in _SETTLED:
                # A further round's run (run --follow): its chain sends it, never this line.
                admissions.append(Admission(PriorState.DUPLICATE, seq=row[2]))
            else:
                admissions.append(admission_of(row))
        return admissions, inserts
