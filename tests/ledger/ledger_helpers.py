"""What the ledger's tests share: a batch identity, an answer, looks at the file from outside."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import urllib.parse
from typing import Any

from bulkretry._ledger.ledger import BatchIdentity, Ledger

IDENT = BatchIdentity(
    base_url="https://platform.example.test/data/foundation/flowservice",
    org_id="ORG@AdobeOrg",
    sandbox="prod",
    op="re-trigger",
)
#: The rest of a successful outcome, for ``ledger.outcome(run_id, state, **DONE)``.
DONE: dict[str, Any] = {
    "new_run_id": "new-1",
    "etag": '"0a00-1b2c"',
    "attempts": 1,
    "ambiguous": 0,
    "error": None,
    "http_status": 200,
    "request_id": "req-1",
}


def digest(path: str) -> str:
    """Return the SHA-256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def committed(path: str) -> dict[str, int]:
    """Count runs per state as another process would see them: committed data only."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    finally:
        conn.close()


def write_locked(path: str) -> bool:
    """Tell whether a write transaction is open on the ledger, as another writer would find."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()
    return False


def make_ledger(path: str, runs: int = 0) -> None:
    """Create a closed ledger holding ``runs`` pending runs."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((f"run-{i:06d}", "in.txt", i + 1) for i in range(runs))


def as_format(path: str, version: int) -> None:
    """Turn a closed ledger into one of an earlier format: drop what later formats added."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if version < 4:
            for column in ("sent_at", "doubt_from", "doubt_to", "unanswered"):
                conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        if version < 3:
            conn.execute("DROP TABLE rounds")
            conn.execute("DROP TABLE ends")
        if version < 2:
            conn.execute("DROP TABLE queue")
            conn.execute("DROP TABLE sources")
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()
