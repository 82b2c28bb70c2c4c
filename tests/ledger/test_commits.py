"""Group commits: an intent returns once durable, intents share commits, fsync is off the loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT, committed

from bulkretry._exceptions import StateError
from bulkretry._ledger.ledger import Ledger


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Every ledger's worker thread is gone once the test closes it."""
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("bulkretry-ledger")]


def test_writes_without_an_event_loop_are_committed_at_close(path: str) -> None:
    """Admissions made with no running loop are durable once the ledger is closed."""
    ledger = Ledger.open(path, IDENT)
    ledger.admit("run-a", "in.txt", 1)
    assert committed(path) == {}
    ledger.close()
    assert committed(path) == {"pending": 1}


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
        await ledger.flush()  # the admission's own commit and fsync
        before = ledger.fsyncs
        monkeypatch.setattr(os, "fsync", gated_fsync)
        task = asyncio.create_task(ledger.intent("run-a"))
        assert await asyncio.to_thread(entered.wait, 10)
        assert committed(path) == {"in_flight": 1}
        assert not task.done()
        release.set()
        await task
        assert ledger.fsyncs == before + 1
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
