"""Commit a ledger's writes in groups, and with ``sync="full"`` fsync them in a worker thread.

All writes go into one open transaction on one connection, in call order. One timer handle (no
background task) commits it: on the loop's next iteration after an intent (or ``commit_delay``
later), at once when ``group_size`` intents wait, within ``flush_interval`` of any other write,
and whenever ``max_buffered`` writes are pending.

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
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from .._exceptions import StateError
from . import files, schema

__all__ = [
    "DEFAULT_COMMIT_DELAY",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_GROUP_SIZE",
    "DEFAULT_MAX_BUFFERED",
    "GroupCommit",
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
_TOUCH_EVERY = 1.0  # seconds between two updates of the invocation's last-active time

_Waiters = list[asyncio.Future[None]]


@dataclass(slots=True)
class _Sync:
    """One fsync of the WAL and the intents it makes durable; joinable until it starts."""

    waiters: _Waiters = field(default_factory=list)
    started: bool = False
    future: concurrent.futures.Future[None] | None = None


class GroupCommit:
    """The open transaction on a ledger's connection, and when it becomes durable.

    The first write that fails stops it for good (``failure``): with state it cannot write, no
    request may be sent. The connection stays the ledger's, which reads through it and closes it.
    """

    __slots__ = (
        "_commit_delay",
        "_conn",
        "_executor",
        "_flush_interval",
        "_group_size",
        "_handle",
        "_handle_loop",
        "_handle_when",
        "_last_sync",
        "_queued",
        "_sync_lock",
        "_touched",
        "_waiters",
        "_writable",
        "buffered",
        "closed",
        "commits",
        "failure",
        "fsyncs",
        "invocation",
        "max_buffered",
        "path",
    )

    def __init__(
        self,
        path: str,
        conn: sqlite3.Connection,
        *,
        invocation: int,
        writable: bool,
        sync: Literal["normal", "full"],
        commit_delay: float = DEFAULT_COMMIT_DELAY,
        group_size: int = DEFAULT_GROUP_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self.path = path
        self.invocation = invocation
        self.max_buffered = max_buffered
        self.buffered = 0  # writes in the open transaction; below max_buffered between calls
        self.commits = 0
        self.fsyncs = 0
        self.closed = False
        self.failure: tuple[str, BaseException] | None = None
        self._conn = conn
        self._writable = writable
        self._commit_delay = commit_delay
        self._group_size = group_size
        self._flush_interval = flush_interval
        self._waiters: _Waiters = []
        self._handle: asyncio.Handle | None = None
        self._handle_when = 0.0
        self._handle_loop: asyncio.AbstractEventLoop | None = None
        self._touched = 0.0
        self._sync_lock = threading.Lock()
        self._queued: _Sync | None = None
        self._last_sync: concurrent.futures.Future[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        if sync == "full":
            self._executor = concurrent.futures.ThreadPoolExecutor(1, "bulkretry-ledger")

    def __repr__(self) -> str:
        return (
            f"GroupCommit({self.path!r}, buffered={self.buffered}, waiting={self.waiting}, "
            f"commits={self.commits}, fsyncs={self.fsyncs}, timer={self._handle is not None})"
        )

    @property
    def waiting(self) -> int:
        """Intents waiting for their commit (or its fsync)."""
        return len(self._waiters)

    def check(self) -> None:
        """Raise :class:`StateError` unless writes may go on."""
        if self.closed:
            raise StateError(f"state file {self.path} is closed")
        if self.failure is not None:
            message, cause = self.failure
            raise StateError(message) from cause
        if not self._writable:
            raise StateError(f"state file {self.path} is open read-only")

    def fail(self, doing: str, exc: BaseException) -> StateError:
        """Stop for good, failing every waiting intent; return the error to raise."""
        if self.failure is None:
            self.failure = (f"cannot {doing} state file {self.path}: {exc}", exc)
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            waiters, self._waiters = self._waiters, []
            self._settle(waiters)
        return StateError(self.failure[0])

    def begin(self) -> sqlite3.Connection:
        """Return the connection inside the open transaction, opening one if needed."""
        self.check()
        conn = self._conn
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.fail("write", exc) from exc
        return conn

    def wrote(self, count: int, waiter: asyncio.Future[None] | None = None) -> None:
        """Count ``count`` writes just made; see that they are committed in time.

        A write is committed within ``flush_interval``, and at once at ``max_buffered``. An
        intent passes the ``waiter`` it will await: set once its commit is durable, on the
        loop's next iteration (or ``commit_delay`` later), at once when ``group_size`` wait.
        """
        self.buffered += count
        if waiter is None:
            within = self._flush_interval
        else:
            self._waiters.append(waiter)
            if len(self._waiters) >= self._group_size:
                self.commit()
                return
            within = self._commit_delay
        if self.buffered >= self.max_buffered:
            self.commit()
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
        if not self.closed and self.failure is None:
            self.commit()

    def commit(self) -> None:
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
            self.fail("commit to", exc)
            return
        waiters, self._waiters = self._waiters, []
        self.commits += 1
        self.buffered = 0
        if self._executor is not None:
            self._sync(self._executor, waiters)
        else:
            self._settle(waiters)

    async def flush(self) -> None:
        """Commit every buffered write now and return once it is durable."""
        self.check()
        self.commit()
        if self._last_sync is not None:
            await asyncio.wrap_future(self._last_sync)
        self.check()

    def close(self) -> None:
        """Commit what is buffered and wait for the worker thread; then refuse every use.

        Raise :class:`StateError` if that last commit fails (an earlier failure was raised
        already and is not raised again).
        """
        if self.closed:
            return
        failed_before = self.failure is not None
        try:
            if self._writable and not failed_before:
                self._touched = 0.0  # record when this invocation ended
                try:
                    self.begin()
                except StateError:
                    pass  # raised below, once everything is released
                self.commit()
        finally:
            self.closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
        if self.failure is not None and not failed_before:
            message, cause = self.failure
            raise StateError(message) from cause

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
            files.fsync(self.path + "-wal")
        except OSError as exc:
            if self.failure is None:
                self.failure = (f"cannot sync state file {self.path}: {exc.strerror}", exc)
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
            if self.failure is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(StateError(self.failure[0]))
