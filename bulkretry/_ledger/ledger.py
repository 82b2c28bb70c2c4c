"""Keep the durable state of one batch (``--state PATH``) so that it is crash-safe and resumable.

Before a request for a run is sent, :meth:`Ledger.intent` records it as ``in_flight`` and returns
only once that is committed; the answer is recorded by :meth:`Ledger.outcome`. A run still
``in_flight`` when its process died may have been re-triggered: the next open marks it
``in_doubt``, and it is never sent again unless the caller decides so.

The Ledger holds the rooms of the wing together: ``opening`` gets hold of the state file
(``files``: lock, header, connections; ``schema``: its format), ``admission`` answers what it
knew of each input run, ``staging`` holds what the input adds until it is written in large
groups, ``commits`` commits the writes in groups (in call order, so a run's ``ambiguous`` mark
is committed no later than its next intent), and ``reads`` holds the queries. The values it
answers with are in ``records``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from .._exceptions import StateError
from .._model import ErrorInfo
from . import chains, files, opening, schema
from .admission import Admitter
from .commits import (
    DEFAULT_COMMIT_DELAY,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_GROUP_SIZE,
    DEFAULT_MAX_BUFFERED,
    GroupCommit,
)
from .intake import LedgerIntake
from .records import FINAL_STATES, STATES, Admission, BatchIdentity, PriorState
from .staging import Staging

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

# Module-level alias: inside Ledger, ``list`` names a method.
_Admissions = list[Admission]


class Ledger(LedgerIntake):
    """The durable ledger of one batch; build it with :meth:`open` (or :meth:`inspect`).

    Its input side is in :class:`~bulkretry._ledger.intake.LedgerIntake`, its queries in
    :class:`~bulkretry._ledger.reads.LedgerReads`.
    """

    def __init__(
        self,
        path: str,
        conn: sqlite3.Connection,
        *,
        invocation: int,
        known: int = 0,
        sync: Literal["normal", "full"],
        lock: files.FileLock | None,
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
        self._conn = conn
        self._lock = lock
        self._group = GroupCommit(
            path,
            conn,
            invocation=invocation,
            writable=lock is not None,
            sync=sync,
            commit_delay=commit_delay,
            group_size=group_size,
            flush_interval=flush_interval,
            max_buffered=max_buffered,
        )
        self._staging = Staging()
        #: The lowest ``seq`` (further rounds count down from 0); None until the first round.
        self._low_seq: int | None = None
        self._admitter = Admitter(
            conn, invocation=invocation, known=known, staged=self._staging.runs
        )

    def __repr__(self) -> str:
        group = self._group
        state = "closed" if group.closed else "failed" if group.failure else "open"
        return (
            f"Ledger({self.path!r}, {state}, invocation={self.invocation}, sync={self.sync!r}, "
            f"staged={self.staged}, buffered={group.buffered}, waiting={group.waiting}, "
            f"commits={group.commits}, fsyncs={group.fsyncs})"
        )

    @property
    def buffered(self) -> int:
        """Writes in the open transaction (below ``max_buffered`` between calls)."""
        return self._group.buffered

    @property
    def max_buffered(self) -> int:
        """Uncommitted writes that force a commit."""
        return self._group.max_buffered

    @property
    def commits(self) -> int:
        """Transactions committed so far."""
        return self._group.commits

    @property
    def fsyncs(self) -> int:
        """Fsyncs of the WAL made so far (``sync="full"`` only)."""
        return self._group.fsyncs

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
        conn, lock, invocation, known = opening.open_batch(path, identity, sync=sync)
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
        conn = opening.open_readonly(path)
        return cls(path, conn, invocation=0, sync="normal", lock=None)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------

    async def intent(self, run_id: str) -> None:
        """Record that a request for ``run_id`` is about to be sent; return once it is durable.

        Raise :class:`StateError` if it cannot be recorded: the request must not be sent then.
        """
        loop = asyncio.get_running_loop()
        self._unstage(run_id)
        group = self._group
        conn = group.begin()
        try:
            changed = conn.execute(schema.INTENT, (time.time(), run_id)).rowcount
        except sqlite3.Error as exc:
            raise group.fail("write", exc) from exc
        if not changed:
            raise StateError(f"run {run_id} was never admitted to state file {self.path}")
        waiter = loop.create_future()
        group.wrote(1, waiter)
        await waiter

    def ambiguous(self, run_id: str, *, fed: bool = False) -> None:
        """Record an attempt that may have landed (committed no later than the next intent);
        *fed*: the doubt came with the input, from a request of unknown time."""
        if run_id in self._staging.runs:
            self._staging.doubt.add(run_id)  # fed back in doubt: written with its row
            return
        self._write(run_id, schema.FED_DOUBT if fed else schema.AMBIGUOUS, (time.time(), run_id))

    def touch(self, run_id: str) -> None:
        """Record that a line holding ``run_id`` in doubt is written now (nothing else changes)."""
        self._write(run_id, schema.TOUCH_RUN, (time.time(), run_id))

    def clear_doubt(self, run_id: str) -> None:
        """Record that a look-up showed the run's unclear attempts were not processed."""
        self._write(run_id, schema.CLEAR_DOUBT, (time.time(), run_id))

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
        lost_at: float | None = None,
        fed: bool = False,
        cut_off: bool = False,
    ) -> None:
        """Record the final answer for ``run_id``; it is committed with the next group commit.

        ``attempts`` and ``ambiguous`` count this invocation's; the ledger keeps the totals
        over all invocations (raised to at least these values). The span of a doubt (see
        :mod:`.spans`): ``lost_at`` (epoch s), when the last answer that may have landed was
        lost; ``cut_off``, a stop cut the latest request off on the wire; ``fed``, held in doubt
        by a results line fed in (a doubt of any time)."""
        state = str(outcome)
        if state not in FINAL_STATES:
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
            "sent": attempts > 0,
            "lost": lost_at,
            "fed": fed,
            "cut_off": cut_off,
        }
        self._write(run_id, schema.OUTCOME, params)

    async def flush(self) -> None:
        """Write what is staged, commit every buffered write, and return once it is durable."""
        self.write_admitted()
        await self._group.flush()

    def close(self) -> None:
        """Commit what is buffered, wait for the worker thread, and release the lock.

        Raise :class:`StateError` if that last commit fails (an earlier failure was raised
        already and is not raised again).
        """
        if self._group.closed:
            return
        try:
            if self._group.failure is None:
                self.write_admitted()
            self._group.close()
        finally:
            self._conn.close()
            if self._lock is not None:
                self._lock.release()

    def name_skipped(
        self, run_id: str, *, done: bool, new_run_id: str | None, etag: str | None
    ) -> None:
        """Note a run the input names but ``--only`` skips: never finish it as unnamed.

        When the evidence says it was re-triggered (``done``) and the state file does not know
        it yet, record that: no later resume may send it.
        """
        # A run new in this invocation is staged: its outcome goes in with its row.
        if run_id not in self._staging.runs:
            rows = self._query("SELECT seq, state FROM runs WHERE run_id = ?", (run_id,))
            if not rows:
                return
            seq, state = rows[0]
            if seq <= self.known:
                self._admitter.seen.add(seq)
            if state in schema.SETTLING_STATES:
                return
        if done:
            self.outcome(
                run_id,
                "already_retriggered",
                new_run_id=new_run_id,
                etag=etag,
                attempts=0,
                ambiguous=0,
                error=None,
                http_status=None,
                request_id=None,
            )

    # -- run --follow ---------------------------------------------------------------------------

    def add_round(self, run_id: str, *, origin: str, number: int, source: str, line: int) -> str:
        """Admit ``run_id``, a new run of record ``origin`` that failed, as round ``number``.

        Return :data:`~bulkretry._model.ROUND_SEND`, or why it must not be sent: it is another
        line's run (``ROUND_ANOTHERS``), or a request for it may have landed already.
        """
        self._unstage(run_id)  # an input line named it just now: its row decides
        group = self._group
        conn = group.begin()
        try:
            if self._low_seq is None:
                low = conn.execute("SELECT coalesce(min(seq), 0) FROM runs").fetchone()[0]
                self._low_seq = min(0, int(low))
            self._low_seq -= 1
            row = {"source": source, "line": line, "seen": self.invocation, "now": time.time()}
            verdict = chains.add_round_sql(conn, self._low_seq, run_id, origin, number, **row)
        except sqlite3.Error as exc:
            raise group.fail("write", exc) from exc
        group.wrote(1)
        return verdict

    def ended(
        self,
        run_id: str,
        final: str,
        raw: str | None,
        errors: Sequence[tuple[str | None, str | None]] = (),
    ) -> None:
        """Record how a followed run ended (a resume does not look it up again)."""
        text = orjson.dumps(list(errors)).decode() if errors else None
        self._write(run_id, chains.ENDED, (run_id, final, raw, text))

    def chain(self, first: str) -> list[chains.Link]:
        """Return what the file knows of the chain of new runs that starts at ``first``."""
        self.write_admitted()
        try:
            return chains.chain_of(self._conn, first)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from exc

    def store_options(self, options: Mapping[str, object]) -> None:
        """Store the batch's options at once (paths of secrets only, never their content)."""
        group = self._group
        conn = group.begin()
        try:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('options', ?)",
                (orjson.dumps(dict(options)).decode(),),
            )
        except (sqlite3.Error, TypeError) as exc:
            raise group.fail("write", exc) from exc
        group.commit()
        group.check()

    # -- machinery -----------------------------------------------------------------------------

    def _write(self, run_id: str, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> None:
        staging = self._staging
        if run_id in staging.runs:
            # Its record is written already: the outcome goes in with its row, in one
            # transaction, so that neither is in the state file without the other.
            self._group.check()
            staging.settled[run_id] = (sql, params)
            return
        group = self._group
        conn = group.begin()
        try:
            changed = conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise group.fail("write", exc) from exc
        if not changed:
            raise StateError(f"run {run_id} was never admitted to state file {self.path}")
        group.wrote(1)
