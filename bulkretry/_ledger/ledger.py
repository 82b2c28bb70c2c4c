"""Keep the durable state of one batch (``--state PATH``) so that it is crash-safe and resumable.

Before a request for a run is sent, :meth:`Ledger.intent` records it as ``in_flight`` and returns
only once that is committed; the answer is recorded by :meth:`Ledger.outcome`. A run still
``in_flight`` when its process died may have been re-triggered: the next open marks it
``in_doubt``, and it is never sent again unless the caller decides so.

All writes go into one open transaction on one connection, in call order, so a run's
``ambiguous`` mark is committed no later than its next intent; the ``run_id`` key of that same
table deduplicates run IDs exactly, however many, with one bit per known run in memory. One timer
handle (no background task) commits the transaction: on the loop's next iteration after an
intent (or ``commit_delay`` later), at once when ``group_size`` intents wait, within
``flush_interval`` of any other write, and whenever ``max_buffered`` writes are pending.

Commits run on the event loop: in WAL mode with ``synchronous=NORMAL`` they only hand pages to
the OS (tens of microseconds) and survive a killed process. With ``sync="full"`` each group
commit is also ``fsync``-ed in a worker thread (commits made while one runs share the next),
and intents wake only after that, so they survive power loss too. The only disk waits on the
loop are SQLite's own checkpoints, once per thousand pages written (about 4 MB), which keep the
WAL small. (Checkpointing in a thread was tried: SQLite reuses the WAL only after a transaction
that begins with every page copied back, so the loop still had to copy what was committed
meanwhile, with the same two fsyncs, and it measured no better.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .._exceptions import StateError
from .._model import ErrorInfo
from . import schema as schema
from .schema import STATES, Admission, BatchIdentity, PriorState

__all__ = [
    "DEFAULT_COMMIT_DELAY",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_GROUP_SIZE",
    "DEFAULT_MAX_BUFFERED",
    "STATES",
    "Admission",
    "BatchIdentity",
    "Ledger",
    "PriorState",
]

#: Seconds the first waiting intent waits for others to share its commit. Zero commits on the
#: next loop iteration: every intent issued meanwhile shares it, and under load that already
#: groups dozens (a longer delay measured no fewer commits, only slower intents).
DEFAULT_COMMIT_DELAY = 0.0
#: This many waiting intents are committed at once, without waiting for the delay.
DEFAULT_GROUP_SIZE = 64
#: Seconds within which any other write (admit, ambiguous, outcome) is committed.
DEFAULT_FLUSH_INTERVAL = 0.1
#: Uncommitted writes that force a commit, which bounds the transaction and its memory.
DEFAULT_MAX_BUFFERED = 4096
_CHUNK = 512  # run IDs looked up in one query
_PAGE = 1000  # rows per query when streaming, so that no statement stays open across a yield
_TOUCH_EVERY = 1.0  # seconds between two updates of the invocation's last-active time
_MAX_MARKS = 1 << 28  # runs marked in a bitmap (32 MiB at most); any other seq goes in a set

Info = dict[str, str | int | float | bool | None]
Record = tuple[str, str, int]
# Module-level aliases: inside Ledger, ``list`` names a method.
_Waiters = list[asyncio.Future[None]]
_Rows = list[Any]
_Admissions = list[Admission]


class _Marks:
    """A set of ``seq`` numbers: a bit each up to ``size``, any other (an edited file) in a set."""

    __slots__ = ("_bits", "_other")

    def __init__(self, size: int) -> None:
        self._bits = bytearray((min(size, _MAX_MARKS) >> 3) + 1)
        self._other: set[int] = set()

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


@dataclass(slots=True)
class _Sync:
    """One fsync of the WAL and the intents it makes durable; joinable until it starts."""

    waiters: _Waiters = field(default_factory=list)
    started: bool = False
    future: concurrent.futures.Future[None] | None = None


class Ledger:
    """The durable ledger of one batch; build it with :meth:`open` (or :meth:`inspect`)."""

    def __init__(
        self,
        path: str,
        conn: sqlite3.Connection,
        *,
        invocation: int,
        known: int = 0,
        sync: Literal["normal", "full"],
        lock: schema.FileLock | None,
        commit_delay: float = DEFAULT_COMMIT_DELAY,
        group_size: int = DEFAULT_GROUP_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self.path = path
        self.invocation = invocation  # 0 when inspecting read-only
        #: Runs with a ``seq`` above this one were admitted by this invocation.
        self.known = known
        self.sync = sync
        self.max_buffered = max_buffered
        self.buffered = 0  # writes in the open transaction; below max_buffered between calls
        self.commits = 0
        self.fsyncs = 0
        self._conn = conn
        self._lock = lock
        self._commit_delay = commit_delay
        self._group_size = group_size
        self._flush_interval = flush_interval
        self._waiters: _Waiters = []
        self._handle: asyncio.Handle | None = None
        self._handle_when = 0.0
        self._handle_loop: asyncio.AbstractEventLoop | None = None
        self._failure: tuple[str, BaseException] | None = None
        self._closed = False
        self._touched = 0.0
        self._sync_lock = threading.Lock()
        self._queued: _Sync | None = None
        self._last_sync: concurrent.futures.Future[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Runs of earlier invocations admitted in this one. Marking them in the file cost a
        # write per run (half of a resume's time); a run this invocation inserted says so in
        # its ``seen`` column instead, and marks of an invocation that died never matter.
        self._seen = _Marks(known)
        # A resume usually reads the input the ledger was filled from, in the same order: the
        # runs following the last one found are read ahead in seq order (a sequential scan, a
        # third of the cost of looking each ID up in the index), while that keeps hitting.
        self._cursor = 0
        self._read_ahead = known > 0
        if sync == "full":
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "bulkretry-ledger")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failed" if self._failure else "open"
        return (
            f"Ledger({self.path!r}, {state}, invocation={self.invocation}, sync={self.sync!r}, "
            f"buffered={self.buffered}, waiting={len(self._waiters)}, commits={self.commits}, "
            f"fsyncs={self.fsyncs})"
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        identity: BatchIdentity,
        *,
        sync: Literal["normal", "full"] = "normal",
        commit_delay: float = DEFAULT_COMMIT_DELAY,
        group_size: int = DEFAULT_GROUP_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> Ledger:
        """Open (or create) the ledger at ``path`` for ``identity``, locked for this process.

        Raise :class:`StateError` for a file of another batch, of a newer format, a corrupt or
        foreign file (none of which is written to), or a ledger another process has open.
        """
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        path = os.fspath(path)
        schema.precheck(path)
        lock = schema.FileLock(path)
        lock.acquire()
        try:
            new = not schema.inspect_file(path, identity)
            try:
                conn = schema.connect(path)
            except sqlite3.Error as exc:
                raise StateError(f"cannot open state file {path}: {exc}") from exc
            try:
                invocation = schema.start_invocation(conn, identity, new=new)
                known = schema.last_seq(conn)
                if sync == "full":
                    # The database file's header and the directory entries of it and its WAL
                    # must survive power loss too: SQLite syncs neither at synchronous=NORMAL.
                    _fsync(path)
                    _fsync(os.path.dirname(os.path.abspath(path)))
            except BaseException as exc:
                conn.close()
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"cannot write state file {path}: {exc}") from exc
                raise
        except BaseException:
            lock.release()
            raise
        return cls(
            path,
            conn,
            invocation=invocation,
            known=known,
            sync=sync,
            lock=lock,
            commit_delay=commit_delay,
            group_size=group_size,
            flush_interval=flush_interval,
            max_buffered=max_buffered,
        )

    @classmethod
    def inspect(cls, path: str | os.PathLike[str]) -> Ledger:
        """Open a ledger read-only, without identity or lock, for ``bulkretry status``."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise StateError(f"state file {path} does not exist")
        if not schema.inspect_file(path, None):
            raise StateError(f"state file {path} is empty: no batch has used it yet")
        try:
            conn = schema.connect_readonly(path)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state file {path}: {exc}") from exc
        return cls(path, conn, invocation=0, sync="normal", lock=None)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def live(self) -> bool:
        """True while a process (this one included) has the ledger open for a batch."""
        return self._lock is not None or schema.lock_is_held(self.path)

    # -- writes ------------------------------------------------------------------------------

    def admit(self, run_id: str, source: str, line: int) -> Admission:
        """Record that the input holds ``run_id``; return what the ledger knew of it before."""
        return self._admit_chunk([(run_id, source, line)])[0]

    def admit_many(self, records: Iterable[Record]) -> _Admissions:
        """Admit ``(run_id, source, line)`` records in order: faster than one by one."""
        admissions: list[Admission] = []
        chunk: list[Record] = []
        for record in records:
            chunk.append(record)
            if len(chunk) == _CHUNK:
                admissions += self._admit_chunk(chunk)
                chunk = []
        if chunk:
            admissions += self._admit_chunk(chunk)
        return admissions

    def _admit_chunk(self, chunk: list[Record]) -> list[Admission]:
        self._check()
        conn = self._conn
        invocation = self.invocation
        seen = self._seen
        admissions: list[Admission] = []
        inserts: list[tuple[str, str, int, int, float]] = []
        now = time.time()
        try:
            found = self._lookup([record[0] for record in chunk])
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        for run_id, source, line in chunk:
            row = found.get(run_id)
            if row is None:
                inserts.append((run_id, source, line, invocation, now))
                admissions.append(schema.NEW)
                found[run_id] = (run_id, invocation)  # a second sight in this chunk
            elif row[1] == invocation or not seen.add(row[2]):
                admissions.append(schema.DUPLICATE)
            else:
                admissions.append(schema.admission_of(row))
        if inserts:
            conn = self._begin()
            try:
                conn.executemany(schema.INSERT, inserts)
            except sqlite3.Error as exc:
                raise self._fail("write", exc) from exc
            self._wrote(len(inserts), self._flush_interval)
        return admissions

    def _lookup(self, ids: list[str]) -> dict[str, Any]:
        """Return the rows of those of ``ids`` the ledger knows, by run ID."""
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
        return found

    async def intent(self, run_id: str) -> None:
        """Record that a request for ``run_id`` is about to be sent; return once it is durable.

        Raise :class:`StateError` if it cannot be recorded: the request must not be sent then.
        """
        loop = asyncio.get_running_loop()
        conn = self._begin()
        try:
            changed = conn.execute(schema.INTENT, (time.time(), run_id)).rowcount
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        if not changed:
            raise StateError(f"run {run_id} was never admitted to state file {self.path}")
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if len(self._waiters) >= self._group_size:
            self._wrote(1, 0.0)
            self._commit()
        else:
            self._wrote(1, self._commit_delay)
        await waiter

    def ambiguous(self, run_id: str) -> None:
        """Record an attempt that may have landed (committed no later than the next intent)."""
        self._write(run_id, schema.AMBIGUOUS, (time.time(), run_id))

    def outcome(
        self,
        run_id: str,
        outcome: str,
        *,
        new_run_id: str | None,
        etag: str | None,
        attempts: int,
        ambiguous: int,
        error: ErrorInfo | Mapping[str, object] | None,
        http_status: int | None,
        request_id: str | None,
    ) -> None:
        """Record the final answer for ``run_id``; it is committed with the next group commit.

        ``attempts`` and ``ambiguous`` count this invocation's; the ledger keeps the totals
        over all invocations (raised to at least these values).
        """
        state = str(outcome)
        if state not in schema.FINAL_STATES:
            raise ValueError(f"cannot record outcome {state!r} in the state file")
        if isinstance(error, ErrorInfo):
            error = error.as_dict()
        try:
            error_text = orjson.dumps(error).decode() if error is not None else None
        except orjson.JSONEncodeError as exc:
            raise StateError(f"cannot record the error of run {run_id}: {exc}") from exc
        now = time.time()
        if state in schema.SETTLING_STATES:
            settled = (state, new_run_id, etag, attempts, ambiguous, error_text, http_status)
            self._write(run_id, schema.SETTLED, (*settled, request_id, now, run_id))
            return
        params = {
            "run_id": run_id,
            "state": state,
            "new_run_id": new_run_id,
            "etag": etag,
            "attempts": attempts,
            "ambiguous": ambiguous,
            "error": error_text,
            "http_status": http_status,
            "request_id": request_id,
            "now": now,
        }
        self._write(run_id, schema.OUTCOME, params)

    async def flush(self) -> None:
        """Commit every buffered write now and return once it is durable."""
        self._check()
        self._commit()
        if self._last_sync is not None:
            await asyncio.wrap_future(self._last_sync)
        self._check()

    def close(self) -> None:
        """Commit what is buffered, wait for the worker thread, and release the lock.

        Raise :class:`StateError` if that last commit fails (an earlier failure was raised
        already and is not raised again).
        """
        if self._closed:
            return
        failed_before = self._failure is not None
        try:
            if self._lock is not None and not failed_before:
                self._touched = 0.0  # record when this invocation ended
                try:
                    self._begin()
                except StateError:
                    pass  # raised below, once everything is released
                self._commit()
        finally:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._conn.close()
            if self._lock is not None:
                self._lock.release()
        if self._failure is not None and not failed_before:
            message, cause = self._failure
            raise StateError(message) from cause

    def enqueue(self, run_id: str, source: str, line: int) -> None:
        """Queue a run an earlier invocation knew, to be sent for the input line that named it.

        New runs need no queue: they wait in ``runs`` as ``pending`` (see :meth:`waiting`).
        """
        conn = self._begin()
        try:
            conn.execute(schema.ENQUEUE, (run_id, source, line))
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        self._wrote(1, self._flush_interval)

    def enqueue_unfinished(self, source: str) -> int:
        """Queue the earlier invocations' unfinished runs that this one's input did not name.

        Unfinished is ``pending``, ``not_attempted`` or ``in_doubt`` (which waits for a person,
        and may have no record anywhere when its process died): the state file is the batch,
        and the input only adds to it. Each is queued with ``source`` (the state file) and its
        ``seq`` as its line; the engine holds runs in doubt unless told to send them. Return
        how many were queued.
        """
        self._check()
        queued = 0
        last = 0
        seen = self._seen
        while True:
            rows = self._read(schema.UNFINISHED, (last, self.known, _PAGE))
            if not rows:
                return queued
            for seq, run_id, _ in rows:
                if seq in seen:
                    continue
                seen.add(seq)
                self.enqueue(run_id, source, seq)
                queued += 1
            last = rows[-1][0]

    def waiting(self, after_seq: int, after_turn: int, limit: int = _CHUNK) -> _Rows:
        """Return up to ``limit`` runs to send: ``(seq, turn, run_id, source, line, doubt)``.

        New pending runs after ``after_seq`` come first (``turn`` 0), then queued runs after
        ``after_turn`` (``seq`` 0). The caller advances each cursor past the rows it got.
        """
        rows = self._read(schema.NEW_PENDING, (max(after_seq, self.known), limit))
        waiting: _Rows = [(seq, 0, r, s, line, d) for seq, r, s, line, d in rows]
        if len(waiting) < limit:
            rows = self._read(schema.QUEUED, (after_turn, limit - len(waiting)))
            waiting += [(0, turn, r, s, line, d) for turn, r, s, line, d in rows]
        return waiting

    def progress(self, source: str, lines: int, *, complete: bool) -> None:
        """Record that ``source`` was read up to its line ``lines`` (to its end if ``complete``)."""
        conn = self._begin()
        try:
            conn.execute(schema.SOURCE, (self.invocation, source, lines, int(complete)))
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        self._wrote(1, self._flush_interval)

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

    def store_options(self, options: Mapping[str, object]) -> None:
        """Store the batch's options at once (paths of secrets only, never their content)."""
        conn = self._begin()
        try:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('options', ?)",
                (orjson.dumps(dict(options)).decode(),),
            )
        except (sqlite3.Error, TypeError) as exc:
            raise self._fail("write", exc) from exc
        self._commit()
        self._check()

    # -- reads (this process's own writes included, committed or not) -------------------------

    def resume_ids(self) -> Iterator[Record]:
        """Yield ``(run_id, source, line)`` of every run in first-seen order, page by page."""
        last = 0
        while True:
            rows = self._read(
                "SELECT seq, run_id, source, line FROM runs WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, _PAGE),
            )
            if not rows:
                return
            for _, run_id, source, line in rows:
                yield run_id, source, line
            last = rows[-1][0]

    def counts(self) -> dict[str, int]:
        """Return the number of runs in each of :data:`STATES`."""
        counts = dict.fromkeys(STATES, 0)
        for state, count in self._read("SELECT state, count(*) FROM runs GROUP BY state", ()):
            counts[state] = count
        if self._at_rest():
            counts["in_doubt"] += counts["in_flight"]
            counts["in_flight"] = 0
        return counts

    def list(self, state: str) -> Iterator[str]:
        """Yield the run IDs in ``state`` (one of :data:`STATES`) in first-seen order."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        other = "in_flight" if state == "in_doubt" and self._at_rest() else state
        last = 0
        while True:
            rows = self._read(
                "SELECT seq, run_id FROM runs WHERE seq > ? AND state IN (?, ?) "
                "ORDER BY seq LIMIT ?",
                (last, state, other, _PAGE),
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
        info: Info = {name: meta[name] for name in schema.IDENTITY_FIELDS}
        info |= {
            "path": self.path,
            "created_at": _iso(float(meta["created_at"])),
            "updated_at": _iso(updated) if updated is not None else None,
            "invocations": invocations,
            "elapsed": round(elapsed, 3),
            "runs": sum(counts.values()),
            "finished": finished,
            "rate": round(finished / elapsed, 3) if elapsed > 0 else None,
            "live": self.live,
        }
        return info

    # -- machinery -----------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StateError(f"state file {self.path} is closed")
        if self._failure is not None:
            message, cause = self._failure
            raise StateError(message) from cause
        if self._lock is None:
            raise StateError(f"state file {self.path} is open read-only")

    def _fail(self, doing: str, exc: BaseException) -> StateError:
        """Stop the ledger for good: with state it cannot write, no request may be sent."""
        if self._failure is None:
            self._failure = (f"cannot {doing} state file {self.path}: {exc}", exc)
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            waiters, self._waiters = self._waiters, []
            self._settle(waiters)
        return StateError(self._failure[0])

    def _begin(self) -> sqlite3.Connection:
        self._check()
        conn = self._conn
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        return conn

    def _write(self, run_id: str, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> None:
        conn = self._begin()
        try:
            changed = conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        if not changed:
            raise StateError(f"run {run_id} was never admitted to state file {self.path}")
        self._wrote(1, self._flush_interval)

    def _wrote(self, count: int, within: float) -> None:
        """Count buffered writes and make sure a commit follows within ``within`` seconds."""
        self.buffered += count
        if self.buffered >= self.max_buffered:
            self._commit()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # used without a loop: commits happen at max_buffered and at close
        when = loop.time() + within
        if self._handle is not None:
            # uvloop's handles have no when(): the deadline is kept beside the handle.
            if self._handle_when <= when and self._handle_loop is loop:
                return
            self._handle.cancel()
        # A zero delay means "on the next iteration": uvloop rounds timers up to a whole
        # millisecond, which would hold every intent (and its request) back that long.
        self._handle = (
            loop.call_soon(self._on_timer) if within <= 0 else loop.call_at(when, self._on_timer)
        )
        self._handle_when = when
        self._handle_loop = loop

    def _on_timer(self) -> None:
        self._handle = None
        if not self._closed and self._failure is None:
            self._commit()

    def _commit(self) -> None:
        """Commit the open transaction; wake its intents once it is durable."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        conn = self._conn
        now = time.time()
        try:
            if not conn.in_transaction:
                return
            if now - self._touched >= _TOUCH_EVERY:
                conn.execute(schema.TOUCH, (now, self.invocation))
                self._touched = now
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail("commit to", exc)
            return
        waiters, self._waiters = self._waiters, []
        self.commits += 1
        self.buffered = 0
        if self._executor is not None:
            self._sync(self._executor, waiters)
        else:
            self._settle(waiters)

    def _sync(self, executor: concurrent.futures.Executor, waiters: _Waiters) -> None:
        """Have the worker fsync the WAL, joining a queued fsync if one has not started yet."""
        with self._sync_lock:
            queued = self._queued
            if queued is not None and not queued.started:
                queued.waiters += waiters  # it starts after this commit, so it covers it
                return
            self._queued = job = _Sync(waiters)
        job.future = self._last_sync = executor.submit(self._fsync_wal, job)
        job.future.add_done_callback(lambda _: self._wake_from_thread(job))

    def _fsync_wal(self, job: _Sync) -> None:
        """Make every commit so far survive power loss (runs in the worker thread)."""
        with self._sync_lock:
            job.started = True
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if self._failure is None:
                self._failure = (f"cannot sync state file {self.path}: {exc.strerror}", exc)
            return
        self.fsyncs += 1

    def _wake_from_thread(self, job: _Sync) -> None:
        if not job.waiters:
            return
        try:
            job.waiters[0].get_loop().call_soon_threadsafe(self._settle, job.waiters)
        except RuntimeError:
            pass  # the loop is closed, and with it the workers that were waiting

    def _settle(self, waiters: _Waiters) -> None:
        for waiter in waiters:
            if waiter.done():
                continue  # its worker was cancelled; the write is committed all the same
            if self._failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(StateError(self._failure[0]))

    def _read(self, sql: str, params: tuple[Any, ...]) -> _Rows:
        if self._closed:
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


def _fsync(path: str) -> None:
    """Flush a file, or a directory's entries, to stable storage."""
    if os.name == "nt" and os.path.isdir(path):  # pragma: no cover - Windows cannot
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
