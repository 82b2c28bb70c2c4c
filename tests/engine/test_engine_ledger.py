"""The engine over a state file: input admitted ahead, and every line accounted for if it fails."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioresponses import CallbackResult, aioresponses
from conftest import virtual_time

from bulkretry import Credentials, Outcome, RunResult, Settings
from bulkretry._engine.engine import Engine
from bulkretry._exceptions import StateError
from bulkretry._io.source import InputRecord
from bulkretry._ledger.ledger import BatchIdentity, Ledger

BASE = "https://platform.example.test/data/foundation/flowservice"
ACTION = re.compile(r"^https://platform\.example\.test/.*/runs/[^/]+/action\?op=re-trigger$")
IDENT = BatchIdentity(base_url=BASE, org_id="ORG@AdobeOrg", sandbox="dev", op="re-trigger")
SETTINGS = Settings(
    base_url=BASE,
    credentials=Credentials(access_token="t", api_key="k", org_id="ORG@AdobeOrg", sandbox="dev"),
    rate=1e6,
    burst=1000,
    backoff_base=0.0,
    concurrency=4,
)


#: The rest of an outcome whose answer was lost, for ``ledger.outcome(run_id, "in_doubt", ...)``.
LOST_ANSWER: dict[str, object] = {
    "new_run_id": None,
    "etag": None,
    "attempts": 1,
    "ambiguous": 1,
    "error": None,
    "http_status": 502,
    "request_id": None,
}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


async def batches(count: int, size: int) -> AsyncIterator[list[InputRecord]]:
    records = [InputRecord("in.txt", i + 1, uuid(i), uuid(i)) for i in range(count)]
    records.insert(5, InputRecord("in.txt", 0, None, "junk", error="not a run ID"))
    for start in range(0, len(records), size):
        yield records[start : start + size]


async def run(engine: Engine, count: int, size: int) -> list[RunResult]:
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    with aioresponses() as http:
        http.post(ACTION, payload={"id": uuid(99_999), "etag": "e"}, repeat=True)
        await engine.run(batches(count, size), emit)
    return results


async def test_every_record_is_written_once_through_the_state_file(tmp_path: Path) -> None:
    """Admitted ahead, paged out of the ledger: each line one record, each run retriggered."""
    with Ledger.open(tmp_path / "s.db", IDENT) as ledger:
        results = await run(Engine(SETTINGS, ledger=ledger), 300, 64)
        assert ledger.counts()["retriggered"] == 300
    outcomes = Counter(r.outcome for r in results)
    assert outcomes == {Outcome.RETRIGGERED: 300, Outcome.INVALID: 1}


async def test_a_state_file_that_fails_mid_input_still_accounts_for_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full state disk stops the batch, and the rest of the input is still written."""
    with Ledger.open(tmp_path / "s.db", IDENT) as ledger:
        calls = 0
        admit_many = ledger.admit_many

        def failing(records: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise StateError("cannot write state file: database or disk is full")
            return admit_many(records)  # type: ignore[arg-type]

        monkeypatch.setattr(ledger, "admit_many", failing)
        engine = Engine(SETTINGS, ledger=ledger)
        results = await run(engine, 1000, 100)
    assert engine.halt_reason is not None
    assert "disk is full" in engine.halt_reason
    lines = sorted(r.line for r in results)
    assert lines == sorted([0, *range(1, 1001)])  # every input line, once
    outcomes = Counter(r.outcome for r in results)
    assert outcomes[Outcome.NOT_ATTEMPTED] >= 800  # everything read after the failure
    assert set(outcomes) <= {Outcome.RETRIGGERED, Outcome.NOT_ATTEMPTED, Outcome.INVALID}


async def test_requests_start_while_the_input_is_still_being_admitted(tmp_path: Path) -> None:
    """An input always ready to read does not keep the loop: sending begins long before its end."""
    consumed = 0
    sent_after: list[int] = []

    async def eager() -> AsyncIterator[list[InputRecord]]:
        nonlocal consumed
        for start in range(0, 3_000, 100):  # never awaits: always a batch ahead
            consumed += 1
            yield [InputRecord("in.txt", i + 1, uuid(i), "") for i in range(start, start + 100)]

    def answer(url: object, **kwargs: object) -> CallbackResult:
        sent_after.append(consumed)
        return CallbackResult(payload={"id": uuid(99_999), "etag": "e"})

    async def emit(result: RunResult) -> None:
        pass

    with Ledger.open(tmp_path / "s.db", IDENT) as ledger, aioresponses() as http:
        http.post(ACTION, callback=answer, repeat=True)
        await Engine(SETTINGS, ledger=ledger).run(eager(), emit)
    assert len(sent_after) == 3_000
    assert sent_after[0] < 10, f"the first request waited for {sent_after[0]} of 30 batches"


@pytest.mark.parametrize("room", [4, 40])
async def test_a_state_file_that_fills_up_still_accounts_for_every_line_once(
    tmp_path: Path, room: int
) -> None:
    """SQLite's own "database or disk is full" mid-input, with runs staged and requests going:
    every input line gets exactly one record, and none the file rolled back was sent."""
    sent: list[str] = []

    def answer(url: object, **kwargs: object) -> CallbackResult:
        sent.append(str(url).split("/runs/")[1].split("/")[0])
        return CallbackResult(payload={"id": uuid(99_999), "etag": "e"})

    async def emit(result: RunResult) -> None:
        results.append(result)

    results: list[RunResult] = []
    with Ledger.open(tmp_path / "s.db", IDENT) as ledger:
        pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
        ledger._conn.execute(f"PRAGMA max_page_count = {pages + room}")
        engine = Engine(SETTINGS, ledger=ledger)
        with aioresponses() as http:
            http.post(ACTION, callback=answer, repeat=True)
            await engine.run(batches(20_000, 500), emit)
    assert engine.halt_reason is not None
    assert "full" in engine.halt_reason
    assert sorted(r.line for r in results) == [0, *range(1, 20_001)]  # every line, once
    outcomes = Counter(r.outcome for r in results)
    assert outcomes[Outcome.NOT_ATTEMPTED] > 0
    assert set(outcomes) <= {Outcome.RETRIGGERED, Outcome.NOT_ATTEMPTED, Outcome.INVALID}
    retriggered = {r.run_id for r in results if r.outcome is Outcome.RETRIGGERED}
    assert retriggered == set(sent)  # sent once each, and only runs whose row was written
    assert len(sent) == len(set(sent))


@pytest.mark.parametrize("room", [8, 30])
async def test_a_line_its_evidence_settled_gets_one_record_when_the_state_file_fills(
    tmp_path: Path, room: int
) -> None:
    """A results line saying retriggered, for a run the state file does not know: its outcome
    is staged with its row, so a full disk can neither leave the row pending nor give the line
    a second record (not_attempted) when the stage is handed back."""

    async def lines() -> AsyncIterator[list[InputRecord]]:
        done = InputRecord(
            "in.txt", 1, uuid(0), "x", prior="retriggered", prior_new_run_id=uuid(5000)
        )
        yield [done, *(InputRecord("in.txt", i + 1, uuid(i), uuid(i)) for i in range(1, 3000))]

    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    with Ledger.open(tmp_path / "s.db", IDENT) as ledger:
        pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
        ledger._conn.execute(f"PRAGMA max_page_count = {pages + room}")
        engine = Engine(SETTINGS, ledger=ledger)
        with aioresponses() as http:
            http.post(ACTION, payload={"id": uuid(99_999), "etag": "e"}, repeat=True)
            await engine.run(lines(), emit)
    assert sorted(r.line for r in results) == list(range(1, 3001))
    [first] = [r for r in results if r.line == 1]
    assert first.outcome is Outcome.ALREADY_RETRIGGERED


@virtual_time
async def test_a_run_left_in_doubt_records_the_span_from_its_request_to_its_lost_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lost (502), then refused cleanly 20 s later: ``check --state`` looks for its new run
    between its first request and that 502, not up to the end of its flight."""
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0 + loop.time())
    answers = iter([(0.0, 502), (20.0, 400)])

    async def answer(url: object, **kwargs: object) -> CallbackResult:
        delay, status = next(answers)
        await asyncio.sleep(delay)
        return CallbackResult(status=status, payload={"title": "no"})

    settings = dataclasses.replace(SETTINGS, on_ambiguous="retry", max_attempts=2)
    with Ledger.open(tmp_path / "s.db", IDENT) as ledger:
        engine = Engine(settings, ledger=ledger)
        start = time.time()
        results: list[RunResult] = []

        async def emit(result: RunResult) -> None:
            results.append(result)

        async def one() -> AsyncIterator[list[InputRecord]]:
            yield [InputRecord("in.txt", 1, uuid(1), uuid(1))]

        with aioresponses() as http:
            http.post(ACTION, callback=answer, repeat=True)
            await engine.run(one(), emit)
    assert [r.outcome for r in results] == [Outcome.IN_DOUBT]
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        ((sent, since, until),) = conn.execute("SELECT sent_at, doubt_from, doubt_to FROM runs")
    finally:
        conn.close()
    assert since == pytest.approx(start, abs=0.5)
    assert until == pytest.approx(start, abs=0.5)  # the 502, not the 400 twenty seconds on
    assert sent == pytest.approx(start, abs=0.5)  # the second request left at once


async def test_a_run_held_in_doubt_from_the_state_file_is_stamped_when_its_line_is_written(
    tmp_path: Path,
) -> None:
    """Held lines write no outcome, but a check --state verdict is stamped past the run's last
    write: without this stamp, the held line came later than the verdict and, fed back with
    it, kept the run held (or raised a false late_evidence on a pipe)."""
    path = tmp_path / "s.db"
    with Ledger.open(path, IDENT) as ledger:
        for i in (1, 2):
            ledger.admit(uuid(i), "in.txt", i)
            await ledger.intent(uuid(i))
            ledger.outcome(uuid(i), "in_doubt", **LOST_ANSWER)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE runs SET updated_at = 0")
    conn.close()

    async def named() -> AsyncIterator[list[InputRecord]]:
        yield [InputRecord("in.txt", 1, uuid(1), uuid(1))]  # uuid(2): held as the state's own

    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    with Ledger.open(path, IDENT) as ledger, aioresponses():
        await Engine(SETTINGS, ledger=ledger).run(named(), emit)
    assert sorted(r.outcome for r in results) == [Outcome.IN_DOUBT] * 2
    conn = sqlite3.connect(path)
    try:
        stamps = [row[0] for row in conn.execute("SELECT updated_at FROM runs")]
    finally:
        conn.close()
    assert all(stamp > 0 for stamp in stamps), stamps
