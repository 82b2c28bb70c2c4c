"""The ledger holds the whole batch: its queue, its inputs read, its options, its doubts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import IDENT

from bulkretry._ledger.ledger import Ledger
from bulkretry._model import ErrorInfo, Outcome

NOTHING = {
    "new_run_id": None,
    "etag": None,
    "attempts": 1,
    "ambiguous": 0,
    "http_status": None,
    "request_id": None,
}


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


def waiting_ids(ledger: Ledger) -> list[tuple[str, str, int]]:
    """Return (run_id, source, line) of every run waiting to be sent, as the engine pages them."""
    seq = turn = 0
    out = []
    while rows := ledger.waiting(seq, turn, limit=3):
        for row_seq, row_turn, run_id, source, line, _ in rows:
            seq, turn = max(seq, row_seq), max(turn, row_turn)
            out.append((run_id, source, line))
    return out


def test_new_runs_wait_in_the_ledger_itself_in_input_order(path: str) -> None:
    """Runs admitted for the first time wait as pending rows, paged in the order they came."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((f"run-{i}", "in.txt", i + 1) for i in range(7))
        assert waiting_ids(ledger) == [(f"run-{i}", "in.txt", i + 1) for i in range(7)]


def test_a_run_known_before_waits_in_the_queue_with_this_inputs_line(path: str) -> None:
    """A pending run of an earlier invocation, named again, is queued with the new line."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("run-a", "old.txt", 1), ("run-b", "old.txt", 2)])
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("run-b", "-", 9)])
        ledger.enqueue("run-b", "-", 9)
        ledger.admit_many([("run-c", "-", 10)])
        assert waiting_ids(ledger) == [("run-c", "-", 10), ("run-b", "-", 9)]


def test_unfinished_runs_the_input_did_not_name_are_queued_once(path: str) -> None:
    """The state file is the batch: its pending and not_attempted runs are finished too."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((f"run-{i}", "old.txt", i + 1) for i in range(5))
        ledger.outcome("run-0", Outcome.RETRIGGERED, **{**NOTHING, "new_run_id": "n0"}, error=None)
        ledger.outcome("run-1", Outcome.NOT_ATTEMPTED, **NOTHING, error=None)
        ledger.outcome("run-2", Outcome.IN_DOUBT, **NOTHING, error=None)
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("run-3", "-", 1)])  # named by this input: not queued again
        ledger.enqueue("run-3", "-", 1)  # as the engine does for a pending run it names
        assert ledger.enqueue_unfinished(path) == 3  # in doubt too: the engine holds it
        assert [run for run, _, _ in waiting_ids(ledger)] == ["run-3", "run-1", "run-2", "run-4"]
        assert {source for _, source, _ in waiting_ids(ledger)[1:]} == {path}


def test_an_earlier_invocations_queue_is_not_sent_again(path: str) -> None:
    """What a killed invocation queued comes from its input again, not from the old queue."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("run-a", "x", 1)])
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("run-a", "x", 1)])
        ledger.enqueue("run-a", "x", 1)
    with Ledger.open(path, IDENT) as ledger:
        assert waiting_ids(ledger) == []


def test_sources_not_read_to_their_end_are_reported_to_the_next_invocation(path: str) -> None:
    """How far each input was read survives the invocation, and only the last reader counts."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.progress("a.txt", 10, complete=True)
        ledger.progress("-", 512, complete=False)
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.unread_sources() == [("-", 512)]
    with Ledger.open(path, IDENT) as ledger:  # an invocation that read nothing changes nothing
        assert ledger.unread_sources() == [("-", 512)]
        ledger.progress("-", 900, complete=True)
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.unread_sources() == []


def test_options_are_stored_at_once_and_read_back(path: str) -> None:
    """The batch's options are committed before any request, so a kill -9 keeps them."""
    options = {"rate": 250.0, "max_retriggers": None, "token_file": "/secrets/t"}
    ledger = Ledger.open(path, IDENT)
    try:
        ledger.store_options(options)
        conn = sqlite3.connect(path)
        try:
            (value,) = conn.execute("SELECT value FROM meta WHERE key = 'options'").fetchone()
        finally:
            conn.close()
        assert '"rate":250.0' in value
    finally:
        ledger.close()
    with Ledger.inspect(path) as ledger:
        assert ledger.options() == options


def test_a_failed_outcome_never_clears_an_earlier_doubt(path: str) -> None:
    """After an ambiguous attempt, a clear refusal leaves the run in_doubt, not failed."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "x", 1)
        ledger.ambiguous("run-a")
        ledger.outcome(
            "run-a",
            Outcome.FAILED,
            **NOTHING,
            error=ErrorInfo(kind="http", message="HTTP 404"),
        )
        assert ledger.counts()["in_doubt"] == 1
        assert ledger.counts()["failed"] == 0


def test_a_retriggered_outcome_clears_the_doubt(path: str) -> None:
    """Evidence that the run was re-triggered settles it."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "x", 1)
        ledger.ambiguous("run-a")
        ledger.outcome("run-a", Outcome.RETRIGGERED, **{**NOTHING, "new_run_id": "n"}, error=None)
        assert ledger.counts()["retriggered"] == 1
