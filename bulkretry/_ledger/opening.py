"""Open a state file for a batch, or read-only for ``status``, in an order that protects it.

For a batch: look at the header before taking the lock (no lock file appears beside a text
file), check the file through a read-only connection before opening the writer (a refused file
is never written to), then count this invocation in one transaction. Any failure releases the
lock and closes what was opened.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Literal, NamedTuple

from .._exceptions import StateError
from . import files, schema
from .records import BatchIdentity

__all__ = ["Opened", "open_batch", "open_readonly"]


class Opened(NamedTuple):
    """A state file opened for a batch, locked for this process."""

    conn: sqlite3.Connection
    lock: files.FileLock
    invocation: int
    known: int  # the largest seq before this invocation


def open_batch(path: str, identity: BatchIdentity, *, sync: Literal["normal", "full"]) -> Opened:
    """Open (or create) the ledger at ``path`` for ``identity`` and start an invocation.

    Raise :class:`StateError` for a file of another batch, of a newer format, a corrupt or
    foreign file (none of which is written to), or a ledger another process has open.
    """
    files.precheck(path)
    lock = files.FileLock(path)
    lock.acquire()
    try:
        new = not schema.inspect_file(path, identity)
        try:
            conn = files.connect(path)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {path}: {exc}") from exc
        try:
            invocation = schema.start_invocation(conn, identity, new=new)
            known = schema.last_seq(conn)
            if sync == "full":
                # The database file's header and the directory entries of it and its WAL
                # must survive power loss too: SQLite syncs neither at synchronous=NORMAL.
                files.fsync(path)
                files.fsync(os.path.dirname(os.path.abspath(path)))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StateError(f"cannot write state file {path}: {exc}") from exc
            raise
    except BaseException:
        lock.release()
        raise
    return Opened(conn, lock, invocation, known)


def open_readonly(path: str) -> sqlite3.Connection:
    """Open an existing ledger read-only, without identity or lock, for ``bulkretry status``."""
    if not os.path.exists(path):
        raise StateError(f"state file {path} does not exist")
    if not schema.inspect_file(path, None):
        raise StateError(f"state file {path} is empty: no batch has used it yet")
    try:
        return files.connect_readonly(path)
    except sqlite3.Error as exc:
        raise StateError(f"cannot read state file {path}: {exc}") from exc
