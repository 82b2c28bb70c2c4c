"""What ``bulkretry check --state`` reads of a batch's runs in doubt, and the verdicts it records.

The state file is opened as a batch opens it (the file itself locked, its identity checked
through a read-only connection first, so a refused file is never written to), but no
invocation is counted: ``check`` sends nothing. A state file that a running batch holds is
refused.

A run's window is the span of its doubt the state file keeps (see :mod:`.spans`): from when
the first request that may have landed was sent, to when the last one's answer was lost, or
(the later) a request that never had an answer plus ``in_flight_grace`` (the request timeout).

A run in doubt that no request of this batch sent (fed back in doubt from a results file, or
sent again after that), or one in doubt when a file of an earlier format was upgraded, has no
window here: its earlier request may have landed at any time.
A verdict is recorded only for a run still in doubt:
``retriggered`` (doubt cleared, its new run and etag; with ``error.candidates`` when the new
run could not be told apart) or ``not_attempted`` with ``error.kind: "not_processed"`` (doubt
cleared), the state a resume sends again.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson

from .._exceptions import StateError
from . import files, schema
from .records import BatchIdentity
from .spans import window

__all__ = [
    "CheckLedger",
    "DoubtRow",
    "Resolution",
    "claim_times",
    "claimed_runs",
    "doubt_rows",
    "record_resolutions",
]

T = TypeVar("T")
_DOUBT_ROWS = (
    "SELECT seq, run_id, state, attempts, ambiguous, error, http_status, request_id, "
    "updated_at, sent_at, doubt_from, doubt_to, unanswered FROM runs "
    "WHERE state IN ('in_doubt', 'in_flight') ORDER BY seq"
)
# A new run a look-up gave a run (live or by check: re-triggered without a clear answer) is
# evidence of a re-trigger, not a clear answer's: may be anybody's (see claimed_runs).
# A run a clear answer re-triggered: this batch sent it and a 2xx named its new run. (A look-up
# keeps the lost answer's status, and a run fed in re-triggered is already_retriggered.)
_CLEAR = "(state = 'retriggered' AND coalesce(http_status BETWEEN 200 AND 299, 0))"
_CLAIMS = (
    "SELECT new_run_id, CASE WHEN new_run_id IS NULL AND json_valid(error) "
    f"THEN json_extract(error, '$.candidates') END, state = 'retriggered' AND NOT {_CLEAR} "
    "FROM runs WHERE state IN ('retriggered', 'already_retriggered')"
)
_IS_INPUT = "SELECT 1 FROM runs WHERE run_id = ?"
# A clear answer's run: its last request (the one answered) left at sent_at, and its answer
# was recorded at updated_at, as it came (a later verdict or resume changes the state).
_TIMED = (
    f"SELECT new_run_id, sent_at, updated_at FROM runs WHERE {_CLEAR} "
    "AND sent_at IS NOT NULL AND new_run_id IS NOT NULL"
)
# A verdict clears the doubt and its span: a request sent after it starts a window of its own.
_RECORD = (
    "UPDATE runs SET state = ?, doubt = 0, doubt_from = NULL, doubt_to = NULL, unanswered = NULL, "
    "new_run_id = ?, etag = ?, error = ?, updated_at = ? "
    "WHERE run_id = ? AND state IN ('in_doubt', 'in_flight')"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DoubtRow:
    """A run of the batch in doubt, with its window in epoch seconds (None: not known)."""

    seq: int
    run_id: str
    state: str
    attempts: int
    ambiguous: int
    error: dict[str, Any] | None
    http_status: int | None
    request_id: str | None
    updated_at: float
    since: float | None
    until: float | None


class Resolution(NamedTuple):
    """A verdict to record: ``state`` is ``retriggered`` or ``not_attempted``."""

    run_id: str
    state: str
    new_run_id: str | None
    etag: str | None
    error: dict[str, Any] | None


def doubt_rows(conn: sqlite3.Connection, *, in_flight_grace: float) -> Iterator[DoubtRow]:
    """Yield the runs in doubt (``in_flight`` ones too: no batch runs) in first-seen order."""
    for row in conn.execute(_DOUBT_ROWS).fetchall():
        seq, run_id, state, attempts, ambiguous, error, status, request_id, updated = row[:9]
        span = window(state, *row[9:], grace=in_flight_grace)
        yield DoubtRow(
            seq=seq,
            run_id=run_id,
            state=state,
            attempts=attempts,
            ambiguous=ambiguous,
            error=_error(error),
            http_status=status,
            request_id=request_id,
            updated_at=updated,
            since=None if span is None else span[0],
            until=None if span is None else span[1],
        )


def claimed_runs(conn: sqlite3.Connection, ids: set[str]) -> tuple[set[str], set[str]]:
    """Return which of ``ids`` the batch's re-triggered runs name: as their new run from a clear
    answer (first), or only as one a look-up found (a wrong attribution must not become proof
    that another run's window is empty: it would be sent again), among the candidates of a new
    run that could not be told apart, or as a run of the batch's own input (second)."""
    hard: set[str] = set()
    soft: set[str] = set()
    for new_run_id, candidates, looked_up in conn.execute(_CLAIMS):  # streamed: may be large
        if new_run_id is not None:
            if new_run_id in ids:
                (soft if looked_up else hard).add(new_run_id)
        elif candidates is not None:
            try:
                names = orjson.loads(candidates)
            except orjson.JSONDecodeError:
                continue
            if isinstance(names, list):
                soft.update(n for n in names if isinstance(n, str) and n in ids)
    # A run of the batch's own input is a run being recovered, not proof of a re-trigger.
    soft.update(i for i in ids if conn.execute(_IS_INPUT, (i,)).fetchone() is not None)
    return hard, soft - hard


def claim_times(conn: sqlite3.Connection, ids: set[str]) -> dict[str, tuple[float, float]]:
    """Return, for the new runs of ``ids`` a clear answer of the batch named, when its request
    left and when the answer came (epoch s): where their ``createdAt`` falls shows the clocks'
    offset."""
    return {
        new_run_id: (sent, answered)
        for new_run_id, sent, answered in conn.execute(_TIMED)  # streamed, as claimed_runs
        if new_run_id in ids and sent <= answered
    }


def record_resolutions(conn: sqlite3.Connection, resolutions: Iterable[Resolution]) -> int:
    """Record ``resolutions`` in one transaction; return how many runs were still in doubt."""
    now = time.time()
    changed = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for r in resolutions:
            error = orjson.dumps(r.error).decode() if r.error is not None else None
            params = (r.state, r.new_run_id, r.etag, error, now, r.run_id)
            changed += conn.execute(_RECORD, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return changed


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file of an earlier format up to this one, as a batch opening it would."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        schema.upgrade(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _error(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"kind": "unknown", "message": text}
    return obj if isinstance(obj, dict) else {"kind": "unknown", "message": text}


class CheckLedger:
    """A batch's state file, opened and locked by ``check``; build it with :meth:`open`."""

    def __init__(self, path: str, conn: sqlite3.Connection, lock: files.FileLock) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock
        self.recorded = 0

    def __repr__(self) -> str:
        return f"CheckLedger({self.path!r}, recorded={self.recorded})"

    @classmethod
    def open(cls, path: str, identity: BatchIdentity) -> CheckLedger:
        """Open the state file at ``path`` of the batch ``identity``, locked for this process.

        Raise :class:`StateError` for a missing or empty file, a file of another batch, one
        that is no state file, or one a running batch holds (none of which is written to).
        """
        if not os.path.lexists(path):
            raise StateError(f"state file {path} does not exist")
        files.precheck(path)  # a file that is no state file is refused before any lock
        if files.lock_is_held(path):
            raise StateError(
                f"state file {path} is in use by a running batch: check it once that batch "
                f"has ended (`bulkretry status --state {path}` says while it runs)"
            )
        lock = files.FileLock(path)
        lock.acquire()
        try:
            if not schema.inspect_file(path, identity):
                raise StateError(f"state file {path} is empty: no batch has used it yet")
            try:
                conn = files.connect(path)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open state file {path}: {exc}") from exc
            try:
                _upgrade(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise StateError(f"cannot upgrade state file {path}: {exc}") from exc
        except BaseException:
            lock.release()
            raise
        return cls(path, conn, lock)

    def __enter__(self) -> CheckLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def doubts(self, *, in_flight_grace: float) -> list[DoubtRow]:
        """Return the batch's runs in doubt (see :func:`doubt_rows`)."""
        return self._run(lambda: list(doubt_rows(self._conn, in_flight_grace=in_flight_grace)))

    def claimed(self, ids: set[str]) -> tuple[set[str], set[str]]:
        """Return which of ``ids`` the batch claims (see :func:`claimed_runs`)."""
        return self._run(lambda: claimed_runs(self._conn, ids))

    def timed(self, ids: set[str]) -> dict[str, tuple[float, float]]:
        """Return when the requests of the claimed runs ``ids`` left and were answered (see
        :func:`claim_times`)."""
        return self._run(lambda: claim_times(self._conn, ids))

    def record(self, resolutions: Iterable[Resolution]) -> int:
        """Record ``resolutions`` (see :func:`record_resolutions`); return how many were."""
        changed = self._run(lambda: record_resolutions(self._conn, resolutions))
        self.recorded += changed
        return changed

    def close(self) -> None:
        """Close the connection and release the lock."""
        try:
            self._conn.close()
        finally:
            self._lock.release()

    def _run(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except sqlite3.Error as exc:
            raise StateError(f"state file {self.path}: {exc}") from exc
