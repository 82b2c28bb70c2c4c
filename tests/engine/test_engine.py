"""The engine end to end over faked HTTP (aioresponses): outcomes, retries, halts, accounting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

import bulkretry
from bulkretry import Credentials, Outcome, RunResult, Settings
from bulkretry._cli.progress import format_summary
from bulkretry._engine.engine import Engine

BASE = "https://platform.example.test/data/foundation/flowservice"
ACTION = re.compile(
    r"^https://platform\.example\.test/data/foundation/flowservice/runs/[^/]+/action\?op=re-trigger$"
)
RUN_A = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_B = "5fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_C = "6fb0418e-1804-45d6-8d56-dd51f05c0baf"
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


async def test_an_ambiguous_answer_is_held_and_never_sent_again_by_default(
    http: aioresponses,
) -> None:
    """With no --on-ambiguous, a 500 ends the record in_doubt after its one request."""
    http.post(ACTION, status=500, payload=flow_error("1102", 500), repeat=True)
    [result] = await collect([RUN_A], settings())
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


async def test_a_record_sleeping_out_a_backoff_gives_its_place_to_the_next_record(
    http: aioresponses,
) -> None:
    """With one place, a throttled record's Retry-After does not hold up the records behind it."""
    import asyncio

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
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    await asyncio.wait_for(engine.run(_records([RUN_A, RUN_B], RunIdValidator()), emit), 10)
    assert order == [RUN_A, RUN_B, RUN_A]
    assert {r.run_id: r.outcome for r in results} == {
        RUN_A: Outcome.RETRIGGERED,
        RUN_B: Outcome.RETRIGGERED,
    }


async def test_no_more_records_are_taken_than_places_while_none_rests(
    http: aioresponses,
) -> None:
    """Spare workers stay parked: at most `concurrency` records are in the engine's hands."""
    in_hand: list[int] = []
    engine = Engine(settings(concurrency=3))

    def answer(url: URL, **kwargs: Any) -> CallbackResult:
        in_hand.append(sum(f is not None for f in engine._workers.values()))
        return CallbackResult(payload={"id": NEW, "etag": "e"})

    http.post(ACTION, callback=answer, repeat=True)
    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(40)]
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    from bulkretry._api import _records
    from bulkretry._io.source import RunIdValidator

    await engine.run(_records(ids, RunIdValidator()), emit)
    assert len(results) == 40
    assert all(r.outcome is Outcome.RETRIGGERED for r in results)
    assert len(engine._workers) == 0
    assert max(in_hand) <= 3
    assert engine._busy == 0
