"""Tests of bulkretry._engine.attempt: one attempt of one record, and the step it returns.

The client, the token provider, the batch (``Control``) and the state file are small fakes, so
that each test reads as "this answer came back, so this is the next step".
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from conftest import virtual_time

from bulkretry import Credentials, Outcome, Settings
from bulkretry._engine.attempt import MAX_RENEWALS_PER_RECORD, Attempt
from bulkretry._engine.governor import Governor
from bulkretry._engine.steps import AT_ONCE, HALT, Done, Flight, Retry, out_of_budget, stopped
from bulkretry._exceptions import StateError, TransportError
from bulkretry._http.auth import StaticToken
from bulkretry._http.client import Answer
from bulkretry._io.source import InputRecord
from bulkretry._model import ErrorInfo
from bulkretry._stats import Stats

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
OK = Answer(status=200, body={"id": NEW, "etag": '"e-1"'}, request_id="r-1")


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": "https://platform.example.test/data/foundation/flowservice",
        "credentials": Credentials(
            access_token="tok", api_key="key", org_id="ORG@AdobeOrg", sandbox="dev"
        ),
        "rate": 1e6,
        "burst": 1000,
        "backoff_base": 0.0,
        "concurrency": 4,
    }
    values.update(overrides)
    return Settings(**values)


def flow_error(status: int, code: str = "1102", **extra: Any) -> Answer:
    body = {"type": f"https://ns.adobe.com/aep/errors/FLOW-{code}-{status}", "title": "boom"}
    return Answer(status=status, body=body, **extra)


class Batch:
    """A fake of the batch around the attempt: records every stop."""

    def __init__(self) -> None:
        self.stopping = False
        self.stops: list[tuple[str | None, bool]] = []

    def stop(self, reason: str | None = None, *, hard: bool = False) -> None:
        self.stopping = True
        self.stops.append((reason, hard))


class Client:
    """A fake client: answers with the scripted answers (or raises them), in order."""

    def __init__(self, *answers: Answer | TransportError) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str]] = []

    async def retrigger(self, run_id: str, token: str) -> Answer:
        self.sent.append((run_id, token))
        answer = self.answers.pop(0)
        if isinstance(answer, TransportError):
            raise answer
        return answer


class Renewable:
    """A token provider whose tokens can be renewed."""

    def __init__(self) -> None:
        self.current = "tok-1"
        self.renewed = 0

    async def token(self) -> str:
        return self.current

    async def renew(self, stale: str) -> str:
        self.renewed += 1
        self.current = f"tok-{self.renewed + 1}"
        return self.current


class Ledger:
    """A fake state file: records what the attempt told it, in order."""

    def __init__(self, *, fail_intent: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_intent = fail_intent

    async def intent(self, run_id: str) -> None:
        if self.fail_intent:
            raise StateError("cannot write state file: database or disk is full")
        self.calls.append(("intent", run_id))

    def ambiguous(self, run_id: str) -> None:
        self.calls.append(("ambiguous", run_id))

    def outcome(self, run_id: str, outcome: Outcome, **fields: Any) -> None:
        self.calls.append(("outcome", outcome))


class Setup:
    """One attempt's surroundings, with handles on each for the assertions."""

    def __init__(
        self,
        *answers: Answer | TransportError,
        tokens: Any = None,
        ledger: Ledger | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings(**overrides)
        self.batch = Batch()
        self.client = Client(*answers)
        self.stats = Stats()
        self.governor = Governor(self.settings)
        self.ledger = ledger
        self.tokens = tokens if tokens is not None else StaticToken("tok")
        self.attempt = Attempt(
            self.batch,
            settings=self.settings,
            stats=self.stats,
            client=self.client,  # type: ignore[arg-type]
            tokens=self.tokens,
            governor=self.governor,
            ledger=self.ledger,  # type: ignore[arg-type]
            rng=random.Random(0),
        )


def flight(**fields: Any) -> Flight:
    return Flight(InputRecord("in.txt", 1, RUN, RUN), **fields)


async def test_a_success_is_done_with_the_new_run_and_its_etag() -> None:
    """A 200 naming the new run ends the record retriggered, after one request."""
    setup = Setup(OK)
    f = flight()
    step = await setup.attempt.once(f)
    assert step == Done(Outcome.RETRIGGERED, None, NEW, '"e-1"')
    assert (f.attempts, f.last_status, f.request_id, f.on_the_wire) == (1, 200, "r-1", False)
    assert (setup.stats.attempts, setup.stats.retries) == (1, 0)
    assert setup.client.sent == [(RUN, "tok")]
    assert setup.governor.cap.in_flight == 0


async def test_a_429_is_a_retry_after_its_retry_after_that_costs_no_budget_token() -> None:
    """A throttled record retries after Retry-After; the throttle, not the budget, paces it."""
    setup = Setup(Answer(status=429, body={"error_code": "429050"}, retry_after="2"))
    step = await setup.attempt.once(flight())
    assert isinstance(step, Retry)
    assert step.delay == 2.0
    assert step.budget_deadline is None
    assert step.aside  # an input record waiting its own Retry-After holds no place meanwhile
    assert setup.stats.throttled == 1
    assert setup.governor.budget.retries == 0


async def test_a_further_round_throttled_is_never_set_aside() -> None:
    """A further round never held a place of the input's: setting it aside would free one
    it does not hold, and let more input in than max_pending."""
    setup = Setup(Answer(status=429, body={"error_code": "429050"}, retry_after="2"))
    step = await setup.attempt.once(flight(chain=object()))
    assert isinstance(step, Retry)
    assert not step.aside


async def test_a_503_retry_spends_a_token_of_the_retry_budget() -> None:
    """A 503 was not processed: retried at once behind a budget token."""
    setup = Setup(flow_error(503, "1103"))
    step = await setup.attempt.once(flight())
    assert step == Retry(0.0)
    assert setup.governor.budget.retries == 1
    assert setup.stats.server_errors == 1


@virtual_time
async def test_a_retry_with_the_budget_empty_waits_for_a_token_until_the_deadline() -> None:
    """With no token left, the step asks for one, until the record's --deadline at the latest."""
    setup = Setup(flow_error(503, "1103"), deadline=120.0, rate=1.0, burst=1, retry_budget=0.1)
    await asyncio.sleep(7.0)
    while setup.governor.budget.try_spend():
        pass
    f = flight()
    step = await setup.attempt.once(f)
    assert step == Retry(0.0, budget_deadline=7.0 + 120.0)
    assert f.started == 7.0
    assert setup.stats.budget_waits == 1


async def test_a_record_the_budget_denied_is_done_without_a_request() -> None:
    """The budget stayed empty until the deadline: failed, saying so, and nothing is sent."""
    setup = Setup()
    last = ErrorInfo(kind="http", message="503 Service Unavailable")
    step = await setup.attempt.once(flight(attempts=1, denied=True, last_error=last))
    assert isinstance(step, Done)
    assert step.outcome is Outcome.FAILED
    assert step.error is not None
    assert step.error.message == (
        "503 Service Unavailable; the retry budget stayed empty until the deadline"
    )
    assert setup.client.sent == []


def test_a_denied_record_with_an_ambiguous_attempt_is_in_doubt() -> None:
    """An earlier ambiguous attempt (or the ledger's prior doubt) makes the denial in_doubt."""
    assert out_of_budget(flight(ambiguous=1)).outcome is Outcome.IN_DOUBT
    assert out_of_budget(flight(prior_doubt=1)).outcome is Outcome.IN_DOUBT
    assert out_of_budget(flight()).outcome is Outcome.FAILED


async def test_an_ambiguous_500_under_hold_is_done_in_doubt() -> None:
    """--on-ambiguous hold ends a 500 in_doubt after its one request."""
    setup = Setup(flow_error(500), on_ambiguous="hold")
    f = flight()
    step = await setup.attempt.once(f)
    assert isinstance(step, Done)
    assert step.outcome is Outcome.IN_DOUBT
    assert (f.ambiguous, setup.stats.ambiguous_attempts) == (1, 1)


async def test_a_timeout_after_sending_under_retry_is_an_ambiguous_retry() -> None:
    """A request that may have landed counts as ambiguous, and --on-ambiguous retry retries it."""
    answer = TransportError("timed out", kind="timeout", sent=True)
    setup = Setup(answer, on_ambiguous="retry")
    f = flight()
    step = await setup.attempt.once(f)
    assert isinstance(step, Retry)
    assert (f.ambiguous, setup.stats.network_errors) == (1, 1)


async def test_a_404_in_flow_services_format_is_done_failed() -> None:
    """A run that does not exist fails alone; the batch goes on."""
    setup = Setup(flow_error(404, "1101"))
    step = await setup.attempt.once(flight())
    assert isinstance(step, Done)
    assert step.outcome is Outcome.FAILED
    assert setup.batch.stops == []


async def test_a_403_halts_the_batch() -> None:
    """A refused credential stops the batch, with the reason, and the record is HALT."""
    setup = Setup(
        Answer(status=403, body={"error_code": "403003", "message": "Api Key is invalid"})
    )
    step = await setup.attempt.once(flight())
    assert step is HALT
    [(reason, hard)] = setup.batch.stops
    assert reason is not None
    assert "403" in reason
    assert not hard


async def test_nothing_is_sent_once_the_batch_is_stopping() -> None:
    """A stop before the attempt: HALT at once, no slot taken, no request."""
    setup = Setup(OK)
    setup.batch.stopping = True
    assert await setup.attempt.once(flight()) is HALT
    assert setup.client.sent == []
    assert setup.governor.throttle.acquired_count == 0


async def test_reaching_max_retriggers_halts_before_the_request() -> None:
    """Once --max-retriggers successes are in, no request leaves: the batch stops saying so."""
    setup = Setup(OK, max_retriggers=1)
    setup.governor.retriggered = 1
    assert await setup.attempt.once(flight()) is HALT
    assert setup.batch.stops == [("reached --max-retriggers 1", False)]
    assert setup.client.sent == []


async def test_a_refused_token_is_renewed_and_the_record_retried_at_once() -> None:
    """A 401 401013 with a renewable token: one renewal, then the next attempt at once."""
    tokens = Renewable()
    refused = Answer(
        status=401, body={"error_code": "401013", "message": "Oauth token is not valid"}
    )
    setup = Setup(refused, OK, tokens=tokens)
    f = flight()
    assert await setup.attempt.once(f) is AT_ONCE
    assert (tokens.renewed, setup.stats.token_renewals, f.renewals) == (1, 1, 1)
    assert await setup.attempt.once(f) == Done(Outcome.RETRIGGERED, None, NEW, '"e-1"')
    assert setup.client.sent == [(RUN, "tok-1"), (RUN, "tok-2")]


async def test_renewals_of_one_record_stop_after_the_maximum() -> None:
    """An API that refuses fresh tokens too is not asked again and again: the batch halts."""
    refused = Answer(
        status=401, body={"error_code": "401013", "message": "Oauth token is not valid"}
    )
    setup = Setup(refused, tokens=Renewable())
    step = await setup.attempt.once(flight(renewals=MAX_RENEWALS_PER_RECORD))
    assert step is HALT
    reason = setup.batch.stops[0][0]
    assert reason is not None
    assert "freshly renewed" in reason


async def test_a_static_token_refused_with_401013_halts() -> None:
    """A given token cannot be renewed: the batch stops, naming 401013."""
    refused = Answer(
        status=401, body={"error_code": "401013", "message": "Oauth token is not valid"}
    )
    setup = Setup(refused)
    assert await setup.attempt.once(flight()) is HALT
    reason = setup.batch.stops[0][0]
    assert reason is not None
    assert "401013" in reason


async def test_the_intent_is_recorded_before_the_send_and_a_safe_wait_after_a_503() -> None:
    """With a state file: intent, then the request; a 503 leaves the run not_attempted there."""
    ledger = Ledger()
    setup = Setup(flow_error(503, "1103"), ledger=ledger)
    await setup.attempt.once(flight())
    assert ledger.calls == [("intent", RUN), ("outcome", Outcome.NOT_ATTEMPTED)]


async def test_an_ambiguous_answer_marks_the_run_in_doubt_while_it_waits() -> None:
    """With a state file and --on-ambiguous retry, a 502 marks the run ambiguous meanwhile."""
    ledger = Ledger()
    setup = Setup(Answer(status=502, body="bad gateway"), ledger=ledger, on_ambiguous="retry")
    await setup.attempt.once(flight())
    assert ledger.calls == [("intent", RUN), ("ambiguous", RUN)]


async def test_a_state_file_failing_on_the_intent_halts_hard_and_sends_nothing() -> None:
    """No intent, no request: the slot goes back and the batch stops at once."""
    setup = Setup(OK, ledger=Ledger(fail_intent=True))
    assert await setup.attempt.once(flight()) is HALT
    [(reason, hard)] = setup.batch.stops
    assert reason is not None
    assert "disk is full" in reason
    assert hard
    assert setup.client.sent == []
    assert setup.governor.cap.in_flight == 0


@virtual_time
async def test_a_record_waiting_for_a_slot_is_interruptible_and_gives_its_place_back() -> None:
    """While the throttle holds it, the record says so; cancelled, it leaves nothing taken."""
    setup = Setup(OK, OK, rate=1.0, burst=1, max_retriggers=5)
    await setup.attempt.once(flight())
    waiting = flight()
    task = asyncio.ensure_future(setup.attempt.once(waiting))
    await asyncio.sleep(0)
    assert waiting.interruptible
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not waiting.interruptible
    assert setup.governor.cap.in_flight == 0
    assert setup.governor.may_send()
    assert len(setup.client.sent) == 1


def test_a_record_stopped_with_its_request_on_the_wire_is_in_doubt() -> None:
    """A hard stop cancelled the request: it may have landed."""
    done = stopped(flight(on_the_wire=True))
    assert done.outcome is Outcome.IN_DOUBT
    assert done.error is not None
    assert done.error.kind == "interrupted"


def test_a_record_stopped_after_an_ambiguous_attempt_is_in_doubt() -> None:
    """An earlier attempt may have landed: the stop cannot make it not_attempted."""
    assert stopped(flight(ambiguous=1)).outcome is Outcome.IN_DOUBT


def test_a_record_stopped_with_the_ledgers_prior_doubt_is_in_doubt() -> None:
    """An earlier invocation's request may have landed: in_doubt, kind in_doubt."""
    done = stopped(flight(prior_doubt=1))
    assert done.outcome is Outcome.IN_DOUBT
    assert done.error is not None
    assert done.error.kind == "in_doubt"


def test_a_record_stopped_before_any_doubt_is_not_attempted_with_its_last_error() -> None:
    """Only 429s, 503s or nothing before the stop: not_attempted, with what last went wrong."""
    last = ErrorInfo(kind="http", message="429 Too Many Requests")
    assert stopped(flight(last_error=last)) == Done(Outcome.NOT_ATTEMPTED, last)


class Resolving:
    """A fake resolver: hands back the scripted step and records what it was told."""

    def __init__(self, step: Any) -> None:
        self.step = step
        self.opened: list[str] = []
        self.sent: list[int] = []
        self.claimed: list[str | None] = []

    def sending(self, key: int) -> None:
        self.sent.append(key)

    def answered(self, key: int, new_run_id: str | None) -> None:
        self.claimed.append(new_run_id)

    def open(self, f: Flight, sent_wall: float) -> None:
        self.opened.append(f.record.run_id or "")
        f.checking = True

    async def resolve(self, f: Flight) -> Any:
        f.checking = False
        if self.step is AT_ONCE:
            f.ambiguous = 0
        return self.step


class CheckingLedger(Ledger):
    def clear_doubt(self, run_id: str) -> None:
        self.calls.append(("clear_doubt", run_id))


async def test_with_check_a_lost_answer_is_looked_up_before_anything_is_sent_again() -> None:
    """--on-ambiguous check: a timeout after sending waits check_delay, marked in doubt in the
    state file, and the next step is a look-up, not a request."""
    lost = TransportError("timed out", kind="timeout", sent=True)
    ledger = CheckingLedger()
    setup = Setup(lost, ledger=ledger, on_ambiguous="check", check_delay=4.0)
    found = Done(Outcome.RETRIGGERED, None, NEW, '"e"', resolved_by="lookup")
    fake = Resolving(found)
    setup.attempt.resolver = fake  # type: ignore[assignment]
    f = flight()
    assert await setup.attempt.once(f) == Retry(4.0)
    assert f.checking
    assert fake.opened == [RUN]
    assert ("ambiguous", RUN) in ledger.calls
    assert await setup.attempt.look(f) == found
    assert setup.client.sent == [(RUN, "tok")]  # looked up, never sent again
    assert setup.stats.checks == 1


async def test_with_check_a_run_found_not_processed_is_sent_again_with_its_doubt_cleared() -> None:
    """The look-up saw no new run: the doubt is cleared in the state file, and a 4xx on the
    second send may then end it failed (nothing of it was processed)."""
    lost = TransportError("timed out", kind="timeout", sent=True)
    ledger = CheckingLedger()
    setup = Setup(lost, flow_error(404, "1101"), ledger=ledger, on_ambiguous="check")
    setup.attempt.resolver = Resolving(AT_ONCE)  # type: ignore[assignment]
    f = flight()
    assert isinstance(await setup.attempt.once(f), Retry)
    assert await setup.attempt.look(f) is AT_ONCE
    assert ("clear_doubt", RUN) in ledger.calls
    step = await setup.attempt.once(f)
    assert isinstance(step, Done)
    assert step.outcome is Outcome.FAILED
    assert setup.stats.checks_resent == 1


async def test_with_check_a_clear_answer_claims_its_new_run() -> None:
    """Every clear answer's new run is told to the resolver: never a candidate for another."""
    setup = Setup(OK, on_ambiguous="check")
    fake = Resolving(None)
    setup.attempt.resolver = fake  # type: ignore[assignment]
    await setup.attempt.once(flight())
    assert fake.claimed == [NEW]
    assert len(fake.sent) == 1


async def test_a_verdict_found_off_the_workers_is_the_next_step_and_nothing_is_sent() -> None:
    """A look-up's verdict rides back on the flight: the worker hands it on, sending nothing;
    what the look-up raised is raised in the worker, where the batch sees it."""
    setup = Setup(OK)
    found = Done(Outcome.RETRIGGERED, None, NEW, '"e"', resolved_by="lookup")
    f = flight()
    f.verdict = found
    assert await setup.attempt.once(f) == found
    assert f.verdict is None
    f.verdict = RuntimeError("the look-up broke")
    with pytest.raises(RuntimeError, match="the look-up broke"):
        await setup.attempt.once(f)
    assert setup.client.sent == []
