"""Read a ledger: what a batch reads back as it goes, and what ``bulkretry status`` reports.

Reads go through the ledger's one connection, so a batch reads its own writes, committed or
not. A run ``in_flight`` while no process holds the lock was being sent when its process died:
the reports count it as ``in_doubt``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import orjson

from .._exceptions import StateError
from . import files, schema
from .admission import CHUNK
from .commits import GroupCommit
from .records import IDENTITY_FIELDS, STATES, Record

__all__ = ["PAGE", "Info", "LedgerReads"]

PAGE = 1000  # rows per query when streaming, so that no statement stays open across a yield

Info = dict[str, str | int | float | bool | None]
# Module-level alias: inside LedgerReads, ``list`` names a method.
_Rows = list[Any]


class LedgerReads:
    """The queries of :class:`~bulkretry._ledger.ledger.Ledger`, its base class.

    ``Ledger.__init__`` sets what they read: the path, the invocation (0 when inspecting), the
    last ``seq`` before it, the connection, the lock (None when inspecting) and the group commit
    (closed or not).
    """

    path: str
    invocation: int
    known: int
    _conn: sqlite3.Connection
    _lock: files.FileLock | None
    _group: GroupCommit

    @property
    def live(self) -> bool:
        """True while a process (this one included) has the ledger open for a batch."""
        return self._lock is not None or files.lock_is_held(self.path)

    def waiting(self, after_seq: int, after_turn: int, limit: int = CHUNK) -> _Rows:
        """Return up to ``limit`` runs to send: ``(seq, turn, run_id, source, line, doubt)``.

        New pending runs after ``after_seq`` come first (``turn`` 0), then queued runs after
        ``after_turn`` (``seq`` 0). The caller advances each cursor past the rows it got.
        """
        rows = self._query(schema.NEW_PENDING, (max(after_seq, self.known), limit))
        waiting: _Rows = [(seq, 0, r, s, line, d) for seq, r, s, line, d in rows]
        if len(waiting) < limit:
            rows = self._query(schema.QUEUED, (after_turn, limit - len(waiting)))
            waiting += [(0, turn, r, s, line, d) for turn, r, s, line, d in rows]
        return waiting

    def unread_sources(self) -> list[tuple[str, int]]:
        """Return ``(source, lines read)`` of inputs the last reading invocation did not finish."""
        rows = self._read(
            "SELECT name, lines FROM sources WHERE complete = 0 AND invocation = "
            "(SELECT max(invocation) FROM sources WHERE invocation < ?) ORDER BY name",
            (self.invocation or (1 << 62),),
        )
        return [(name, lines) for name, lines in rows]

    def knows(self, run_id: str) -> bool:
        """True when ``run_id`` is one of the batch's runs."""
        return bool(self._read("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def options(self) -> dict[str, Any]:
        """Return the batch's options as the first invocation stored them ({} if none)."""
        rows = self._read("SELECT value FROM meta WHERE key = 'options'", ())
        if not rows:
            return {}
        try:
            options = orjson.loads(rows[0][0])
        except orjson.JSONDecodeError as exc:
            raise StateError(f"state file {self.path} holds unreadable options: {exc}") from exc
        return options if isinstance(options, dict) else {}

    def resume_ids(self) -> Iterator[Record]:
        """Yield ``(run_id, source, line)`` of every run in first-seen order, page by page."""
        last = 0
        while True:
            rows = self._read(
                "SELECT seq, run_id, source, line FROM runs WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, PAGE),
            )
            if not rows:
                return
            for _, run_id, source, line in rows:
                yield run_id, source, line
            last = rows[-1][0]

    def counts(self, *, rounds: bool = False) -> dict[str, int]:
        """Return the number of the input's runs in each of :data:`STATES`, or with ``rounds``
        of the runs further rounds of ``run --follow`` re-triggered (see chains.py)."""
        counts = dict.fromkeys(STATES, 0)
        where = "seq < 0" if rounds else "seq > 0"
        rows = self._read(f"SELECT state, count(*) FROM runs WHERE {where} GROUP BY state", ())
        for state, count in rows:
            counts[state] = count
        if self._at_rest():
            counts["in_doubt"] += counts["in_flight"]
            counts["in_flight"] = 0
        return counts

    def list(self, state: str) -> Iterator[str]:
        """Yield the run IDs in ``state`` (one of :data:`STATES`): those further rounds of
        ``run --follow`` re-triggered (latest first), then the input's in first-seen order."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        other = "in_flight" if state == "in_doubt" and self._at_rest() else state
        last = -(1 << 62)
        while True:
            rows = self._read(
                "SELECT seq, run_id FROM runs WHERE seq > ? AND state IN (?, ?) "
                "ORDER BY seq LIMIT ?",
                (last, state, other, PAGE),
            )
            if not rows:
                return
            for _, run_id in rows:
                yield run_id
            last = rows[-1][0]

    def info(self) -> Info:
        """Return the batch's identity, age, invocations, elapsed time and rate."""
        meta = dict(self._read("SELECT key, value FROM meta", ()))
        invocations, updated, elapsed = self._read(
            "SELECT count(*), max(updated_at), total(updated_at - started_at) FROM invocations",
            (),
        )[0]
        counts = self.counts()
        finished = sum(counts.values()) - counts["pending"] - counts["in_flight"]
        # The sending rate: runs whose request was answered, per second the batch ran (runs
        # found done before, or never sent, took no sending).
        sent = counts["retriggered"] + counts["failed"] + counts["in_doubt"]
        info: Info = {name: meta[name] for name in IDENTITY_FIELDS}
        info |= {
            "path": self.path,
            "created_at": _iso(float(meta["created_at"])),
            "updated_at": _iso(updated) if updated is not None else None,
            "invocations": invocations,
            "elapsed": round(elapsed, 3),
            "runs": sum(counts.values()),
            "finished": finished,
            "rate": round(sent / elapsed, 3) if elapsed > 0 else None,
            "live": self.live,
        }
        return info

    def totals(self) -> tuple[int, int]:
        """Return the requests sent for the batch's runs, and how many were ambiguous."""
        attempts, ambiguous = self._read("SELECT total(attempts), total(ambiguous) FROM runs", ())[
            0
        ]
        return int(attempts), int(ambiguous)

    def error_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Count the error kinds and Adobe codes of the runs not re-triggered."""
        kinds: dict[str, int] = {}
        codes: dict[str, int] = {}
        rows = self._read(
            "SELECT json_extract(error, '$.kind'), json_extract(error, '$.error_code'), count(*) "
            "FROM runs WHERE seq > 0 AND error IS NOT NULL AND json_valid(error) "
            "AND state NOT IN ('retriggered', 'already_retriggered') GROUP BY 1, 2",
            (),
        )
        for kind, code, count in rows:
            if kind is not None:
                kinds[str(kind)] = kinds.get(str(kind), 0) + count
            if code is not None:
                codes[str(code)] = codes.get(str(code), 0) + count
        return kinds, codes

    def _read(self, sql: str, params: tuple[Any, ...]) -> _Rows:
        return self._query(sql, params)

    def _query(self, sql: str, params: tuple[Any, ...]) -> _Rows:
        """Run a read, of what is written only."""
        if self._group.closed:
            raise StateError(f"state file {self.path} is closed")
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from exc

    def _at_rest(self) -> bool:
        """True when no process is sending: ``in_flight`` then means ``in_doubt``."""
        return self._lock is None and not self.live


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
