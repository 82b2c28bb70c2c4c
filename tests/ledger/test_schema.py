"""The ledger's format: its statements write what they promise, and older files are upgraded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import IDENT, as_format

from bulkretry._ledger import schema
from bulkretry._ledger.ledger import Ledger


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


@pytest.mark.parametrize("state", sorted(schema.SETTLING_STATES))
@pytest.mark.parametrize("doubt", [0, 1])
@pytest.mark.parametrize("ambiguous", [0, 2])
def test_the_settling_statement_writes_what_the_general_one_does(
    state: str, doubt: int, ambiguous: int
) -> None:
    """SETTLED, the fast path for a run's final answer, leaves the row OUTCOME would leave."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.create(conn, IDENT)
    for seq, run_id in enumerate(("a", "b"), 1):
        conn.execute(schema.INSERT, (seq, run_id, "in.txt", 1, 1, 0.0, 0))
        conn.execute("UPDATE runs SET doubt = ?, attempts = 3, ambiguous = 1", (doubt,))
    error = '{"kind": "http", "message": "no"}'
    conn.execute(
        schema.OUTCOME,
        {
            "run_id": "a",
            "state": state,
            "new_run_id": "n",
            "etag": "e",
            "attempts": 2,
            "ambiguous": ambiguous,
            "error": error,
            "http_status": 200,
            "request_id": "r",
            "now": 5.0,
            "sent": True,
            "lost": None,
            "fed": False,
            "cut_off": False,
        },
    )
    conn.execute(schema.SETTLED, (state, "n", "e", 2, ambiguous, error, 200, "r", 5.0, "b"))
    a, b = (
        conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()[2:]
        for run_id in ("a", "b")
    )
    assert a == b


def test_a_format_1_state_file_is_upgraded_in_place(path: str) -> None:
    """A state file of the previous format gains the queue and sources tables when opened."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "x", 1)
    as_format(path, 1)
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.knows("run-a")
        ledger.progress("-", 3, complete=False)
        ledger.enqueue("run-a", "-", 1)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.FORMAT_VERSION
    finally:
        conn.close()
