"""What check --state reads of a batch's runs in doubt, what it records, and what a resume does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT

from bulkretry._exceptions import StateError
from bulkretry._ledger.ledger import BatchIdentity, Ledger, PriorState
from bulkretry._ledger.resolutions import CheckLedger, Resolution, claimed_runs, doubt_rows

LOST = {
    **DONE,
    "new_run_id": None,
    "etag": None,
    "ambiguous": 1,
    "http_status": 502,
    "error": {"kind": "http", "message": "HTTP 502"},
}
NOT_PROCESSED = {"kind": "not_processed", "message": "a look-up found no new run"}


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.db")


async def batch(path: str) -> None:
    """A closed batch: one run re-triggered, two in doubt after a lost answer, one fed back in
    doubt (never sent), one pending."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((run, "in.txt", i) for i, run in enumerate(("done", "lost", "also"), 1))
        ledger.admit("fed", "in.txt", 4)
        ledger.ambiguous("fed")  # a results line fed back said in_doubt
        ledger.admit("waiting", "in.txt", 5)
        for run in ("done", "lost", "also"):
            await ledger.intent(run)
        ledger.outcome("done", "retriggered", **DONE)
        ledger.outcome("lost", "in_doubt", **LOST)
        ledger.outcome("also", "in_doubt", **LOST)
        ledger.outcome("fed", "in_doubt", **{**LOST, "attempts": 0, "ambiguous": 0})


def rows(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_runs_in_doubt_come_with_the_window_the_state_file_can_vouch_for(path: str) -> None:
    """From when the invocation that first saw the run began to the run's last write."""
    await batch(path)
    ((started,),) = rows(path, "SELECT started_at FROM invocations WHERE number = 1")
    with CheckLedger.open(path, IDENT) as ledger:
        doubts = {row.run_id: row for row in ledger.doubts(in_flight_grace=30.0)}
    assert sorted(doubts) == ["also", "fed", "lost"]
    lost = doubts["lost"]
    assert (lost.since, lost.attempts, lost.ambiguous, lost.http_status) == (started, 1, 1, 502)
    assert lost.until == lost.updated_at
    assert lost.error == {"kind": "http", "message": "HTTP 502"}
    # Fed back in doubt and never sent by this batch: the state file knows no window.
    assert (doubts["fed"].since, doubts["fed"].until) == (None, None)


async def test_a_run_left_in_flight_by_a_dead_process_may_have_landed_a_timeout_later(
    path: str,
) -> None:
    """Its last write is its intent: its request may have been answered up to a timeout after."""
    await batch(path)
    rows(path, "UPDATE runs SET state = 'in_flight' WHERE run_id = 'lost'")
    with CheckLedger.open(path, IDENT) as ledger:
        (lost,) = [row for row in ledger.doubts(in_flight_grace=30.0) if row.run_id == "lost"]
    assert lost.state == "in_flight"
    assert lost.until == pytest.approx(lost.updated_at + 30.0)


async def test_new_runs_of_re_triggered_runs_are_claimed_and_candidates_only_softly(
    path: str,
) -> None:
    """A clear answer's run is claimed; a candidate of a resolved run may be anybody's."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        error = {"kind": "ambiguous_match", "message": "…", "candidates": ["c-1", "c-2"]}
        ledger.record([Resolution("lost", "retriggered", None, None, error)])
        hard, soft = ledger.claimed({"new-1", "c-1", "c-9"})
    assert (hard, soft) == ({"new-1"}, {"c-1"})


async def test_a_verdict_is_recorded_only_for_a_run_still_in_doubt(path: str) -> None:
    """retriggered clears the doubt with its new run; a run no longer in doubt is untouched."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        changed = ledger.record(
            [
                Resolution("lost", "retriggered", "new-2", '"e2"', None),
                Resolution("also", "not_attempted", None, None, NOT_PROCESSED),
                Resolution("done", "not_attempted", None, None, NOT_PROCESSED),
            ]
        )
    assert changed == 2
    state = {r[0]: r[1:] for r in rows(path, "SELECT run_id, state, doubt, new_run_id FROM runs")}
    assert state["lost"] == ("retriggered", 0, "new-2")
    assert state["also"] == ("not_attempted", 0, None)
    assert state["done"] == ("retriggered", 0, "new-1")


async def test_a_resume_sends_a_run_not_processed_and_never_one_found_re_triggered(
    path: str,
) -> None:
    """What the next run --state sees: the first pending (queued with no doubt), the other done."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        ledger.record(
            [
                Resolution("lost", "retriggered", "new-2", '"e2"', None),
                Resolution("also", "not_attempted", None, None, NOT_PROCESSED),
            ]
        )
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("also", "in.txt", 3).state is PriorState.PENDING
        found = ledger.admit("lost", "in.txt", 2)
        assert (found.state, found.new_run_id) == (PriorState.RETRIGGERED, "new-2")
    with Ledger.open(path, IDENT) as ledger:  # --resume: no input, the state file's runs
        ledger.enqueue_unfinished(path)
        await ledger.flush()
        waiting = {run: doubt for *_, run, _, _, doubt in ledger.waiting(0, 0)}
    assert waiting == {"also": 0, "fed": 1, "waiting": 0}


async def test_check_counts_no_invocation_and_lets_the_next_batch_open_the_file(
    path: str,
) -> None:
    await batch(path)
    before = rows(path, "SELECT value FROM meta WHERE key = 'invocations'")
    with CheckLedger.open(path, IDENT) as ledger:
        ledger.doubts(in_flight_grace=1.0)
    assert rows(path, "SELECT value FROM meta WHERE key = 'invocations'") == before
    Ledger.open(path, IDENT).close()


async def test_a_state_file_a_running_batch_holds_is_refused(path: str) -> None:
    """A live batch may still write its runs' outcomes: check waits for it to end."""
    await batch(path)
    with Ledger.open(path, IDENT), pytest.raises(StateError, match="in use by a running batch"):
        CheckLedger.open(path, IDENT)


async def test_a_state_file_of_another_batch_is_refused_and_left_untouched(path: str) -> None:
    await batch(path)
    other = BatchIdentity(
        base_url=IDENT.base_url, org_id="X@AdobeOrg", sandbox="dev", op="re-trigger"
    )
    with pytest.raises(StateError, match="belongs to another batch"):
        CheckLedger.open(path, other)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"", "is empty"), (b"run ids\n", "not a bulkretry state file")],
)
def test_a_missing_empty_or_foreign_file_is_refused(
    path: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        Path(path).write_bytes(content)
    with pytest.raises(StateError, match=message):
        CheckLedger.open(path, IDENT)
    assert not Path(path).exists() or Path(path).read_bytes() == content


def test_doubt_rows_reads_through_any_connection(tmp_path: Path) -> None:
    """The functions take a plain connection: a batch without runs in doubt yields none."""
    path = str(tmp_path / "empty.db")
    Ledger.open(path, IDENT).close()
    conn = sqlite3.connect(path)
    try:
        assert list(doubt_rows(conn, in_flight_grace=1.0)) == []
        assert claimed_runs(conn, {"x"}) == (set(), set())
    finally:
        conn.close()


async def test_a_further_round_left_in_doubt_is_checked_like_any_run(path: str) -> None:
    """run --follow admits a round's run below every input's seq: it is a run in doubt too."""
    await batch(path)
    rows(
        path,
        "INSERT INTO runs (seq, run_id, source, line, state, seen, attempts, ambiguous, doubt, "
        "updated_at) VALUES (-1, 'round', 'in.txt', 1, 'in_doubt', 1, 1, 1, 1, 0)",
    )
    with CheckLedger.open(path, IDENT) as ledger:
        (row,) = [row for row in ledger.doubts(in_flight_grace=1.0) if row.run_id == "round"]
        assert row.since is not None
        ledger.record([Resolution("round", "retriggered", "new-3", None, None)])
    assert rows(path, "SELECT state, doubt FROM runs WHERE run_id = 'round'") == [
        ("retriggered", 0)
    ]


async def test_a_run_of_the_batch_s_own_input_is_claimed_only_softly(path: str) -> None:
    """A listed run the batch itself recovers is no proof of anybody's re-trigger."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        hard, soft = ledger.claimed({"new-1", "waiting", "elsewhere"})
    assert (hard, soft) == ({"new-1"}, {"waiting"})
