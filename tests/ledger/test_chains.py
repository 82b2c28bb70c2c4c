"""The rounds of ``run --follow`` in the state file: further rounds' runs, chains, ends."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT, as_format

from bulkretry._ledger import schema
from bulkretry._ledger.ledger import Ledger, PriorState
from bulkretry._model import ROUND_ANOTHERS as ANOTHERS
from bulkretry._model import ROUND_MAY_HAVE_LANDED as MAY_HAVE_LANDED
from bulkretry._model import ROUND_SEND as SEND


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
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1) == SEND
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
        # Counts of the input and a resume's input never see the round's run; lists do.
        assert sum(ledger.counts().values()) == 2
        assert ledger.counts(rounds=True)["retriggered"] == 1
        assert [run_id for run_id, _, _ in ledger.resume_ids()] == ["r1", "r2"]
        assert list(ledger.list("retriggered")) == ["n1", "r1"]
        # An input line naming the round's run finds it re-triggered: it is not sent again.
        assert ledger.admit("n1", "again.txt", 1).state.value == "retriggered"


async def test_a_round_on_the_wire_at_a_crash_may_not_be_sent_again(path: str) -> None:
    """in_flight at a crash -> in_doubt at reopen: add_round says no, and its chain says why."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("r1", "in.txt", 1)
        await ledger.intent("r1")
        ledger.outcome("r1", "retriggered", **_retriggered("n1"))
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1) == SEND
        await ledger.intent("n1")  # committed; the answer never comes (as after kill -9)
    with Ledger.open(path, IDENT) as ledger:
        (link,) = ledger.chain("n1")
        assert (link.round_state, link.round_doubt, link.sendable) == ("in_doubt", True, False)
        verdict = ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1)
        assert verdict == MAY_HAVE_LANDED


async def test_a_round_begun_but_never_sent_may_be_sent_by_the_resume(path: str) -> None:
    """pending (admitted, no intent) is sendable; its seq stays below every input run's."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("r1", "in.txt", 1)
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1) == SEND
        assert ledger.add_round("n9", origin="r1", number=3, source="in.txt", line=1) == SEND
        await ledger.flush()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.add_round("n1", origin="r1", number=2, source="in.txt", line=1) == SEND
        assert ledger.chain("n1")[0].sendable
        seqs = dict(ledger._conn.execute("SELECT run_id, seq FROM runs").fetchall())
        assert seqs["n1"] < 0
        assert seqs["n9"] < seqs["n1"] < seqs["r1"]


def test_a_format_2_state_file_gains_the_rounds_tables_when_opened(path: str) -> None:
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "x", 1)
    as_format(path, 2)
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.add_round("n1", origin="run-a", number=2, source="x", line=1) == SEND
        assert ledger.chain("n1")[0].round_state == "pending"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.FORMAT_VERSION
    finally:
        conn.close()


async def test_a_run_an_input_line_names_is_never_a_round_and_a_round_never_an_input(
    path: str,
) -> None:
    """Both ways round: the state file lets one line send a run, never two."""
    with Ledger.open(path, IDENT) as ledger:
        # An input line named B (staged, not yet written): B is that line's, not A's round.
        ledger.admit_many([("a", "in.txt", 1), ("b", "in.txt", 2)])
        assert ledger.add_round("b", origin="a", number=2, source="in.txt", line=1) == ANOTHERS
        # A's round on C, begun (pending, as during --round-delay): an input line naming C
        # later is a duplicate, not a run to send; nor may another record's chain send it.
        assert ledger.add_round("c", origin="a", number=2, source="in.txt", line=1) == SEND
        assert ledger.admit("c", "more.txt", 1).state is PriorState.DUPLICATE
        assert ledger.add_round("c", origin="z", number=2, source="in.txt", line=9) == ANOTHERS
        await ledger.flush()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("c", "more.txt", 1).state is PriorState.DUPLICATE
        assert ledger.add_round("c", origin="a", number=2, source="in.txt", line=1) == SEND
        # A round refused as another's leaves no link: A's chain does not run on into B's.
        assert [link.run_id for link in ledger.chain("b")] == ["b"]
        assert ledger.chain("b")[0].round_state is None
