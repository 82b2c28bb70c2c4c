"""The engine end to end over faked HTTP (aioresponses): outcomes, retries, halts, accounting."""

from __future__ import annotations

import asyncio
import functools
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from conftest import virtual_time
from yarl import URL

import bulkretry
from bulkretry import Credentials, Outcome, RunResult, Settings
from bulkretry._cli.progress import format_summary
from bulkretry._engine.engine import Engine
from bulkretry._pace.throttle import Throttle

BASE = "https://platform.example.test/data/foundation/flowservice"
ACTION = re.compile(
    r"^https://platform\.example\.test/data/foundation/flowservice/runs/[^/]+/action\?op=re-trigger$"
)
RUN_A = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_B = "5fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_C = "6fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_D = "7fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
CREDENTIALS = Credentials(
    access_token="tok-secret-123", api_key="key-1", org_id="ORG@AdobeOrg", sandbox="dev"
)


def settings(**overrides: Any) -> Settings:
    """Settings for fast tests: no pacing to speak of, no backoff."""
    values: dict[str, Any] = {
        "base_url": BASE,
        "credentials": CREDENTIALS,
        "rate": 1e6,
        "burst": 1000,
        "backoff_base": 0.0,
        "concurrency": 4,
    }
    values.update(overrides)
    return Settings(**values)


def flow_error(code: str, status: int, message: str = "boom") -> dict[str, Any]:
    """Return a body in Flow Service's error format."""
    return {
        "type": f"https://ns.adobe.com/aep/errors/FLOW-{code}-{status}",
        "title": message,
        "status": status,
        "report": {"detailed-message": message, "request-id": "req-flow"},
    }


@pytest.fixture
def http() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


async def collect(ids: list[str], s: Settings) -> list[RunResult]:
    return [r async for r in bulkretry.retrigger(ids, s)]


def posts_among(http: aioresponses) -> list[str]:
    """Return the run IDs of every POST that went out, in order, beside any GET (look-ups)."""
    return [
        URL(str(url)).parts[-2]
        for (method, url), calls in http.requests.items()
        for _ in calls
        if method == "POST"
    ]


def sent_to(http: aioresponses) -> list[str]:
    """Return the run IDs of every POST that went out, in order."""
    runs = []
    for (method, url), calls in http.requests.items():
        assert method == "POST"
        runs.extend([URL(url).parts[-2]] * len(calls))
    return runs


async def test_success_reports_new_run_id_and_etag_exactly_as_returned(http: aioresponses) -> None:
    """A 200 with the docs' body becomes a retriggered record with the new ID and etag."""
    http.post(
        ACTION, payload={"id": NEW, "etag": '"1100c53e-0000"'}, headers={"x-request-id": "r-1"}
    )
    [result] = await collect([RUN_A], settings())
    assert result.outcome is Outcome.RETRIGGERED
    assert result.new_run_id == NEW
    assert result.etag == '"1100c53e-0000"'
    assert result.http_status == 200
    assert result.attempts == 1
    assert result.request_id == "r-1"
    assert result.line == 1


async def test_every_request_carries_the_seed_page_headers(http: aioresponses) -> None:
    """Authorization, x-api-key, x-gw-ims-org-id, x-sandbox-name and Content-Type are sent."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"})
    await collect([RUN_A], settings())
    [calls] = http.requests.values()
    headers = calls[0].kwargs["headers"]
    assert headers["Authorization"] == "Bearer tok-secret-123"
    assert headers["x-api-key"] == "key-1"
    assert headers["x-gw-ims-org-id"] == "ORG@AdobeOrg"
    assert headers["x-sandbox-name"] == "dev"
    assert headers["Content-Type"] == "application/json"
    assert calls[0].kwargs["allow_redirects"] is False


async def test_spec_shape_with_etag_spelled_eTag_is_read(http: aioresponses) -> None:
    """A whole run object with ``eTag`` (Adobe's spec) is a success too."""
    http.post(ACTION, payload={"id": NEW, "flowId": "f", "eTag": '"abc"'})
    [result] = await collect([RUN_A], settings())
    assert (result.outcome, result.etag) == (Outcome.RETRIGGERED, '"abc"')


async def test_429_then_success_waits_at_least_retry_after(http: aioresponses) -> None:
    """A throttled record waits its Retry-After, then succeeds on the second attempt."""
    waits: list[float] = []

    async def wait(delay: float) -> None:
        waits.append(delay)

    http.post(
        ACTION,
        status=429,
        payload={"error_code": "429050", "message": "Too many requests"},
        headers={"Retry-After": "2"},
    )
    http.post(ACTION, payload={"id": NEW, "etag": "e"})
    engine = Engine(settings(), wait=wait)
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    stats = await engine.run(_records([RUN_A], RunIdValidator()), emit)
    assert results[0].outcome is Outcome.RETRIGGERED
    assert results[0].attempts == 2
    assert waits
    assert waits[0] >= 2.0
    assert stats.throttled == 1
    assert engine.governor.throttle.throttled_count == 1


async def test_500_then_success_counts_one_ambiguous_attempt(http: aioresponses) -> None:
    """Under --on-ambiguous retry a 500 may have been processed: it counts as ambiguous."""
    http.post(ACTION, status=500, payload=flow_error("1102", 500))
    http.post(ACTION, payload={"id": NEW, "etag": "e"})
    [result] = await collect([RUN_A], settings(on_ambiguous="retry"))
    assert result.outcome is Outcome.RETRIGGERED
    assert (result.attempts, result.ambiguous_attempts) == (2, 1)


async def test_an_ambiguous_answer_under_hold_is_never_sent_again(
    http: aioresponses,
) -> None:
    """With --on-ambiguous hold, a 500 ends the record in_doubt after its one request."""
    http.post(ACTION, status=500, payload=flow_error("1102", 500), repeat=True)
    [result] = await collect([RUN_A], settings(on_ambiguous="hold"))
    assert (result.outcome, result.attempts, result.ambiguous_attempts) == (
        Outcome.IN_DOUBT,
        1,
        1,
    )
    assert sent_to(http) == [RUN_A]


@pytest.mark.parametrize("on_ambiguous", ["retry", "hold"])
async def test_a_2xx_without_a_run_id_is_in_doubt_and_never_sent_again(
    http: aioresponses, on_ambiguous: str
) -> None:
    """A 200 naming no new run may have re-triggered it, under either setting."""
    http.post(ACTION, status=200, body="<html>OK</html>", repeat=True)
    [result] = await collect([RUN_A], settings(on_ambiguous=on_ambiguous))
    assert (result.outcome, result.attempts, result.ambiguous_attempts) == (
        Outcome.IN_DOUBT,
        1,
        1,
    )
    assert result.error is not None
    assert result.error.kind == "bad_response"
    assert sent_to(http) == [RUN_A]


@pytest.mark.parametrize("on_ambiguous", ["retry", "hold"])
async def test_the_summary_counts_ambiguous_attempts(http: aioresponses, on_ambiguous: str) -> None:
    """The summary says how many attempts were ambiguous: 500s and 502s, not 503s."""
    http.post(ACTION, status=500, payload=flow_error("1102", 500))
    http.post(ACTION, status=503, payload=flow_error("1103", 503))
    http.post(ACTION, status=502, body="bad gateway")
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    engine = Engine(settings(concurrency=1, on_ambiguous=on_ambiguous))
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    stats = await engine.run(_records([RUN_A, RUN_B, RUN_C], RunIdValidator()), emit)
    ambiguous = sum(r.ambiguous_attempts for r in results)
    assert stats.ambiguous_attempts == ambiguous == 2
    assert f", {ambiguous} ambiguous attempts)" in format_summary(stats)


async def test_the_summary_says_zero_ambiguous_attempts_when_there_were_none(
    http: aioresponses,
) -> None:
    """Zero is said too, so that a clean batch is seen to be clean."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    engine = Engine(settings())

    async def emit(result: RunResult) -> None:
        pass

    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    stats = await engine.run(_records([RUN_A, RUN_B], RunIdValidator()), emit)
    assert stats.ambiguous_attempts == 0
    assert ", 0 ambiguous attempts)" in format_summary(stats)


async def test_state_conflict_after_ambiguous_attempt_is_in_doubt(http: aioresponses) -> None:
    """A 502 then 'not allowed in the current state' means the first one probably went through."""
    http.post(ACTION, status=502, body="bad gateway")
    http.post(ACTION, status=400, payload=flow_error("1409", 400, "operation not allowed"))
    [result] = await collect([RUN_A], settings(on_ambiguous="retry"))
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.error_code == "FLOW-1409-400"


async def test_hold_policy_stops_at_the_first_ambiguous_answer(http: aioresponses) -> None:
    """With --on-ambiguous hold, a 504 ends the record in_doubt after one attempt."""
    http.post(ACTION, status=504, payload=flow_error("1104", 504))
    [result] = await collect([RUN_A], settings(on_ambiguous="hold"))
    assert (result.outcome, result.attempts) == (Outcome.IN_DOUBT, 1)
    assert len(sent_to(http)) == 1


async def test_503_storm_gives_up_as_failed_after_max_attempts(http: aioresponses) -> None:
    """503 means not processed: after max attempts the record is failed, not in doubt."""
    http.post(ACTION, status=503, payload=flow_error("1103", 503), repeat=True)
    [result] = await collect([RUN_A], settings(max_attempts=3))
    assert (result.outcome, result.attempts, result.ambiguous_attempts) == (Outcome.FAILED, 3, 0)
    assert result.error is not None
    assert "gave up after 3 attempts" in result.error.message


async def test_not_found_fails_the_record_with_adobes_code(http: aioresponses) -> None:
    """A 404 in Flow Service's format fails that record only."""
    http.post(ACTION, status=404, payload=flow_error("1101", 404, "run not found"))
    http.post(ACTION, payload={"id": NEW, "etag": "e"})
    results = await collect([RUN_A, RUN_B], settings(concurrency=1))
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.RETRIGGERED]
    assert results[0].error is not None
    assert results[0].error.error_code == "FLOW-1101-404"
    assert results[0].error.kind == "http"


async def test_403_halts_the_batch_and_the_rest_is_not_attempted(http: aioresponses) -> None:
    """A refused credential would fail every record alike: stop at once."""
    http.post(ACTION, status=403, payload={"error_code": "403003", "message": "Api Key is invalid"})
    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(50)]
    engine = Engine(settings(concurrency=1))
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    await engine.run(_records(ids, RunIdValidator()), emit)
    assert engine.halt_reason is not None
    assert "403" in engine.halt_reason
    assert len(results) == 50
    assert len(sent_to(http)) == 1
    assert {r.outcome for r in results} == {Outcome.NOT_ATTEMPTED}


async def test_static_token_refused_with_401013_halts_with_a_clear_message(
    http: aioresponses,
) -> None:
    """An expired static token cannot be renewed: the batch stops saying so."""
    http.post(
        ACTION, status=401, payload={"error_code": "401013", "message": "Oauth token is not valid"}
    )
    engine = Engine(settings())
    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    async def emit(result: RunResult) -> None:
        pass

    await engine.run(_records([RUN_A], RunIdValidator()), emit)
    assert engine.halt_reason is not None
    assert "401013" in engine.halt_reason
    assert "tok-secret-123" not in engine.halt_reason


async def test_invalid_and_duplicate_ids_are_reported_and_never_sent(http: aioresponses) -> None:
    """Only valid, first-seen IDs reach the network; upper-case hex is a duplicate."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    ids = [RUN_A, "../../flows", RUN_A.upper(), RUN_B]
    results = await collect(ids, settings())
    by_line = {r.line: r.outcome for r in results}
    assert by_line == {
        1: Outcome.RETRIGGERED,
        2: Outcome.INVALID,
        3: Outcome.DUPLICATE,
        4: Outcome.RETRIGGERED,
    }
    assert sorted(sent_to(http)) == sorted([RUN_A, RUN_B])


async def test_dry_run_sends_nothing_and_needs_no_credentials(http: aioresponses) -> None:
    """--dry-run validates and reports would_retrigger without a request."""
    results = await collect([RUN_A, "nope"], settings(dry_run=True, credentials=None))
    assert [r.outcome for r in results] == [Outcome.WOULD_RETRIGGER, Outcome.INVALID]
    assert http.requests == {}


async def test_connect_failures_are_retried_then_fail_with_kind_network(http: aioresponses) -> None:
    """A request that never reached the server is safe to retry and not in doubt."""
    from aiohttp import ClientConnectorError
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("platform.example.test", 443, True, True, None, None, None)
    http.post(ACTION, exception=ClientConnectorError(key, OSError(111, "refused")), repeat=True)
    [result] = await collect([RUN_A], settings(max_attempts=2))
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.kind == "network"
    assert result.ambiguous_attempts == 0


async def test_timeout_after_sending_is_ambiguous(http: aioresponses) -> None:
    """A timeout waiting for the answer may hide a processed re-trigger."""
    http.post(ACTION, exception=TimeoutError(), repeat=True)
    [result] = await collect([RUN_A], settings(max_attempts=2, on_ambiguous="retry"))
    assert result.outcome is Outcome.IN_DOUBT
    assert result.ambiguous_attempts == 2
    assert result.error is not None
    assert result.error.kind == "timeout"


async def test_every_input_is_accounted_for_exactly_once(http: aioresponses) -> None:
    """Whatever the mix of answers, N inputs give N results, one per line."""
    answers = [200, 404, 500, 200, 400] * 20

    def reply(url: URL, **_: Any) -> CallbackResult:
        status = answers.pop(0) if answers else 200
        if status == 200:
            return CallbackResult(status=200, payload={"id": NEW, "etag": "e"})
        return CallbackResult(status=status, payload=flow_error("1101", status))

    http.post(ACTION, callback=reply, repeat=True)
    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(60)] + ["bad"] * 5
    results = await collect(ids, settings(concurrency=8, max_attempts=2))
    assert sorted(r.line for r in results) == list(range(1, 66))


async def test_closing_the_iterator_early_stops_sending(http: aioresponses) -> None:
    """A consumer that stops iterating stops the batch; nothing keeps running behind it."""
    http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(200)]
    iterator = bulkretry.retrigger(ids, settings(concurrency=2))
    first = await anext(iterator)
    await iterator.aclose()
    assert first.outcome is Outcome.RETRIGGERED
    assert len(sent_to(http)) < 200


async def run_engine(engine: Engine, ids: list[str]) -> list[RunResult]:
    """Run ``ids`` through ``engine``; return the results in the order they were emitted."""
    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    await engine.run(_records(ids, RunIdValidator()), emit)
    return results


class Ceiling(random.Random):
    """Full jitter at its ceiling: every backoff is as long as it may be."""

    def uniform(self, a: float, b: float) -> float:
        return b


def now() -> float:
    return asyncio.get_running_loop().time()


@virtual_time
async def test_a_record_waiting_out_a_backoff_does_not_hold_up_the_records_behind_it() -> None:
    """With one worker, B is sent while A waits out its Retry-After; A is retried after it."""
    sent: list[tuple[str, float]] = []

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        run = url.parts[-2]
        sent.append((run, now()))
        if run == RUN_A and len(sent) == 1:
            return CallbackResult(status=429, payload={}, headers={"Retry-After": "1"})
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    with aioresponses() as http:
        http.post(ACTION, callback=answer, repeat=True)
        results = await run_engine(Engine(settings(concurrency=1)), [RUN_A, RUN_B])
    assert [run for run, _ in sent] == [RUN_A, RUN_B, RUN_A]
    assert sent[2][1] >= 1.0
    assert sent[1][1] < 1.0
    assert {r.run_id: r.outcome for r in results} == {
        RUN_A: Outcome.RETRIGGERED,
        RUN_B: Outcome.RETRIGGERED,
    }


@virtual_time
async def test_requests_in_flight_never_exceed_concurrency_and_every_worker_is_used() -> None:
    """Exactly `concurrency` requests are in flight at the busiest, never more."""
    in_flight = peak = 0

    async def answer(url: URL, **kwargs: Any) -> CallbackResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.1)
        in_flight -= 1
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(40)]
    with aioresponses() as http:
        http.post(ACTION, callback=answer, repeat=True)
        results = await run_engine(Engine(settings(concurrency=3)), ids)
    assert len(results) == 40
    assert all(r.outcome is Outcome.RETRIGGERED for r in results)
    assert peak == 3
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing keeps running behind it


@virtual_time
async def test_a_soft_stop_accounts_at_once_for_records_waiting_for_their_retry() -> None:
    """A stop does not wait out a 30 s Retry-After: the record is not_attempted at once."""
    with aioresponses() as http:
        http.post(ACTION, status=429, payload={}, headers={"Retry-After": "30"})
        http.post(ACTION, payload={"id": NEW, "etag": "e"})
        engine = Engine(settings(concurrency=1, pause_after=100.0))
        asyncio.get_running_loop().call_later(5.0, engine.stop, "enough")
        results = await run_engine(engine, [RUN_A, RUN_B])
    assert now() < 30.0
    assert engine.halt_reason == "enough"
    by_run = {r.run_id: r for r in results}
    assert by_run[RUN_B].outcome is Outcome.RETRIGGERED
    waiting = by_run[RUN_A]
    assert (waiting.outcome, waiting.attempts, waiting.http_status) == (
        Outcome.NOT_ATTEMPTED,
        1,
        429,
    )
    assert waiting.error is not None
    assert "429" in waiting.error.message


@virtual_time
async def test_a_stop_makes_a_record_waiting_after_an_ambiguous_answer_in_doubt() -> None:
    """A 502 may have re-triggered the run: a stop during its backoff leaves it in_doubt."""
    with aioresponses() as http:
        http.post(ACTION, status=502, body="bad gateway")
        s = settings(concurrency=1, on_ambiguous="retry", backoff_base=10.0)
        engine = Engine(s, rng=Ceiling())
        asyncio.get_running_loop().call_later(1.0, engine.stop)
        [result] = await run_engine(engine, [RUN_A])
    assert now() < 10.0
    assert (result.outcome, result.attempts, result.ambiguous_attempts) == (
        Outcome.IN_DOUBT,
        1,
        1,
    )
    assert sent_to(http) == [RUN_A]


@virtual_time
async def test_a_retry_waits_for_the_retry_budget_and_fails_at_the_deadline_without_one() -> None:
    """No token until the record's deadline: failed, saying so, without another request."""
    s = settings(concurrency=1, rate=1.0, burst=1, retry_budget=0.1, deadline=5.0, max_attempts=9)
    engine = Engine(s)
    with aioresponses() as http:
        http.post(ACTION, status=503, payload=flow_error("1103", 503), repeat=True)
        [result] = await run_engine(engine, [RUN_A])
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.message.endswith("; the retry budget stayed empty until the deadline")
    assert result.attempts == 2
    assert engine.stats.budget_waits == 1
    assert 5.0 <= now() < 6.0


@virtual_time
async def test_a_stop_accounts_at_once_for_a_record_waiting_for_the_retry_budget() -> None:
    """A budget wait is no sleeping task: a stop ends it, and the record is not_attempted."""
    s = settings(concurrency=1, rate=1.0, burst=1, retry_budget=0.1, max_attempts=9)
    engine = Engine(s)
    with aioresponses() as http:
        http.post(ACTION, status=503, payload=flow_error("1103", 503), repeat=True)
        asyncio.get_running_loop().call_later(3.0, engine.stop)
        [result] = await run_engine(engine, [RUN_A])
    assert (result.outcome, result.attempts) == (Outcome.NOT_ATTEMPTED, 2)
    assert engine.stats.budget_waits == 1
    assert now() < 4.0


async def test_the_wait_hook_replaces_the_timer_and_frees_the_worker_meanwhile(
    http: aioresponses,
) -> None:
    """With ``wait=``, a backoff is the hook's: the next record is sent while it waits."""
    order: list[str] = []
    b_answered = asyncio.Event()

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        run = url.parts[-2]
        order.append(run)
        if run == RUN_A and order.count(RUN_A) == 1:
            return CallbackResult(status=429, payload={}, headers={"Retry-After": "1"})
        if run == RUN_B:
            b_answered.set()
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    http.post(ACTION, callback=answer, repeat=True)

    async def wait(delay: float) -> None:
        # The backoff ends only once the next record was sent: it can only be sent meanwhile.
        await b_answered.wait()

    engine = Engine(settings(concurrency=1), wait=wait)
    results = await asyncio.wait_for(run_engine(engine, [RUN_A, RUN_B]), 10)
    assert order == [RUN_A, RUN_B, RUN_A]
    assert {r.run_id: r.outcome for r in results} == {
        RUN_A: Outcome.RETRIGGERED,
        RUN_B: Outcome.RETRIGGERED,
    }


@virtual_time
async def test_the_throttle_learns_of_the_inputs_end_with_two_seconds_of_records_still_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The feeder reads two seconds' worth ahead at the rate (40 at 20/s, not 4 per worker):
    when the input ends, the throttle hears how many wait for their first send, in time to
    ease the batch's last second (Throttle.ending)."""
    told: list[int] = []
    monkeypatch.setattr(Throttle, "ending", lambda self, left: told.append(left))
    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(60)]
    with aioresponses() as http:
        http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
        results = await run_engine(Engine(settings(concurrency=2, rate=20, burst=1)), ids)
    assert len(results) == 60
    [left] = told
    assert 20 <= left <= 40


@virtual_time
async def test_a_soft_stop_cuts_short_a_wait_for_a_throttle_slot() -> None:
    """A record waiting for its slot is not_attempted at the stop, not when the slot comes."""
    s = settings(concurrency=2, rate=0.1, burst=1)
    engine = Engine(s)
    with aioresponses() as http:
        http.post(ACTION, payload={"id": NEW, "etag": "e"}, repeat=True)
        asyncio.get_running_loop().call_later(1.0, engine.stop)
        results = await run_engine(engine, [RUN_A, RUN_B, RUN_C])
    assert [r.outcome for r in sorted(results, key=lambda r: r.line)] == [
        Outcome.RETRIGGERED,
        Outcome.NOT_ATTEMPTED,
        Outcome.NOT_ATTEMPTED,
    ]
    assert sent_to(http) == [RUN_A]
    assert now() < 2.0


@virtual_time
async def test_a_hard_stop_cancels_requests_on_the_wire_and_they_are_in_doubt() -> None:
    """A hanging request cut by a hard stop may have landed: in_doubt; the rest not_attempted."""

    async def hang(url: URL, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(1000)
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    engine = Engine(settings(concurrency=1))
    with aioresponses() as http:
        http.post(ACTION, callback=hang, repeat=True)
        asyncio.get_running_loop().call_later(1.0, functools.partial(engine.stop, hard=True))
        results = await run_engine(engine, [RUN_A, RUN_B])
    assert [(r.outcome, r.attempts) for r in sorted(results, key=lambda r: r.line)] == [
        (Outcome.IN_DOUBT, 1),
        (Outcome.NOT_ATTEMPTED, 0),
    ]
    assert results[0].error is not None
    assert results[0].error.kind == "interrupted"
    assert now() < 2.0


@virtual_time
async def test_a_soft_stop_becomes_hard_once_the_grace_period_is_over() -> None:
    """Requests in flight get ``grace`` seconds to answer after a soft stop, then are cut."""

    async def hang(url: URL, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(1000)
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    engine = Engine(settings(concurrency=1), grace=5.0)
    with aioresponses() as http:
        http.post(ACTION, callback=hang, repeat=True)
        asyncio.get_running_loop().call_later(1.0, engine.stop)
        [result] = await run_engine(engine, [RUN_A])
    assert result.outcome is Outcome.IN_DOUBT
    assert 6.0 <= now() < 7.0


@virtual_time
async def test_a_lost_answers_look_up_holds_no_worker_while_it_waits() -> None:
    """Two workers, 2 requests/s: A's answer is lost, B hangs 5 s, C goes through. A's look-up
    waits for B's answer (it could claim a new run of A's flow), but in a task of its own: D
    is sent meanwhile, not after B. (A look-up that held a worker, while the other worker
    waited on a hung request, starved fresh input.)"""
    sent: list[tuple[str, float]] = []

    async def answer(url: URL, **kwargs: Any) -> CallbackResult:
        run = url.parts[-2]
        sent.append((run, now()))
        await asyncio.sleep(5.0 if run == RUN_B else 0.01)
        if run == RUN_A:
            return CallbackResult(status=502, body="bad gateway")
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    flow = "11111111-1804-45d6-8d56-dd51f05c0baf"
    with aioresponses() as http:
        http.post(ACTION, callback=answer, repeat=True)
        http.get(f"{BASE}/runs/{RUN_A}", payload={"id": RUN_A, "flowId": flow}, repeat=True)
        http.get(re.compile(rf"^{re.escape(BASE)}/runs\?"), status=500, body="down", repeat=True)
        s = settings(concurrency=2, rate=2.0, burst=1, on_ambiguous="check", check_delay=0.5)
        results = await run_engine(Engine(s), [RUN_A, RUN_B, RUN_C, RUN_D])
    assert [run for run, _ in sent] == [RUN_A, RUN_B, RUN_C, RUN_D]  # A never sent twice
    assert sent[3][1] < 5.0
    by_run = {r.run_id: r.outcome for r in results}
    assert by_run == {
        RUN_A: Outcome.IN_DOUBT,  # the listing failed: nothing is sent on a guess
        RUN_B: Outcome.RETRIGGERED,
        RUN_C: Outcome.RETRIGGERED,
        RUN_D: Outcome.RETRIGGERED,
    }


@virtual_time
async def test_a_soft_stop_lets_a_look_up_under_way_finish_and_keeps_its_verdict() -> None:
    """A's answer is lost; its look-up's listing takes 2 s and shows A's new run. A soft stop
    in the middle of it: A ends retriggered with that run (what the look-up found), not
    in_doubt, as requests in flight get to finish."""
    flow = "11111111-1804-45d6-8d56-dd51f05c0baf"
    created: list[int] = []

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        created.append(int(time.time() * 1000))  # the service made the run, then lost the answer
        return CallbackResult(status=502, body="bad gateway")

    async def listing(url: URL, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(2.0)
        run = {"id": NEW, "flowId": flow, "createdAt": created[0], "status": {"value": "failed"}}
        return CallbackResult(payload={"items": [run]})

    with aioresponses() as http:
        http.post(ACTION, callback=answer)
        http.get(f"{BASE}/runs/{RUN_A}", payload={"id": RUN_A, "flowId": flow}, repeat=True)
        http.get(re.compile(rf"^{re.escape(BASE)}/runs\?"), callback=listing, repeat=True)
        engine = Engine(settings(concurrency=1, on_ambiguous="check", check_delay=0.5))
        asyncio.get_running_loop().call_later(1.5, engine.stop, "enough")
        [result] = await run_engine(engine, [RUN_A])
    assert (result.outcome, result.new_run_id, result.resolved_by) == (
        Outcome.RETRIGGERED,
        NEW,
        "lookup",
    )
    assert posts_among(http) == [RUN_A]
