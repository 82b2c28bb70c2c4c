"""One record's attempts: acquire a slot, record the intent, send, decide, wait, again.

The engine hands each record to :meth:`Attempts.process` in a worker; what the governor, the
retry policy and the state file say is applied here, one attempt at a time. A soft stop wakes a
record that waits for a slot or a backoff (:class:`Interrupted`); a hard stop cancels it, and
:func:`stopped` accounts for it either way.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .._config import Settings
from .._exceptions import AuthenticationError, StateError, TransportError
from .._http.auth import TokenProvider
from .._http.client import Answer, FlowServiceClient
from .._io.source import InputRecord
from .._model import ErrorInfo, Outcome
from .._policy import Action, decide
from .._stats import Stats
from .governor import Governor

if TYPE_CHECKING:
    from .._ledger.ledger import Ledger
    from .engine import Engine

__all__ = ["MAX_RENEWALS_PER_RECORD", "Attempts", "Flight", "Interrupted", "Wait", "stopped"]

T = TypeVar("T")
Wait = Callable[[float], Awaitable[None]]
Result = tuple[Outcome, ErrorInfo | None, str | None, str | None]
#: 401s (401013) one record may answer with a renewal; past that the API is refusing fresh
#: tokens too (an IMS of another environment), and renewing again would loop on IMS.
MAX_RENEWALS_PER_RECORD = 3


@dataclass(slots=True)
class Flight:
    """The state of one record between its attempts; read when a stop interrupts it."""

    record: InputRecord
    #: 1 when an earlier invocation's request for the run may have landed (the ledger's doubt).
    prior_doubt: int = 0
    attempts: int = 0
    ambiguous: int = 0
    on_the_wire: bool = False
    renewals: int = 0
    interruptible: bool = False
    last_error: ErrorInfo | None = None
    last_status: int | None = None
    request_id: str | None = None


class Interrupted(Exception):
    """A soft stop woke a record that was waiting for a slot or for its backoff."""


def stopped(flight: Flight) -> tuple[Outcome, ErrorInfo | None, None, None]:
    """Account for a record that a stop caught before it was done."""
    if flight.on_the_wire or flight.ambiguous:
        error = ErrorInfo(
            kind="interrupted",
            message=(
                "the batch stopped while a request for this run was in flight; "
                "it may have been re-triggered"
            ),
        )
        return Outcome.IN_DOUBT, error, None, None
    if flight.prior_doubt:
        error = ErrorInfo(
            kind="in_doubt",
            message="an earlier request for this run may have re-triggered it; not sent again",
        )
        return Outcome.IN_DOUBT, error, None, None
    return Outcome.NOT_ATTEMPTED, flight.last_error, None, None


class Attempts:
    """The attempt loop of one batch, over its client, tokens, governor and state file."""

    def __init__(
        self,
        engine: Engine,
        *,
        client: FlowServiceClient,
        tokens: TokenProvider,
        governor: Governor,
        ledger: Ledger | None,
        wait: Wait | None,
        rng: random.Random,
    ) -> None:
        self._engine = engine
        self._settings: Settings = engine.settings
        self._stats: Stats = engine.stats
        self._client = client
        self._tokens = tokens
        self._governor = governor
        self._ledger = ledger
        self._wait = wait
        self._rng = rng
        self._token = ""

    def __repr__(self) -> str:
        return f"Attempts({self._client!r}, {self._governor!r})"

    async def first_token(self) -> None:
        """Get the batch's first token (an IMS refusal raises AuthenticationError)."""
        self._token = await self._tokens.token()

    async def _idle(self, flight: Flight, wait: Callable[[], Awaitable[T]]) -> T:
        """Await a wait that a soft stop may cut short (a slot, a backoff)."""
        if self._engine.stopping:
            raise Interrupted
        flight.interruptible = True
        try:
            result = await wait()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._engine.stopping and not self._engine.hard and task is not None:
                task.uncancel()
                raise Interrupted from None
            raise
        finally:
            flight.interruptible = False
        if self._engine.stopping:
            raise Interrupted
        return result

    async def _acquire(self, flight: Flight, gov: Governor) -> None:
        """Wait for a place under --max-retriggers, a slot of the throttle and one of the cap.

        One interruptible wait for the three (the common case waits for none of them); what was
        taken is given back if a stop comes before the request leaves.
        """
        engine = self._engine
        if engine.stopping:
            raise Interrupted
        flight.interruptible = True
        reserved = capped = False
        try:
            reserved = await gov.room()
            if reserved:
                await gov.throttle.acquire()
                await gov.cap.acquire()
                capped = True
        except BaseException as exc:
            if reserved:
                gov.unreserve()
            task = asyncio.current_task()
            if (
                isinstance(exc, asyncio.CancelledError)
                and engine.stopping
                and not engine.hard
                and task is not None
            ):
                task.uncancel()
                raise Interrupted from None
            raise
        finally:
            flight.interruptible = False
        if not reserved:
            engine.stop(f"reached --max-retriggers {gov.max_retriggers}")
            raise Interrupted
        if engine.stopping:
            if capped:
                gov.abandon()
            raise Interrupted

    async def _rest(self, flight: Flight, wait: Callable[[], Awaitable[T]]) -> T:
        """Await a backoff; the worker's place goes to another record meanwhile."""
        self._engine.rest()
        try:
            return await self._idle(flight, wait)
        finally:
            self._engine.wake()

    async def process(
        self, flight: Flight
    ) -> tuple[Outcome, ErrorInfo | None, str | None, str | None]:
        settings = self._settings
        stats = self._stats
        client = self._client
        gov = self._governor
        run_id = flight.record.run_id
        assert client is not None
        assert run_id is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await self._acquire(flight, gov)
            sent_at = loop.time()
            try:
                # Cheap while the token is fresh; renews it ahead of expiry on a long batch.
                token = self._token = await self._tokens.token()
            except AuthenticationError as exc:
                gov.abandon()
                self._engine.stop(str(exc))
                raise Interrupted from None
            except BaseException:
                gov.abandon()
                raise
            if self._ledger is not None:
                try:
                    await self._ledger.intent(run_id)
                except StateError as exc:
                    gov.abandon()
                    self._engine.stop(str(exc), hard=True)
                    raise Interrupted from None
                except BaseException:
                    gov.abandon()
                    raise
            flight.attempts += 1
            stats.attempts += 1
            if flight.attempts == 1:
                gov.budget.on_request()
            else:
                stats.retries += 1
            flight.on_the_wire = True
            try:
                outcome: Answer | TransportError = await client.retrigger(run_id, token)
            except TransportError as exc:
                outcome = exc
            except BaseException:
                gov.abandon()
                raise
            flight.on_the_wire = False
            now = loop.time()
            decision = decide(
                outcome,
                attempt=flight.attempts,
                ambiguous_before=flight.ambiguous + flight.prior_doubt,
                elapsed=now - started,
                settings=settings,
                rng=self._rng,
                wall_now=time.time(),
            )
            self._count(flight, outcome)
            halt = gov.answered(outcome, decision, sent_at=sent_at, now=now)
            if halt is not None:
                self._engine.stop(halt, hard=gov.halt_now)
            if decision.ambiguous:
                flight.ambiguous += 1
                stats.ambiguous_attempts += 1
            flight.last_error = decision.error
            if self._ledger is not None and decision.action is Action.RETRY:
                self._between_attempts(run_id, flight, decision.ambiguous)
            action = decision.action
            if action is Action.SUCCEED:
                return Outcome.RETRIGGERED, None, decision.new_run_id, decision.etag
            if action is Action.FAIL:
                return Outcome.FAILED, decision.error, None, None
            if action is Action.IN_DOUBT:
                return Outcome.IN_DOUBT, decision.error, None, None
            if action is Action.HALT:
                if decision.token_expired:
                    flight.renewals += 1
                    if flight.renewals > MAX_RENEWALS_PER_RECORD:
                        self._engine.stop(
                            "the API refused freshly renewed access tokens too (401013); check "
                            "that BULKRETRY_IMS_URL belongs to the same environment as the API"
                        )
                    elif await self._renew(token):
                        continue
                self._engine.stop(decision.halt_reason)
                raise Interrupted
            if not decision.throttled and not gov.budget.try_spend():
                stats.budget_waits += 1
                deadline = started + settings.deadline
                if not await self._rest(flight, functools.partial(gov.budget.wait, deadline)):
                    why = "the retry budget stayed empty until the deadline"
                    error = ErrorInfo(
                        kind=flight.last_error.kind if flight.last_error else "http",
                        message=f"{flight.last_error.message if flight.last_error else ''}; {why}",
                    )
                    return (
                        (
                            Outcome.IN_DOUBT
                            if flight.ambiguous or flight.prior_doubt
                            else Outcome.FAILED
                        ),
                        error,
                        None,
                        None,
                    )
            await self._rest(flight, functools.partial(self._sleep, decision.delay))

    def _between_attempts(self, run_id: str, flight: Flight, ambiguous: bool) -> None:
        """Tell the state file whether the run waits for a retry in doubt, or safely."""
        assert self._ledger is not None
        try:
            if ambiguous:
                self._ledger.ambiguous(run_id)
            else:
                # A 429, a 503 or a refused connection: not processed, so not in flight.
                self._ledger.outcome(
                    run_id,
                    Outcome.NOT_ATTEMPTED,
                    new_run_id=None,
                    etag=None,
                    attempts=flight.attempts,
                    ambiguous=flight.ambiguous,
                    error=flight.last_error,
                    http_status=flight.last_status,
                    request_id=flight.request_id,
                )
        except StateError as exc:
            self._engine.stop(str(exc), hard=True)

    def _count(self, flight: Flight, outcome: Answer | TransportError) -> None:
        stats = self._stats
        if isinstance(outcome, Answer):
            flight.last_status = outcome.status
            flight.request_id = outcome.request_id or flight.request_id
            if outcome.status == 429:
                stats.throttled += 1
            elif outcome.status >= 500:
                stats.server_errors += 1
        else:
            stats.network_errors += 1

    async def _sleep(self, delay: float) -> None:
        if self._wait is not None:
            await self._wait(delay)
        elif delay > 0:
            await asyncio.sleep(delay)

    async def _renew(self, stale: str) -> bool:
        """Get a new token after a 401 401013; False when the token cannot be renewed."""
        if self._token != stale:
            return True
        try:
            self._token = await self._tokens.renew(stale)
        except AuthenticationError as exc:
            self._engine.stop(str(exc))
            return False
        self._stats.token_renewals += 1
        return True
