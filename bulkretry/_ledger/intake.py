"""Take in what an input adds to a ledger: admit its runs, queue them, note how far it was read.

The base class of :class:`~bulkretry._ledger.ledger.Ledger` for its input side. What the input
adds is staged (:mod:`.staging`) and written in large groups; a read or write that needs a
staged row writes the stage first, so callers see the ledger as if it were written at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from .._exceptions import StateError
from . import schema, staging
from .admission import CHUNK, Admitter
from .reads import PAGE, LedgerReads
from .records import Admission, Record
from .staging import Lost, Staging

__all__ = ["LedgerIntake"]

# Module-level alias: inside LedgerIntake, ``list`` names a method of LedgerReads.
_Admissions = list[Admission]


class LedgerIntake(LedgerReads):
    """The input side of :class:`~bulkretry._ledger.ledger.Ledger`, its base class.

    ``Ledger.__init__`` sets the stage and the admitter, besides what the reads need.
    """

    _staging: Staging
    _admitter: Admitter

    def admit(self, run_id: str, source: str, line: int) -> Admission:
        """Record that the input holds ``run_id``; return what the ledger knew of it before."""
        return self._admit_chunk([(run_id, source, line)])[0]

    def admit_many(self, records: Iterable[Record]) -> _Admissions:
        """Admit ``(run_id, source, line)`` records in order: faster than one by one.

        New runs are staged, and written by :meth:`write_admitted`. All or nothing: if this
        raises :class:`StateError`, none of ``records`` is staged.
        """
        admissions: list[Admission] = []
        chunk: list[Record] = []
        before = len(self._staging.runs)
        try:
            for record in records:
                chunk.append(record)
                if len(chunk) == CHUNK:
                    admissions += self._admit_chunk(chunk)
                    chunk = []
            if chunk:
                admissions += self._admit_chunk(chunk)
        except StateError:
            self._staging.drop_runs(len(self._staging.runs) - before)
            raise
        return admissions

    def _admit_chunk(self, chunk: list[Record]) -> _Admissions:
        group = self._group
        group.check()
        try:
            admissions, new = self._admitter.sort(chunk)
        except sqlite3.Error as exc:
            raise group.fail("read", exc) from exc
        stage = self._staging
        for run_id, source, line in new:
            stage.add_run(run_id, source, line)
        return admissions

    @property
    def staged(self) -> int:
        """Runs admitted or queued by this invocation and not written yet."""
        return len(self._staging)

    def write_admitted(self, *, when_due: bool = False) -> None:
        """Write and commit what the input added (only if it is due, with ``when_due``).

        Raise :class:`StateError` if that fails; :meth:`take_unwritten` then says what was lost.
        """
        if not when_due or self._staging.due():
            staging.write(self._staging, self._group, self.invocation)

    def take_unwritten(self) -> list[Lost]:
        """Return (and forget) the runs admitted or queued that never reached the state file."""
        return self._staging.take()

    def waiting(self, after_seq: int, after_turn: int, limit: int = CHUNK) -> list[Any]:
        """Write the runs staged, then return the runs to send (``LedgerReads.waiting``)."""
        if len(self._staging):
            self.write_admitted()
        return super().waiting(after_seq, after_turn, limit)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Write what is staged, then read: a read answers for every run admitted."""
        group = self._group
        if self._staging and not group.closed and group.failure is None:
            self.write_admitted()
        return self._query(sql, params)

    def knows(self, run_id: str) -> bool:
        """True when ``run_id`` is one of the batch's runs, staged or written."""
        return run_id in self._staging.runs or super().knows(run_id)

    def _unstage(self, run_id: str) -> None:
        """Write the stage if it holds ``run_id``: a write to its row needs the row."""
        if run_id in self._staging.runs:
            self.write_admitted()

    def enqueue(self, run_id: str, source: str, line: int, *, doubt: bool = False) -> None:
        """Queue a run an earlier invocation knew, to be sent for the input line that named it.

        New runs need no queue: they wait in ``runs`` as ``pending`` (see :meth:`waiting`).
        Staged, like them; ``doubt`` says an earlier request for it may have landed.
        """
        self._group.check()
        self._staging.add_queued(run_id, source, line)
        if doubt:
            self._staging.doubt.add(run_id)

    def enqueue_unfinished(self, source: str) -> int:
        """Queue the earlier invocations' unfinished runs that this one's input did not name.

        Unfinished is ``pending``, ``not_attempted`` or ``in_doubt`` (which waits for a person,
        and may have no record anywhere when its process died): the state file is the batch,
        and the input only adds to it. Each is queued with ``source`` (the state file) and its
        ``seq`` as its line; the engine holds runs in doubt unless told to send them. Return
        how many were queued.
        """
        self._group.check()
        queued = 0
        last = 0
        seen = self._admitter.seen
        while True:
            rows = self._read(schema.UNFINISHED, (last, self.known, PAGE))
            if not rows:
                return queued
            for seq, run_id, state in rows:
                if not seen.add(seq):
                    continue
                self.enqueue(run_id, source, seq, doubt=state == "in_doubt")
                queued += 1
            last = rows[-1][0]

    def progress(self, source: str, lines: int, *, complete: bool) -> None:
        """Record that ``source`` was read up to its line ``lines`` (to its end if ``complete``).

        Staged with the runs it admitted, so the state file never claims a line it lacks.
        """
        self._group.check()
        self._staging.add_progress(source, lines, complete)
