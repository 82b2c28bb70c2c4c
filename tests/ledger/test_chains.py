"""The rounds of ``run --follow`` in the state file: further rounds' runs, chains, ends."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT

from bulkretry._ledger import schema
from bulkretry._ledger.ledger import Ledger


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


def _retriggered(new_run_id: str) -> dict[str, object]:
    return {**DONE, "new_run_id": new_run_id}


async def test_a_further_round_is_guarded_like_an_input_run_and_counted_apart(path: str) -> None:
    """A round's run takes intents and outcomes, is no input run, and its chain is walked."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("r1", "in.txt", 1), ("r2", "in.txt", 2)])
        await ledger.intent("r1")
        ledger.outcome("r1", "retriggered", **_retriggered("n1"))
        ledger.ended("n1", "failed", "FAILED", [("E-1", "boom")])
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1)
        await ledger.intent("n1")
        ledger.outcome("n1", "retriggered", **_retriggered("n2"))
        ledger.ended("n2", "success", "success")
        await ledger.flush()
    with Ledger.open(path, IDENT) as ledger:
        links = ledger.chain("n1")
        assert [link.run_id for link in links] == ["n1", "n2"]
        assert (links[0].final, links[0].errors) == ("failed", (("E-1", "boom"),))
        assert (links[0].round_state, links[0].round_new_run_id) == ("retriggered", "n2")
        assert (links[1].final, links[1].round_state) == ("success", None)
        # The input's runs only: counts, resume and lists never see the round's run.
        assert sum(ledger.counts().values()) == 2
        assert [run_id for run_id, _, _ in ledger.resume_ids()] == ["r1", "r2"]
        assert list(ledger.list("retriggered")) == ["r1"]
        # An input line naming the round's run finds it re-triggered: it is not sent again.
        assert ledger.admit("n1", "again.txt", 1).state.value == "retriggered"


async def test_a_round_on_the_wire_at_a_crash_may_not_be_sent_again(path: str) -> None:
    """in_flight at a crash -> in_doubt at reopen: add_round says no, and its chain says why."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("r1", "in.txt", 1)
        await ledger.intent("r1")
        ledger.outcome("r1", "retriggered", **_retriggered("n1"))
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1)
        await ledger.intent("n1")  # committed; the answer never comes (as after kill -9)
    with Ledger.open(path, IDENT) as ledger:
        (link,) = ledger.chain("n1")
        assert (link.round_state, link.round_doubt, link.sendable) == ("in_doubt", True, False)
        assert not ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1)


async def test_a_round_begun_but_never_sent_may_be_sent_by_the_resume(path: str) -> None:
    """pending (admitted, no intent) is sendable; its seq stays below every input run's."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("r1", "in.txt", 1)
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1)
        assert ledger.add_round("n9", origin="r1", number=3, source="in.txt", line=1)
        await ledger.flush()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1)
        assert ledger.chain("n1")[0].sendable
        seqs = dict(ledger._conn.execute("SELECT run_id, seq FROM runs").fetchall())
        assert seqs["n1"] < 0
        assert seqs["n9"] < seqs["n1"] < seqs["r1"]


def test_a_format_2_state_file_gains_the_rounds_tables_when_opened(path: str) -> None:
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "x", 1)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE rounds")
    conn.execute("DROP TABLE ends")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.add_round("n1", origin="run-a", number=2, source="x", line=1)
        assert ledger.chain("n1")[0].round_state == "pending"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.FORMAT_VERSION == 3
    finally:
        conn.close()
