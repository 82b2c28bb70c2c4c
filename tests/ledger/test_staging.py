"""The stage: what an input adds reaches the state file in groups, whole, in the input's order."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import IDENT, committed

from bulkretry._exceptions import StateError
from bulkretry._ledger import staging
from bulkretry._ledger.admission import Admitter
from bulkretry._ledger.ledger import Ledger, PriorState
from bulkretry._ledger.staging import STAGE_AGE


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


def uuid(i: int) -> str:
    # Not in input order when sorted: the digits that vary lead.
    return f"{(i * 2654435761) % 2**32:08x}-1804-45d6-8d56-dd51f05c0baf"


def from_outside(path: str, sql: str) -> list[Any]:
    """Run ``sql`` as another process would: it sees committed data only."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(staging.time, "monotonic", clock)
    return clock


def test_admitted_runs_reach_the_file_when_the_stage_is_old_or_full(
    path: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the stage's size and age nothing is written; at either, everything is, at once."""
    monkeypatch.setattr(staging, "STAGE_MAX", 100)
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((uuid(i), "in.txt", i + 1) for i in range(50))
        ledger.write_admitted(when_due=True)
        assert committed(path) == {}
        assert ledger.staged == 50
        clock.now += STAGE_AGE
        ledger.write_admitted(when_due=True)
        assert committed(path) == {"pending": 50}
        assert ledger.staged == 0
        ledger.admit_many((uuid(i), "in.txt", i + 1) for i in range(50, 150))
        ledger.write_admitted(when_due=True)  # full: written however young
        assert committed(path) == {"pending": 150}


def test_runs_written_in_run_id_order_keep_their_place_in_the_input(path: str) -> None:
    """The seq of each run is its place in the input, over several groups, whatever the order
    the rows went in."""
    ids = [uuid(i) for i in range(300)]
    assert sorted(ids) != ids
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((run_id, "in.txt", n + 1) for n, run_id in enumerate(ids[:120]))
        ledger.write_admitted()
        ledger.admit_many((run_id, "in.txt", n + 121) for n, run_id in enumerate(ids[120:]))
    rows = from_outside(path, "SELECT seq, run_id, line FROM runs ORDER BY seq")
    assert [run_id for _, run_id, _ in rows] == ids
    assert [seq for seq, _, _ in rows] == list(range(1, 301))
    assert [line for _, _, line in rows] == list(range(1, 301))


def test_a_run_is_a_duplicate_whether_its_first_sight_is_staged_or_written(path: str) -> None:
    """Dedup spans the stage and the file: a second sight is a duplicate either way."""
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit(uuid(1), "in.txt", 1).state is PriorState.NEW
        assert ledger.admit(uuid(1), "in.txt", 2).state is PriorState.DUPLICATE
        ledger.write_admitted()
        assert ledger.admit(uuid(1), "in.txt", 3).state is PriorState.DUPLICATE
        assert ledger.knows(uuid(1))
        assert ledger.admit(uuid(2), "in.txt", 4).state is PriorState.NEW
        assert ledger.knows(uuid(2))
    assert committed(path) == {"pending": 2}


def test_a_staged_run_fed_back_in_doubt_is_written_with_its_doubt(path: str) -> None:
    """ambiguous() on a staged run is kept with it: the written row carries the doubt."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([(uuid(1), "in.txt", 1), (uuid(2), "in.txt", 2)])
        ledger.ambiguous(uuid(2))
        assert committed(path) == {}
    rows = from_outside(path, "SELECT run_id, doubt, ambiguous FROM runs ORDER BY seq")
    assert rows == [(uuid(1), 0, 0), (uuid(2), 1, 1)]


def test_progress_is_never_written_ahead_of_the_runs_it_counts(path: str, clock: Clock) -> None:
    """How far a source was read is written with the runs read so far, not before them."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((uuid(i), "in.txt", i + 1) for i in range(10))
        ledger.progress("in.txt", 10, complete=False)
        assert from_outside(path, "SELECT name, lines FROM sources") == []
        clock.now += STAGE_AGE
        ledger.write_admitted(when_due=True)
        assert from_outside(path, "SELECT name, lines, complete FROM sources") == [
            ("in.txt", 10, 0)
        ]
        assert committed(path) == {"pending": 10}


async def test_an_intent_for_a_staged_run_writes_the_stage_first(path: str) -> None:
    """A run may be sent as soon as it is admitted: its row is written before its intent."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit(uuid(1), "in.txt", 1)
        await ledger.intent(uuid(1))
        assert committed(path) == {"in_flight": 1}


def test_the_pager_sees_staged_runs_once_it_asks_for_them(path: str) -> None:
    """waiting() writes the runs staged, new and queued, before it reads."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((uuid(i), "in.txt", i + 1) for i in range(3))
        rows = ledger.waiting(0, 0)
        assert [row[2] for row in rows] == [uuid(0), uuid(1), uuid(2)]
        assert committed(path) == {"pending": 3}


def test_a_failed_write_hands_back_every_staged_run_in_input_order(path: str) -> None:
    """A full state file rolls the group back: take_unwritten() names each run it held."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit(uuid(0), "old.txt", 1)
        ledger.write_admitted()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit(uuid(0), "in.txt", 1).state is PriorState.PENDING
        ledger.enqueue(uuid(0), "in.txt", 1)
        ledger.admit_many((uuid(i), "in.txt", i + 1) for i in range(1, 2000))
        pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
        ledger._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # as if the disk filled up
        with pytest.raises(StateError, match="full"):
            ledger.write_admitted()
        lost = ledger.take_unwritten()
        assert lost == [(uuid(i), "in.txt", i + 1, False) for i in range(1, 2000)] + [
            (uuid(0), "in.txt", 1, False)
        ]
        assert ledger.staged == 0
        with pytest.raises(StateError):
            ledger.admit(uuid(5000), "in.txt", 5000)
        assert ledger.staged == 0
    assert committed(path) == {"pending": 1}


def test_an_admission_that_fails_half_way_stages_none_of_its_runs(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """admit_many is all or nothing: a read failing on its second chunk unstages the first."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit(uuid(0), "in.txt", 1)
        sort = Admitter.sort
        calls = 0

        def failing(self: Admitter, chunk: list[tuple[str, str, int]]) -> object:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise sqlite3.OperationalError("disk I/O error")
            return sort(self, chunk)

        monkeypatch.setattr(Admitter, "sort", failing)
        with pytest.raises(StateError, match="I/O"):
            ledger.admit_many((uuid(i), "in.txt", i + 1) for i in range(1, 1000))
        assert ledger.take_unwritten() == [(uuid(0), "in.txt", 1, False)]


def test_runs_handed_back_say_whether_they_were_in_doubt(path: str) -> None:
    """A run fed back in doubt, or queued in doubt from an earlier invocation, is handed back
    as such: the batch writes it in_doubt, not not_attempted, when the state file fails."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([(uuid(1), "in.txt", 1), (uuid(2), "in.txt", 2)])
        ledger.ambiguous(uuid(2))
        ledger.enqueue(uuid(3), "s.db", 3, doubt=True)
        assert ledger.take_unwritten() == [
            (uuid(1), "in.txt", 1, False),
            (uuid(2), "in.txt", 2, True),
            (uuid(3), "s.db", 3, True),
        ]


def test_an_outcome_of_a_staged_run_is_written_with_its_row_and_never_handed_back(
    path: str,
) -> None:
    """The evidence settled a new run (its record written): the outcome waits in the stage and
    goes in with the row; if the stage is lost, that run is not handed back a second time."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([(uuid(1), "in.txt", 1), (uuid(2), "in.txt", 2)])
        ledger.name_skipped(uuid(1), done=True, new_run_id=uuid(9), etag="e")
        assert committed(path) == {}
        assert ledger.take_unwritten() == [(uuid(2), "in.txt", 2, False)]
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([(uuid(1), "in.txt", 1)])
        ledger.name_skipped(uuid(1), done=True, new_run_id=uuid(9), etag="e")
    assert committed(path) == {"already_retriggered": 1}
