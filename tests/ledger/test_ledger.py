"""The durable ledger: admissions, intents and outcomes across invocations, crashes and refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkretry._ledger import schema
from bulkretry._exceptions import StateError
from bulkretry._ledger.ledger import Admission, BatchIdentity, Ledger, PriorState
from bulkretry._ledger.schema import FORMAT_VERSION
from bulkretry._model import ErrorInfo, Outcome

IDENT = BatchIdentity(
    base_url="https://platform.example.test/data/foundation/flowservice",
    org_id="ORG@AdobeOrg",
    sandbox="prod",
    op="re-trigger",
)
DONE: dict[str, Any] = {
    "new_run_id": "new-1",
    "etag": '"0a00-1b2c"',
    "attempts": 1,
    "ambiguous": 0,
    "error": None,
    "http_status": 200,
    "request_id": "req-1",
}


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


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


def make_ledger(path: str, runs: int = 0) -> None:
    """Create a closed ledger holding ``runs`` pending runs."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((f"run-{i:06d}", "in.txt", i + 1) for i in range(runs))


# -- admissions across invocations ---------------------------------------------------------------


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
            PriorState.RETRIGGERED, "retriggered", "new-1", '"0a00-1b2c"', 1, 0, None
        )
        assert ledger.admit("run-a", "in.txt", 2).state is PriorState.DUPLICATE


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


@pytest.mark.parametrize("state", sorted(schema.SETTLING_STATES))
@pytest.mark.parametrize("doubt", [0, 1])
@pytest.mark.parametrize("ambiguous", [0, 2])
def test_the_settling_statement_writes_what_the_general_one_does(
    state: str, doubt: int, ambiguous: int
) -> None:
    """SETTLED, the fast path for a run's final answer, leaves the row OUTCOME would leave."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.create(conn, IDENT)
    for run_id in ("a", "b"):
        conn.execute(schema.INSERT, (run_id, "in.txt", 1, 1, 0.0))
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
        },
    )
    conn.execute(schema.SETTLED, (state, "n", "e", 2, ambiguous, error, 200, "r", 5.0, "b"))
    a, b = (
        conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()[2:]
        for run_id in ("a", "b")
    )
    assert a == b


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
        assert (ledger.buffered, ledger.commits, ledger._conn.in_transaction) == (0, before, False)


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
    with Ledger.open(path, IDENT) as ledger:
        statements: list[str] = []
        ledger._conn.set_trace_callback(statements.append)
        admissions = ledger.admit_many(records)
        ledger._conn.set_trace_callback(None)
    assert {a.state for a in admissions} == {PriorState.PENDING}
    assert sum("ORDER BY seq" in sql for sql in statements) == 6  # 3000 runs, 512 a chunk
    assert not any(" IN (" in sql for sql in statements)


def test_runs_with_a_seq_no_bitmap_holds_are_deduplicated_too(path: str) -> None:
    """A file whose seq numbers are negative or huge (edited by hand) still dedups exactly."""
    make_ledger(path, runs=3)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET seq = -5 WHERE run_id = 'run-000000'")
    conn.execute("UPDATE runs SET seq = ? WHERE run_id = 'run-000001'", (2**62,))
    conn.commit()
    conn.close()
    records = [(f"run-{i:06d}", "in.txt", i + 1) for i in range(3)]
    with Ledger.open(path, IDENT) as ledger:
        assert [a.state for a in ledger.admit_many(records)] == [PriorState.PENDING] * 3
        assert [a.state for a in ledger.admit_many(records)] == [PriorState.DUPLICATE] * 3
        assert ledger.admit("run-new", "in.txt", 4).state is PriorState.NEW
        assert ledger.admit("run-new", "in.txt", 5).state is PriorState.DUPLICATE


@pytest.mark.slow
def test_dedup_is_exact_over_200k_ids_with_a_bounded_buffer(path: str) -> None:
    """200k IDs with a repeat every 1000th give exactly 200 duplicates; the buffer stays bounded."""
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
            assert ledger.buffered < ledger.max_buffered
        assert ledger.commits >= 200_000 // (4096 + 512)
        assert ledger.counts()["pending"] == 200_000
    assert duplicates == 200


def test_writes_without_an_event_loop_are_committed_at_close(path: str) -> None:
    """Admissions made with no running loop are durable once the ledger is closed."""
    ledger = Ledger.open(path, IDENT)
    ledger.admit("run-a", "in.txt", 1)
    assert committed(path) == {}
    ledger.close()
    assert committed(path) == {"pending": 1}


# -- intents and group commit --------------------------------------------------------------------


async def test_an_intent_returns_only_once_it_is_committed(path: str) -> None:
    """When intent() returns, another process already sees the run in flight."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        assert committed(path) == {"in_flight": 1}


async def test_concurrent_intents_share_a_few_commits(path: str) -> None:
    """100 intents issued together are committed in far fewer than 100 transactions."""
    ids = [f"run-{i}" for i in range(100)]
    with Ledger.open(path, IDENT, commit_delay=0) as ledger:
        ledger.admit_many((run_id, "in.txt", n) for n, run_id in enumerate(ids))
        await ledger.flush()
        before = ledger.commits
        await asyncio.gather(*(ledger.intent(run_id) for run_id in ids))
        assert ledger.commits - before <= 2
        assert committed(path) == {"in_flight": 100}


def test_group_commits_run_on_uvloop_whose_handles_have_no_when(path: str) -> None:
    """The CLI runs on uvloop; the commit timer must not rely on TimerHandle.when()."""
    uvloop = pytest.importorskip("uvloop")
    ids = [f"run-{i}" for i in range(10)]

    async def intents() -> None:
        with Ledger.open(path, IDENT) as ledger:
            ledger.admit_many((run_id, "in.txt", n) for n, run_id in enumerate(ids))
            await asyncio.gather(*(ledger.intent(run_id) for run_id in ids))
            ledger.outcome(
                ids[0],
                "failed",
                new_run_id=None,
                etag=None,
                attempts=1,
                ambiguous=0,
                error=None,
                http_status=404,
                request_id=None,
            )
            await ledger.intent(ids[1])

    uvloop.run(intents())
    assert committed(path) == {"in_flight": 9, "failed": 1}


async def test_a_full_group_commits_without_waiting_for_the_delay(path: str) -> None:
    """group_size waiting intents are committed at once, however long the commit delay."""
    with Ledger.open(path, IDENT, commit_delay=3600, group_size=10) as ledger:
        ledger.admit_many((f"run-{i}", "in.txt", i) for i in range(10))
        await asyncio.wait_for(
            asyncio.gather(*(ledger.intent(f"run-{i}") for i in range(10))), timeout=10
        )
        assert committed(path) == {"in_flight": 10}


async def test_an_outcome_is_committed_by_the_timer_without_a_flush(path: str) -> None:
    """Buffered writes are committed within flush_interval even if nobody calls flush()."""
    with Ledger.open(path, IDENT, flush_interval=0) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        ledger.outcome("run-a", "retriggered", **DONE)
        for _ in range(3):
            await asyncio.sleep(0)
        assert committed(path) == {"retriggered": 1}


async def test_an_intent_for_a_run_never_admitted_is_refused(path: str) -> None:
    """intent() of an unknown run raises StateError rather than recording nothing."""
    with Ledger.open(path, IDENT) as ledger, pytest.raises(StateError, match="never admitted"):
        await ledger.intent("run-x")


async def test_full_sync_wakes_an_intent_only_after_fsync_in_a_worker_thread(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With sync='full' an intent returns after the WAL is fsynced, off the event loop thread."""
    entered, release = threading.Event(), threading.Event()
    threads: list[str] = []
    real_fsync = os.fsync

    def gated_fsync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(10)
        real_fsync(fd)

    with Ledger.open(path, IDENT, sync="full", commit_delay=0) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        monkeypatch.setattr(os, "fsync", gated_fsync)
        task = asyncio.create_task(ledger.intent("run-a"))
        assert await asyncio.to_thread(entered.wait, 10)
        assert committed(path) == {"in_flight": 1}
        assert not task.done()
        release.set()
        await task
        assert ledger.fsyncs == 1
    assert threads
    assert threading.main_thread().name not in threads


async def test_full_sync_intents_waiting_on_a_queued_fsync_share_it(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits made while an fsync runs share the next one instead of queueing one each."""
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def gated_fsync(fd: int) -> None:
        entered.set()
        release.wait(10)
        real_fsync(fd)

    with Ledger.open(path, IDENT, sync="full", commit_delay=0, group_size=1) as ledger:
        ledger.admit_many((f"run-{i}", "in.txt", i) for i in range(6))
        monkeypatch.setattr(os, "fsync", gated_fsync)
        first = asyncio.create_task(ledger.intent("run-0"))
        assert await asyncio.to_thread(entered.wait, 10)
        rest = [asyncio.create_task(ledger.intent(f"run-{i}")) for i in range(1, 6)]
        await asyncio.sleep(0)
        assert ledger.commits >= 6
        release.set()
        await asyncio.gather(first, *rest)
        assert ledger.fsyncs == 2


def test_normal_and_full_sync_both_commit_with_synchronous_normal(tmp_path: Path) -> None:
    """SQLite never fsyncs inside a commit (PRAGMA synchronous=1): full mode does it itself."""
    for sync in ("normal", "full"):
        with Ledger.open(tmp_path / sync, IDENT, sync=sync) as ledger:
            assert ledger._conn.execute("PRAGMA synchronous").fetchone() == (1,)


# -- crashes --------------------------------------------------------------------------------------

CRASH = """
import asyncio, os, signal, sys
from bulkretry._ledger.ledger import BatchIdentity, Ledger

async def main():
    ident = BatchIdentity(base_url=sys.argv[2], org_id=sys.argv[3], sandbox=sys.argv[4],
                          op=sys.argv[5])
    ledger = Ledger.open(sys.argv[1], ident, commit_delay=0, flush_interval=3600)
    for n, run_id in enumerate(("sent", "answered", "ambiguous", "waiting")):
        ledger.admit(run_id, "in.txt", n + 1)
    await ledger.intent("sent")
    await ledger.intent("answered")
    await ledger.intent("ambiguous")
    ledger.ambiguous("ambiguous")
    await ledger.flush()
    ledger.outcome("answered", "retriggered", new_run_id="n", etag="e", attempts=1,
                   ambiguous=0, error=None, http_status=200, request_id="r")
    ledger.admit("unrecorded", "in.txt", 9)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def crashed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger whose process was killed mid-batch (run once, copied by each test)."""
    directory = tmp_path_factory.mktemp("crashed")
    target = directory / "batch.state"
    fields = [IDENT.base_url, IDENT.org_id, IDENT.sandbox, IDENT.op]
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(target), *fields], capture_output=True, timeout=60
    )
    assert done.returncode == -9, done.stderr.decode()
    return directory


@pytest.fixture
def crashed(crashed_template: Path, tmp_path: Path) -> str:
    for file in crashed_template.iterdir():
        shutil.copy(file, tmp_path / file.name)
    return str(tmp_path / "batch.state")


@pytest.mark.slow
def test_runs_in_flight_at_a_crash_are_in_doubt_at_reopen(crashed: str) -> None:
    """A killed process leaves its sent runs IN_DOUBT and its unsent ones PENDING."""
    with Ledger.open(crashed, IDENT) as ledger:
        assert ledger.counts() == dict.fromkeys(ledger.counts(), 0) | {
            "in_doubt": 3,
            "pending": 1,
        }
        assert ledger.admit("sent", "in.txt", 1).state is PriorState.IN_DOUBT
        assert ledger.admit("waiting", "in.txt", 4).state is PriorState.PENDING


@pytest.mark.slow
def test_an_outcome_lost_in_a_crash_leaves_the_run_in_doubt_not_pending(crashed: str) -> None:
    """An outcome not yet flushed is lost, but the durable intent makes the run IN_DOUBT."""
    with Ledger.open(crashed, IDENT) as ledger:
        assert ledger.admit("answered", "in.txt", 2).state is PriorState.IN_DOUBT


@pytest.mark.slow
def test_an_ambiguous_attempt_survives_a_crash(crashed: str) -> None:
    """A flushed ambiguous mark is still there after the crash, with the run in doubt."""
    with Ledger.open(crashed, IDENT) as ledger:
        admission = ledger.admit("ambiguous", "in.txt", 3)
    assert (admission.state, admission.attempts, admission.ambiguous) == (
        PriorState.IN_DOUBT,
        1,
        1,
    )


@pytest.mark.slow
def test_a_run_admitted_after_the_last_commit_is_simply_unknown(crashed: str) -> None:
    """An admission that was never committed is forgotten: the run is NEW, never half-known."""
    with Ledger.open(crashed, IDENT) as ledger:
        assert ledger.admit("unrecorded", "in.txt", 9).state is PriorState.NEW


@pytest.mark.slow
def test_status_of_a_crashed_batch_counts_in_flight_as_in_doubt(crashed: str) -> None:
    """Read-only inspection with no live process reports in-flight runs as in doubt."""
    with Ledger.inspect(crashed) as ledger:
        assert not ledger.live
        assert ledger.counts()["in_doubt"] == 3
        assert list(ledger.list("in_doubt")) == ["sent", "answered", "ambiguous"]


async def test_not_attempted_never_hides_an_earlier_doubt(path: str) -> None:
    """A run retried from in_doubt but stopped before sending stays in_doubt."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        ledger.outcome("run-a", "in_doubt", **{**DONE, "new_run_id": None, "etag": None})
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("run-a", "in.txt", 1).state is PriorState.IN_DOUBT
        await ledger.intent("run-a")
        ledger.outcome("run-a", "not_attempted", **{**DONE, "new_run_id": None, "etag": None})
    with Ledger.open(path, IDENT) as ledger:
        admission = ledger.admit("run-a", "in.txt", 1)
    assert (admission.state, admission.attempts) == (PriorState.IN_DOUBT, 2)


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["base_url", "org_id", "sandbox", "op"])
def test_a_ledger_of_another_batch_is_refused_unchanged(path: str, field: str) -> None:
    """Another base URL, org, sandbox or op is refused, naming the field, without a write."""
    make_ledger(path, runs=3)
    before = digest(path)
    other = dataclasses.replace(IDENT, **{field: "other"})
    with pytest.raises(StateError, match=f"belongs to another batch: its {field} is"):
        Ledger.open(path, other)
    assert digest(path) == before
    Ledger.open(path, IDENT).close()  # and the refusal left no lock behind


def test_a_ledger_of_a_newer_format_is_refused_unchanged(path: str) -> None:
    """A file written by a newer bulkretry is refused and left as it is."""
    make_ledger(path, runs=3)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(StateError, match="newer bulkretry"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


def test_a_text_file_is_refused_unchanged(path: str) -> None:
    """A text file is not a SQLite database: refused, untouched, and no lock file beside it."""
    Path(path).write_text("4fb0418e-1804-45d6-8d56-dd51f05c0baf\n" * 100)
    before = digest(path)
    with pytest.raises(StateError, match="not a SQLite database"):
        Ledger.open(path, IDENT)
    assert digest(path) == before
    assert not os.path.exists(path + ".lock")


def test_a_foreign_sqlite_database_is_refused_unchanged(path: str) -> None:
    """A SQLite database that is not a ledger is refused and left as it is."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StateError, match="SQLite database but not a bulkretry state file"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


@pytest.mark.parametrize("keep", [0.5, 0.1, 50 / 4096])
def test_a_truncated_ledger_is_refused_as_corrupt_unchanged(path: str, keep: float) -> None:
    """A ledger cut short (at a page boundary or not) is corrupt, and left as it is."""
    make_ledger(path, runs=3000)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    before = digest(path)
    with pytest.raises(StateError, match="corrupt"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


def test_a_ledger_with_a_damaged_page_is_refused_as_corrupt_unchanged(path: str) -> None:
    """A page overwritten with garbage fails SQLite's quick_check: refused, left as it is."""
    make_ledger(path, runs=3000)
    data = bytearray(Path(path).read_bytes())
    data[4096 * 3 : 4096 * 4] = b"\xff" * 4096
    Path(path).write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StateError, match="corrupt"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


def test_a_directory_is_refused(tmp_path: Path) -> None:
    """A directory where the state file should be is refused in one sentence."""
    with pytest.raises(StateError, match="not a regular file"):
        Ledger.open(tmp_path, IDENT)


def test_a_zero_byte_file_becomes_a_new_ledger(path: str) -> None:
    """A zero-byte file (e.g. from mktemp or touch) holds nothing to lose: it becomes a ledger."""
    Path(path).touch()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("run-a", "in.txt", 1).state is PriorState.NEW
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.invocation == 2


def test_a_second_open_of_a_ledger_in_use_is_refused(path: str) -> None:
    """While one invocation has the ledger open, another is refused, naming the holder's pid."""
    with Ledger.open(path, IDENT) as ledger:
        holder = rf"in use by another bulkretry process \(pid {os.getpid()}\)"
        with pytest.raises(StateError, match=holder):
            Ledger.open(path, IDENT)
        assert ledger.live
    Ledger.open(path, IDENT).close()


def test_every_refusal_is_one_line(path: str) -> None:
    """StateError messages are single sentences a user can read without a traceback."""
    Path(path).write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    with pytest.raises(StateError) as info:
        Ledger.open(path, IDENT)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"state file {path} is corrupt")


# -- reads ---------------------------------------------------------------------------------------


async def test_resume_ids_lists_every_run_in_first_seen_order(path: str) -> None:
    """resume_ids() streams (run_id, source, line) in the order the runs were first admitted."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("b", "one.txt", 1), ("a", "one.txt", 2)])
        ledger.admit_many((f"r{i:04d}", "two.txt", i) for i in range(2500))
        ledger.admit("b", "three.txt", 7)
    with Ledger.open(path, IDENT) as ledger:
        resumed = list(ledger.resume_ids())
        assert resumed[:3] == [("b", "one.txt", 1), ("a", "one.txt", 2), ("r0000", "two.txt", 0)]
        assert len(resumed) == 2502
        assert ledger.admit_many(resumed)[0].state is PriorState.PENDING


async def test_counts_and_list_report_every_state(path: str) -> None:
    """counts() has every state, list() yields the IDs of one in first-seen order."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((run_id, "in.txt", n) for n, run_id in enumerate("abcdef"))
        for run_id in "abcd":
            await ledger.intent(run_id)
        ledger.outcome("a", "retriggered", **DONE)
        ledger.outcome("b", "failed", **DONE)
        ledger.outcome("c", "not_attempted", **DONE)
        ledger.ambiguous("d")
        counts = ledger.counts()
        assert counts == {
            "pending": 2,
            "in_flight": 1,
            "retriggered": 1,
            "already_retriggered": 0,
            "failed": 1,
            "in_doubt": 0,
            "not_attempted": 1,
        }
        assert list(ledger.list("pending")) == ["e", "f"]
        with pytest.raises(ValueError, match="unknown state"):
            list(ledger.list("lost"))
    with Ledger.inspect(path) as ledger:
        assert list(ledger.list("in_doubt")) == ["d"]


async def test_info_reports_identity_invocations_and_rate(path: str) -> None:
    """info() carries what `bulkretry status` prints."""
    make_ledger(path, runs=0)
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await ledger.intent("a")
        ledger.outcome("a", "retriggered", **DONE)
        await ledger.flush()
        info = ledger.info()
    assert info["org_id"] == IDENT.org_id
    assert info["op"] == "re-trigger"
    assert info["invocations"] == 2
    assert (info["runs"], info["finished"], info["live"]) == (1, 1, True)
    assert isinstance(info["elapsed"], float)


async def test_status_during_a_live_batch_shows_runs_in_flight(path: str) -> None:
    """While a batch holds the ledger, inspection reports in_flight as such, not as in doubt."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        with Ledger.inspect(path) as status:
            assert status.live
            assert (status.counts()["in_flight"], status.counts()["in_doubt"]) == (1, 0)


def test_an_inspected_ledger_refuses_writes(path: str) -> None:
    """The read-only view used by `status` raises StateError on any write."""
    make_ledger(path, runs=1)
    with Ledger.inspect(path) as ledger:
        assert ledger.counts()["pending"] == 1
        with pytest.raises(StateError, match="read-only"):
            ledger.admit("run-b", "in.txt", 1)


def test_inspecting_a_missing_file_is_refused(path: str) -> None:
    """`status` on a path with no ledger says so in one sentence."""
    with pytest.raises(StateError, match="does not exist"):
        Ledger.inspect(path)


# -- failures and housekeeping -------------------------------------------------------------------


async def test_a_ledger_that_cannot_write_refuses_every_later_intent(path: str) -> None:
    """After a write fails, intents raise StateError, so no request is sent unrecorded."""
    ledger = Ledger.open(path, IDENT)
    ledger.admit("run-a", "in.txt", 1)
    ledger._conn.close()  # the next write fails as a full or vanished disk would
    with pytest.raises(StateError, match="cannot write state file"):
        await ledger.intent("run-a")
    with pytest.raises(StateError, match="cannot write state file"):
        await ledger.intent("run-a")
    ledger.close()


def test_no_sqlite_error_escapes_a_broken_ledger(path: str) -> None:
    """Every method turns a SQLite failure into StateError, for writes and reads alike."""
    ledger = Ledger.open(path, IDENT)
    ledger.admit("run-a", "in.txt", 1)
    ledger._conn.close()  # as if the disk vanished
    calls: list[Callable[[], object]] = [
        lambda: ledger.admit("run-b", "in.txt", 2),
        lambda: ledger.admit_many([("run-c", "in.txt", 3)]),
        lambda: ledger.ambiguous("run-a"),
        lambda: ledger.outcome("run-a", "failed", **DONE),
        ledger.counts,
        ledger.info,
        lambda: list(ledger.resume_ids()),
        lambda: list(ledger.list("pending")),
    ]
    for call in calls:
        with pytest.raises(StateError):
            call()
    ledger.close()


def test_an_outcome_for_a_run_never_admitted_is_refused(path: str) -> None:
    """outcome() and ambiguous() of an unknown run raise StateError instead of doing nothing."""
    with Ledger.open(path, IDENT) as ledger:
        with pytest.raises(StateError, match="never admitted"):
            ledger.outcome("run-x", "retriggered", **DONE)
        with pytest.raises(StateError, match="never admitted"):
            ledger.ambiguous("run-x")


def test_unknown_outcomes_are_refused(path: str) -> None:
    """Only final outcomes can be recorded."""
    with Ledger.open(path, IDENT) as ledger, pytest.raises(ValueError, match="duplicate"):
        ledger.outcome("run-a", "duplicate", **DONE)


def test_a_closed_ledger_refuses_use(path: str) -> None:
    """Using a ledger after close() raises StateError; closing twice is harmless."""
    ledger = Ledger.open(path, IDENT)
    ledger.close()
    ledger.close()
    with pytest.raises(StateError, match="closed"):
        ledger.admit("run-a", "in.txt", 1)


def test_repr_shows_the_ledger_state(path: str) -> None:
    """repr() shows path, invocation, sync mode and what is buffered."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        assert repr(ledger) == (
            f"Ledger({path!r}, open, invocation=1, sync='normal', buffered=1, waiting=0, "
            "commits=0, fsyncs=0)"
        )


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Every ledger's worker thread is gone once the test closes it."""
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("bulkretry-ledger")]
