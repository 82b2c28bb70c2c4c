"""The state file's format: its tables, its statements, and the check that a file is a ledger.

A ledger is a SQLite database in WAL mode::

    PRAGMA application_id   0x42524C47 ("BRLG"): marks a bulkretry ledger
    PRAGMA user_version     FORMAT_VERSION: a newer file is refused, never rewritten
    meta(key, value)        base_url, org_id, sandbox, op, created_at, invocations, options
    invocations(number, pid, started_at, updated_at)   one row per open; elapsed = their sum
    runs(seq, run_id, source, line, state, seen, attempts, ambiguous, doubt, new_run_id, etag,
         error, http_status, request_id, updated_at, sent_at, doubt_from, doubt_to, unanswered)
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
Format 1 files (no ``queue``/``sources``), format 2 files (no ``rounds``/``ends``, see
:mod:`.chains`) and format 3 files (no ``sent_at``/``doubt_from``/``doubt_to``/``unanswered``,
see :mod:`.spans`) are upgraded in place when a batch (or ``check``) opens them.

Every check in :func:`inspect_file` reads through a read-only connection: a file that is refused
is never written to (a read-only connection cannot even checkpoint a foreign WAL). The checks
live here, beside :func:`create`, because they read exactly what it writes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from functools import cache

from .._exceptions import StateError
from .chains import DDL_3
from .files import connect_readonly, precheck

# Admission and PriorState are only re-exported: importers outside the wing name them here.
from .records import IDENTITY_FIELDS, Admission, BatchIdentity, PriorState
from .spans import DDL_4, FED, SINCE, UPGRADE_4

__all__ = [
    "AMBIGUOUS",
    "APPLICATION_ID",
    "CLEAR_DOUBT",
    "ENQUEUE",
    "FOLLOWING",
    "FORMAT_VERSION",
    "IDENTITY_FIELDS",
    "INSERT",
    "INTENT",
    "NEW_PENDING",
    "OUTCOME",
    "QUEUED",
    "SETTLED",
    "SETTLING_STATES",
    "SOURCE",
    "TOUCH",
    "TOUCH_RUN",
    "UNFINISHED",
    "Admission",
    "BatchIdentity",
    "PriorState",
    "create",
    "inspect_file",
    "last_seq",
    "lookup_sql",
    "start_invocation",
    "upgrade",
]

APPLICATION_ID = 0x42524C47
FORMAT_VERSION = 4

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


#: A new run, at the ``seq`` of its place in the input; ``doubt`` (0 or 1) also counts one
#: ambiguous attempt: it was fed back in doubt, since a time not known.
INSERT = (
    "INSERT INTO runs (seq, run_id, source, line, state, seen, updated_at, doubt, ambiguous, "
    f"doubt_from) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?7, CASE WHEN ?7 THEN {FED} END)"
)
INTENT = (
    "UPDATE runs SET state = 'in_flight', attempts = attempts + 1, sent_at = ?1, updated_at = ?1 "
    "WHERE run_id = ?2"
)
#: A look-up showed the run's unclear requests were not processed: the next one starts afresh.
CLEAR_DOUBT = (
    "UPDATE runs SET doubt = 0, doubt_from = NULL, doubt_to = NULL, unanswered = NULL, "
    "updated_at = ? WHERE run_id = ?"
)
#: The request just answered may have landed (its answer lost): the doubt spans it.
AMBIGUOUS = (
    f"UPDATE runs SET ambiguous = ambiguous + 1, doubt = 1, doubt_from = {SINCE}, "
    "doubt_to = max(coalesce(doubt_to, 0), ?1), updated_at = ?1 WHERE run_id = ?2"
)
#: The run came in doubt with the input and is sent again: its earlier request, any time.
FED_DOUBT = (
    f"UPDATE runs SET ambiguous = ambiguous + 1, doubt = 1, doubt_from = {FED}, updated_at = ? "
    "WHERE run_id = ?"
)
# Neither ``not_attempted`` nor ``failed`` hides a doubt: an earlier request may have landed;
# and nothing but a newer re-trigger replaces a run known re-triggered (an old ``in_doubt``
# line fed back must not erase the new run it names).
OUTCOME = """
UPDATE runs SET
    state = CASE WHEN state IN ('retriggered', 'already_retriggered') THEN state
                 WHEN :state IN ('not_attempted', 'failed') AND (doubt OR :ambiguous > 0)
                 THEN 'in_doubt' ELSE :state END,
    doubt = CASE WHEN state IN ('retriggered', 'already_retriggered') THEN doubt
                 WHEN :state IN ('retriggered', 'already_retriggered') THEN 0
                 WHEN :state = 'in_doubt' OR :ambiguous > 0 THEN 1 ELSE doubt END,
    new_run_id = CASE WHEN state IN ('retriggered', 'already_retriggered')
                      THEN new_run_id ELSE :new_run_id END,
    etag = CASE WHEN state IN ('retriggered', 'already_retriggered') THEN etag ELSE :etag END,
    attempts = max(attempts, :attempts), ambiguous = max(ambiguous, :ambiguous),
    error = :error, http_status = :http_status, request_id = :request_id, updated_at = :now,
    doubt_from = CASE WHEN {fed_in_doubt} THEN {fed} WHEN {its_own} THEN {since}
                      ELSE doubt_from END,
    doubt_to = CASE WHEN {its_own} AND :lost IS NOT NULL THEN max(coalesce(doubt_to, 0), :lost)
                    ELSE doubt_to END,
    unanswered = CASE WHEN {its_own} AND :cut_off THEN sent_at ELSE unanswered END
WHERE run_id = :run_id
""".format(
    # Held in doubt by a results line fed in: its request may have landed at any time, so no
    # span of this batch's covers it, now or once the run is sent again.
    fed_in_doubt="(:fed AND state NOT IN ('retriggered', 'already_retriggered'))",
    # A request of this flight may have landed: an answer lost (at :lost), or the latest cut
    # off on the wire by a stop (it may land until its timeout). A doubt it only carried (an
    # earlier one's) keeps its span: a clean answer now says nothing of when that one landed.
    its_own="((:lost IS NOT NULL OR :cut_off) AND :sent "
    "AND state NOT IN ('retriggered', 'already_retriggered'))",
    since=SINCE,
    fed=FED,
)
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
TOUCH_RUN = "UPDATE runs SET updated_at = ? WHERE run_id = ?"
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


def create(conn: sqlite3.Connection, identity: BatchIdentity) -> None:
    """Create the schema and record ``identity``; the caller holds the transaction."""
    _run_script(conn, _DDL + _DDL_2 + DDL_3 + ";" + DDL_4)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
    rows = [(name, getattr(identity, name)) for name in IDENTITY_FIELDS]
    rows += [("created_at", repr(time.time())), ("invocations", "0")]
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file of an older format up to this one; the caller holds the transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < FORMAT_VERSION:
        if version < 2:
            _run_script(conn, _DDL_2)
        if version < 3:
            _run_script(conn, DDL_3)
        _run_script(conn, DDL_4 + ";" + UPGRADE_4)
        conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")


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
        else:
            upgrade(conn)
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
            f"UPDATE runs SET state = 'in_doubt', doubt = 1, updated_at = ?, doubt_from = {SINCE}, "
            "unanswered = sent_at WHERE state = 'in_flight'",
            (now,),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return number
