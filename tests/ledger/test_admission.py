"""Admission: what the ledger knew of each run the input names, across invocations, exactly."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT, make_ledger, write_locked

from bulkretry._ledger.admission import CHUNK, Admitter
from bulkretry._ledger.ledger import Admission, Ledger, PriorState
from bulkretry._ledger.staging import STAGE_MAX
from bulkretry._model import ErrorInfo, Outcome


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


def test_an_unknown_run_is_admitted_as_new(path: str) -> None:
    """The first sight of a run ID is NEW, and the ledger records it as pending."""
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("run-a", "in.txt", 1) == Admission(PriorState.NEW, "pending")
        assert ledger.counts()["pending"] == 1


def test_a_second_sight_in_one_invocation_is_a_duplicate(path: str) -> None:
    """Within one invocation, the second admit of a run ID answers DUPLICATE."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        assert ledger.admit("run-a", "other.txt", 9).state is PriorState.DUPLICATE


async def test_a_retriggered_run_is_retriggered_after_reopening(path: str) -> None:
    """A recorded re-trigger survives close and reopen, new run ID and ETag exactly as given."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        ledger.outcome("run-a", Outcome.RETRIGGERED, **DONE)
    with Ledger.open(path, IDENT) as ledger:
        admission = ledger.admit("run-a", "in.txt", 1)
        assert admission == Admission(
            PriorState.RETRIGGERED, "retriggered", "new-1", '"0a00-1b2c"', 1, 0, None, seq=1
        )
        assert ledger.admit("run-a", "in.txt", 2) == Admission(PriorState.DUPLICATE, seq=1)


def test_a_run_seen_in_an_earlier_invocation_is_not_a_duplicate(path: str) -> None:
    """A run admitted but never sent is PENDING, not DUPLICATE, in the next invocation."""
    make_ledger(path, runs=1)
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.invocation == 2
        assert ledger.admit("run-000000", "in.txt", 1).state is PriorState.PENDING


async def test_a_failed_run_is_pending_again_with_its_error(path: str) -> None:
    """A run that failed is sent again on resume; its error comes back as an ErrorInfo."""
    error = ErrorInfo(kind="http", message="run is not failed", error_code="FLOW-1", type="t")
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        ledger.outcome("run-a", "failed", **{**DONE, "new_run_id": None, "error": error})
    with Ledger.open(path, IDENT) as ledger:
        admission = ledger.admit("run-a", "in.txt", 1)
    assert (admission.state, admission.recorded, admission.error) == (
        PriorState.PENDING,
        "failed",
        error,
    )


def test_admit_many_answers_like_admit_one_by_one(tmp_path: Path) -> None:
    """Batched admission gives the same answers as single admits, across chunks and commits."""
    records = [(f"run-{i % 700}", "in.txt", i) for i in range(1500)]
    make_ledger(str(tmp_path / "a"), runs=0)
    make_ledger(str(tmp_path / "b"), runs=0)
    with Ledger.open(tmp_path / "a", IDENT, max_buffered=300) as one:
        singles = [one.admit(*record) for record in records]
    with Ledger.open(tmp_path / "b", IDENT, max_buffered=300) as many:
        batched = many.admit_many(records)
    assert singles == batched
    assert sum(a.state is PriorState.DUPLICATE for a in batched) == 800


def test_admitting_runs_of_an_earlier_invocation_writes_nothing(path: str) -> None:
    """A resume over known runs only reads: no write is buffered, no commit made, none kept."""
    make_ledger(path, runs=2000)
    records = [(f"run-{i:06d}", "in.txt", i + 1) for i in range(2000)]
    with Ledger.open(path, IDENT) as ledger:
        before = ledger.commits
        first = ledger.admit_many(records)
        again = ledger.admit_many(records[::-1])
        assert {a.state for a in first} == {PriorState.PENDING}
        assert {a.state for a in again} == {PriorState.DUPLICATE}
        assert (ledger.buffered, ledger.commits, write_locked(path)) == (0, before, False)


def _orders(known: int) -> dict[str, list[str]]:
    ids = [f"run-{i:06d}" for i in range(known)]
    fresh = [f"new-{i:06d}" for i in range(known // 2)]
    shuffled = ids[:]
    random.Random(4).shuffle(shuffled)
    return {
        "as filled": ids,
        "reversed": ids[::-1],
        "shuffled": shuffled,
        "second half first": ids[known // 2 :] + ids[: known // 2],
        "new ones between": [
            run for pair in zip(ids[: len(fresh)], fresh, strict=True) for run in pair
        ]
        + ids[len(fresh) :],
        "repeated": ids[:900] + ids[300:1200] + ids[1200:],
        "every other": ids[::2] + ids[1::2],
    }


@pytest.mark.parametrize("order", list(_orders(3000)))
def test_a_resume_admits_exactly_whatever_the_input_order(path: str, order: str) -> None:
    """Reading the ledger ahead in its own order changes no admission, in any input order."""
    make_ledger(path, runs=3000)
    stream = _orders(3000)[order]
    records = [(run_id, "in.txt", n) for n, run_id in enumerate(stream, 1)]
    expected: list[PriorState] = []
    sighted: set[str] = set()
    for run_id in stream:
        if run_id in sighted:
            expected.append(PriorState.DUPLICATE)
        else:
            expected.append(PriorState.PENDING if run_id.startswith("run-") else PriorState.NEW)
        sighted.add(run_id)
    with Ledger.open(path, IDENT) as ledger:
        got = [
            a.state
            for start in range(0, len(records), 512)
            for a in ledger.admit_many(records[start : start + 512])
        ]
    assert got == expected


def test_a_resume_in_the_ledgers_order_reads_ahead_instead_of_looking_up(path: str) -> None:
    """Over the input the ledger was filled from, no chunk needs the run_id index."""
    make_ledger(path, runs=3000)
    records = [(f"run-{i:06d}", "in.txt", i + 1) for i in range(3000)]
    conn = sqlite3.connect(path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        admitter = Admitter(conn, invocation=2, known=3000, staged={})
        admissions = [
            admission
            for start in range(0, len(records), CHUNK)
            for admission in admitter.sort(records[start : start + CHUNK])[0]
        ]
    finally:
        conn.close()
    assert {a.state for a in admissions} == {PriorState.PENDING}
    assert sum("ORDER BY seq" in sql for sql in statements) == 6  # 3000 runs, 512 a chunk
    assert not any(" IN (" in sql for sql in statements)


def test_runs_with_a_seq_no_bitmap_holds_are_deduplicated_too(path: str) -> None:
    """A file whose seq numbers are negative (a further round's run, which its chain sends:
    never the input's) or huge (edited by hand) still dedups exactly."""
    make_ledger(path, runs=3)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET seq = -5 WHERE run_id = 'run-000000'")
    conn.execute("UPDATE runs SET seq = ? WHERE run_id = 'run-000001'", (2**62,))
    conn.commit()
    conn.close()
    records = [(f"run-{i:06d}", "in.txt", i + 1) for i in range(3)]
    with Ledger.open(path, IDENT) as ledger:
        first = [a.state for a in ledger.admit_many(records)]
        assert first == [PriorState.DUPLICATE, PriorState.PENDING, PriorState.PENDING]
        assert [a.state for a in ledger.admit_many(records)] == [PriorState.DUPLICATE] * 3
        assert ledger.admit("run-new", "in.txt", 4).state is PriorState.NEW
        assert ledger.admit("run-new", "in.txt", 5).state is PriorState.DUPLICATE


@pytest.mark.slow
def test_dedup_is_exact_over_200k_ids_with_a_bounded_buffer(path: str) -> None:
    """200k IDs with a repeat every 1000th give exactly 200 duplicates; stage and buffer stay
    bounded, across the stage's writes."""
    stream: list[str] = []
    for i in range(200_000):
        stream.append(f"{i:08x}-1804-45d6-8d56-dd51f05c0baf")
        if i % 1000 == 999:
            stream.append(f"{i - 600:08x}-1804-45d6-8d56-dd51f05c0baf")
    duplicates = 0
    with Ledger.open(path, IDENT, max_buffered=4096) as ledger:
        for start in range(0, len(stream), 512):
            batch = [(run_id, "in.txt", start + n) for n, run_id in enumerate(stream[start:][:512])]
            admissions = ledger.admit_many(batch)
            duplicates += sum(a.state is PriorState.DUPLICATE for a in admissions)
            ledger.write_admitted(when_due=True)
            assert ledger.buffered < ledger.max_buffered
            assert ledger.staged < STAGE_MAX
        assert ledger.commits >= 200_000 // STAGE_MAX
        assert ledger.counts()["pending"] == 200_000
    assert duplicates == 200
