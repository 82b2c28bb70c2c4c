"""The state file's format, its lock, and the checks that a file is this batch's ledger.

A ledger is a SQLite database in WAL mode::

    PRAGMA application_id   0x42524C47 ("BRLG"): marks a bulkretry ledger
    PRAGMA user_version     FORMAT_VERSION: a newer file is refused, never rewritten
    meta(key, value)        base_url, org_id, sandbox, op, created_at, invocations, options
    invocations(number, pid, started_at, updated_at)   one row per open; elapsed = their sum
    runs(seq, run_id, source, line, state, seen, attempts, ambiguous, doubt, new_run_id, etag,
         error, http_status, request_id, updated_at)
    queue(turn, run_id, source, line)    runs known before this invocation that it will send
    sources(invocation, name, lines, complete)   how far each input was read, and if to its end

``seq`` is first-seen order. ``seen`` is the invocation that inserted the run; a later invocation
marks the runs it admits by ``seq`` in memory (one bit each), so that a resume over runs already
done writes nothing. Together with the ``run_id`` key they deduplicate exactly without holding
IDs in memory. ``doubt`` is sticky: set when a request
may have landed without an answer, cleared only by evidence that the run was re-triggered
(``retriggered``, ``already_retriggered``); ``not_attempted`` and ``failed`` never hide it (they
become ``in_doubt``).

Input is admitted ahead of the requests: new runs wait in ``runs`` itself (``pending``, ``seq``
above the last one at open), and runs an earlier invocation knew wait in ``queue`` with the
input line that named them this time, so that memory stays flat however long the input.
Format 1 files (no ``queue``/``sources``) are upgraded in place when a batch opens them.

Every check in :func:`inspect_file` reads through a read-only connection: a file that is refused
is never written to (a read-only connection cannot even checkpoint a foreign WAL).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import time
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, NamedTuple

import orjson

from .._exceptions import StateError
from .._model import ErrorInfo

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt
else:
    import fcntl

__all__ = [
    "AMBIGUOUS",
    "APPLICATION_ID",
    "DUPLICATE",
    "FINAL_STATES",
    "FOLLOWING",
    "FORMAT_VERSION",
    "IDENTITY_FIELDS",
    "INSERT",
    "INTENT",
    "NEW",
    "OUTCOME",
    "SETTLED",
    "SETTLING_STATES",
    "STATES",
    "TOUCH",
    "Admission",
    "BatchIdentity",
    "FileLock",
    "PriorState",
    "admission_of",
    "connect",
    "connect_readonly",
    "create",
    "inspect_file",
    "last_seq",
    "lock_is_held",
    "lookup_sql",
    "precheck",
    "start_invocation",
]

APPLICATION_ID = 0x42524C47
FORMAT_VERSION = 2
#: Every value of ``runs.state``; ``in_flight`` at rest (no process holds the lock) is in doubt.
STATES = (
    "pending",
    "in_flight",
    "retriggered",
    "already_retriggered",
    "failed",
    "in_doubt",
    "not_attempted",
)
#: The states :meth:`Ledger.outcome` may record.
FINAL_STATES = frozenset(
    {"retriggered", "already_retriggered", "failed", "in_doubt", "not_attempted"}
)
IDENTITY_FIELDS = ("base_url", "org_id", "sandbox", "op")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_CACHE_KIB = 32 * 1024
_BUSY_MS = 5000

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE invocations (
    number INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    line INTEGER NOT NULL,
    state TEXT NOT NULL,
    seen INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0,
    doubt INTEGER NOT NULL DEFAULT 0,
    new_run_id TEXT,
    etag TEXT,
    error TEXT,
    http_status INTEGER,
    request_id TEXT,
    updated_at REAL NOT NULL
);
-- Small by construction (only rows on the wire), it makes the crash sweep at open cheap.
CREATE INDEX runs_in_flight ON runs(state) WHERE state = 'in_flight';
"""
#: Added by format 2; run on a format 1 file to upgrade it.
_DDL_2 = """
CREATE TABLE queue (
    turn INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    source TEXT NOT NULL,
    line INTEGER NOT NULL
);
CREATE TABLE sources (
    invocation INTEGER NOT NULL,
    name TEXT NOT NULL,
    lines INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    PRIMARY KEY (invocation, name)
) WITHOUT ROWID;
"""


INSERT = (
    "INSERT INTO runs (run_id, source, line, state, seen, updated_at) "
    "VALUES (?, ?, ?, 'pending', ?, ?)"
)
INTENT = (
    "UPDATE runs SET state = 'in_flight', attempts = attempts + 1, updated_at = ? WHERE run_id = ?"
)
AMBIGUOUS = "UPDATE runs SET ambiguous = ambiguous + 1, doubt = 1, updated_at = ? WHERE run_id = ?"
# Neither ``not_attempted`` nor ``failed`` hides a doubt: an earlier request may have landed.
OUTCOME = """
UPDATE runs SET
    state = CASE WHEN :state IN ('not_attempted', 'failed') AND (doubt OR :ambiguous > 0)
                 THEN 'in_doubt' ELSE :state END,
    doubt = CASE WHEN :state IN ('retriggered', 'already_retriggered') THEN 0
                 WHEN :state = 'in_doubt' OR :ambiguous > 0 THEN 1 ELSE doubt END,
    new_run_id = :new_run_id, etag = :etag,
    attempts = max(attempts, :attempts), ambiguous = max(ambiguous, :ambiguous),
    error = :error, http_status = :http_status, request_id = :request_id, updated_at = :now
WHERE run_id = :run_id
"""
#: The same for an outcome that settles the run (``retriggered``, ``already_retriggered``):
#: no doubt is left, so no CASE. Positional: one per request, and binding names
#: and evaluating the CASEs made the general statement cost twice as much.
SETTLED = (
    "UPDATE runs SET state = ?, doubt = 0, new_run_id = ?, etag = ?, "
    "attempts = max(attempts, ?), ambiguous = max(ambiguous, ?), error = ?, http_status = ?, "
    "request_id = ?, updated_at = ? WHERE run_id = ?"
)
SETTLING_STATES = frozenset({"retriggered", "already_retriggered"})
TOUCH = "UPDATE invocations SET updated_at = ? WHERE number = ?"
ENQUEUE = "INSERT INTO queue (run_id, source, line) VALUES (?, ?, ?)"
#: New runs of this invocation still to send, after a ``seq``, with their doubt.
NEW_PENDING = (
    "SELECT seq, run_id, source, line, doubt FROM runs "
    "WHERE seq > ? AND state = 'pending' ORDER BY seq LIMIT ?"
)
#: Queued runs after a ``turn``, with their doubt.
QUEUED = (
    "SELECT q.turn, q.run_id, q.source, q.line, r.doubt FROM queue q "
    "JOIN runs r ON r.run_id = q.run_id WHERE q.turn > ? ORDER BY q.turn LIMIT ?"
)
#: Runs of earlier invocations that are not finished, after a ``seq``.
UNFINISHED = (
    "SELECT seq, run_id, state FROM runs WHERE seq > ? AND seq <= ? "
    "AND state IN ('pending', 'not_attempted', 'in_doubt') ORDER BY seq LIMIT ?"
)
SOURCE = (
    "INSERT INTO sources (invocation, name, lines, complete) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (invocation, name) DO UPDATE SET lines = excluded.lines, "
    "complete = excluded.complete"
)
#: The runs after a ``seq``, in the order they were admitted (the columns of :func:`lookup_sql`).
FOLLOWING = (
    "SELECT run_id, seen, seq, state, new_run_id, etag, attempts, ambiguous, error "
    "FROM runs WHERE seq > ? ORDER BY seq LIMIT ?"
)


@cache
def lookup_sql(size: int) -> str:
    """Return the query that looks up ``size`` run IDs at once (sizes are powers of two)."""
    marks = ", ".join("?" * size)
    return (
        "SELECT run_id, seen, seq, state, new_run_id, etag, attempts, ambiguous, error "
        f"FROM runs WHERE run_id IN ({marks})"
    )


class PriorState(StrEnum):
    """What the ledger knew of a run when the feeder admitted it."""

    NEW = "new"  # never seen: now recorded as pending
    PENDING = "pending"  # known, and never sent, not attempted or failed: send it
    RETRIGGERED = "retriggered"  # done (``retriggered`` or ``already_retriggered``)
    IN_DOUBT = "in_doubt"  # a request may have landed: send only if told to
    DUPLICATE = "duplicate"  # already admitted in this invocation


_PRIOR = {
    "pending": PriorState.PENDING,
    "not_attempted": PriorState.PENDING,
    "failed": PriorState.PENDING,
    "retriggered": PriorState.RETRIGGERED,
    "already_retriggered": PriorState.RETRIGGERED,
    "in_doubt": PriorState.IN_DOUBT,
    "in_flight": PriorState.IN_DOUBT,
}


class Admission(NamedTuple):
    """The answer to ``Ledger.admit``; ``recorded`` is the ledger's state of the run.

    A named tuple rather than a frozen dataclass: a resume builds one per run, and this is
    built five times faster.
    """

    state: PriorState
    recorded: str | None = None
    new_run_id: str | None = None
    etag: str | None = None
    attempts: int = 0
    ambiguous: int = 0
    error: ErrorInfo | None = None


NEW = Admission(PriorState.NEW, "pending")
DUPLICATE = Admission(PriorState.DUPLICATE)
_new = tuple.__new__


def admission_of(row: tuple[Any, ...]) -> Admission:
    """Turn a row of :func:`lookup_sql` into the :class:`Admission` of a known run."""
    state = row[3]
    error = row[8]
    return _new(
        Admission,
        (
            _PRIOR[state],
            state,
            row[4],
            row[5],
            row[6],
            row[7],
            None if error is None else _error_info(error),
        ),
    )


def _error_info(text: str) -> ErrorInfo:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return ErrorInfo(kind="unknown", message=text)

    def get(key: str) -> str | None:
        value = obj.get(key)
        return None if value is None else str(value)

    return ErrorInfo(
        kind=get("kind") or "unknown",
        message=get("message") or "",
        error_code=get("error_code"),
        type=get("type"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchIdentity:
    """What makes two invocations the same batch; a ledger refuses any other."""

    base_url: str
    org_id: str
    sandbox: str
    op: str


class FileLock:
    """An exclusive, non-blocking ``flock`` on the state file itself, released at exit.

    The lock belongs to the file, not to the name that reached it: a symlink, a hard link or
    a relative path to the same state file meets the same lock. ``flock`` belongs to the open
    file description, so a second open in the same process is refused too, and a killed
    process leaves no stale lock behind. (SQLite's own locks are POSIX record locks, which
    ``flock`` does not touch.) The holder's pid goes in ``REALPATH.lock``, only to be named in
    the refusal.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"FileLock({self.path!r}, held={self._fd is not None})"

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateError` naming the process that holds it."""
        try:
            fd = os.open(_lock_target(self.path), os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"cannot create the state file {self.path}: {exc.strerror}") from None
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            holder = _read_pid(self.path)
            who = f" (pid {holder})" if holder else ""
            raise StateError(
                f"state file {self.path} is in use by another bulkretry process{who}; "
                "wait for it to finish or use another --state file"
            ) from None
        self._fd = fd
        _write_pid(self.path)

    def release(self) -> None:
        """Release the lock (closing the descriptor is what releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _lock_target(path: str) -> str:
    if sys.platform == "win32":  # pragma: no cover - a byte lock there would block SQLite
        return os.path.realpath(path) + ".lock"
    return path


def _pid_path(path: str) -> str:
    return os.path.realpath(path) + ".lock"


def _write_pid(path: str) -> None:
    try:
        fd = os.open(_pid_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
    except OSError:
        return  # only a nicer message depends on it
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_pid(path: str) -> str | None:
    try:
        with open(_pid_path(path), "rb") as fh:
            text = fh.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def _lock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def lock_is_held(path: str) -> bool:
    """Tell whether a process holds the lock of the state file at ``path`` (without keeping it)."""
    try:
        fd = os.open(_lock_target(path), os.O_RDONLY | _CLOEXEC)
    except OSError:
        return False
    try:
        _lock(fd)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the lock if it was taken
    return False


def precheck(path: str) -> bool:
    """Return True if ``path`` has content to inspect; refuse a non-SQLite file by its header.

    This runs before the lock is taken so that no lock file appears beside a text file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"state file {path} is not a regular file")
    if st.st_size == 0:
        return False  # a zero-byte file holds nothing to lose: it becomes a new ledger
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from None
    if header != _SQLITE_MAGIC:
        if _SQLITE_MAGIC.startswith(header):
            raise StateError(f"state file {path} is corrupt (truncated to {st.st_size} bytes)")
        raise StateError(f"{path} is not a bulkretry state file (it is not a SQLite database)")
    return True


def inspect_file(path: str, identity: BatchIdentity | None) -> bool:
    """Return True if ``path`` holds a ledger (of ``identity``), False if absent or empty.

    Raise :class:`StateError` for anything else, without writing to the file.
    """
    if not precheck(path):
        return False
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        raise StateError(f"cannot read state file {path}: {exc}") from exc
    try:
        return _check(conn, path, identity)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"state file {path} is corrupt ({exc})") from exc
    finally:
        conn.close()


def _check(conn: sqlite3.Connection, path: str, identity: BatchIdentity | None) -> bool:
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app == 0 and version == 0 and objects == 0:
        return False  # an empty database (a creation cut short) becomes a new ledger
    if app != APPLICATION_ID:
        raise StateError(f"{path} is a SQLite database but not a bulkretry state file")
    if version > FORMAT_VERSION:
        raise StateError(
            f"state file {path} was written by a newer bulkretry (format {version}; "
            f"this version reads up to format {FORMAT_VERSION})"
        )
    problems = conn.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        first = str(problems[0][0]).splitlines()[-1][:120]
        raise StateError(f"state file {path} is corrupt (SQLite quick_check: {first})")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    missing = [key for key in (*IDENTITY_FIELDS, "created_at") if key not in meta]
    if version < 1 or missing:
        raise StateError(f"state file {path} is corrupt (its batch identity is missing)")
    if identity is not None:
        wrong = [
            f"its {name} is {meta[name]!r}, not {getattr(identity, name)!r}"
            for name in IDENTITY_FIELDS
            if meta[name] != getattr(identity, name)
        ]
        if wrong:
            raise StateError(f"state file {path} belongs to another batch: " + "; ".join(wrong))
    return True


def connect_readonly(path: str) -> sqlite3.Connection:
    """Open ``path`` read-only: used to inspect a file and by ``status``."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    return conn


def connect(path: str) -> sqlite3.Connection:
    """Open the writer: WAL mode, synchronous=NORMAL (commits never fsync), a large cache."""
    # check_same_thread=False: the ledger may be opened in one thread and used in the loop's;
    # the Ledger itself never uses the writer from two threads.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StateError(f"state file {path} cannot use SQLite's WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
    except BaseException:
        conn.close()
        raise
    return conn


def create(conn: sqlite3.Connection, identity: BatchIdentity) -> None:
    """Create the schema and record ``identity``; the caller holds the transaction."""
    _run_script(conn, _DDL + _DDL_2)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
    rows = [(name, getattr(identity, name)) for name in IDENTITY_FIELDS]
    rows += [("created_at", repr(time.time())), ("invocations", "0")]
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def last_seq(conn: sqlite3.Connection) -> int:
    """Return the largest ``seq`` in the ledger (0 when empty): one step down the table's B-tree."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM runs").fetchone()[0])


def start_invocation(conn: sqlite3.Connection, identity: BatchIdentity, *, new: bool) -> int:
    """Create the ledger if ``new``, count this invocation, and turn ``in_flight`` into doubt.

    One transaction: after a crash here the file is as it was (or still empty).
    """
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if new:
            create(conn, identity)
        elif conn.execute("PRAGMA user_version").fetchone()[0] < FORMAT_VERSION:
            _run_script(conn, _DDL_2)
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        # The queue is this invocation's: what an earlier one left is read from the input again.
        conn.execute("DELETE FROM queue")
        number = int(conn.execute("SELECT value FROM meta WHERE key = 'invocations'").fetchone()[0])
        number += 1
        conn.execute("UPDATE meta SET value = ? WHERE key = 'invocations'", (str(number),))
        conn.execute(
            "INSERT INTO invocations (number, pid, started_at, updated_at) VALUES (?, ?, ?, ?)",
            (number, os.getpid(), now, now),
        )
        # A run still in flight was being sent when its process died: it may have landed.
        conn.execute(
            "UPDATE runs SET state = 'in_doubt', doubt = 1, updated_at = ? "
            "WHERE state = 'in_flight'",
            (now,),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return number
