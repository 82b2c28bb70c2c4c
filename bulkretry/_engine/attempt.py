"""One attempt of one record: reserve, pace, record the intent, send, decide; return a step.

:meth:`Attempt.once` runs straight through, with no loop and no backoff inside: it returns a
:class:`Retry` (after a delay, perhaps once the retry budget has a token), a :class:`Done`
verdict, or :data:`HALT` (a stop caught the record before it was done: :func:`stopped`
accounts for it). What waits between two attempts is the dispatcher's business, not a sleeping
task's. The attempt knows the batch around it only through :class:`Control`: whether it is
stopping, and how to stop it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .._config import Settings
from .._exceptions import AuthenticationError, StateError, TransportError
from .._http.auth import TokenProvider, token_provider
from .._http.client import Answer, FlowServiceClient
from .._io.source import InputRecord
from .._model import ErrorInfo, Outcome
from .._policy import Action, Decision, decide
from .._stats import Stats
from .governor import Governor

if TYPE_CHECKING:
    import aiohttp

    from .._ledger.ledger import Ledger

__all__ = [
    "AT_ONCE",
    "HALT",
    "MAX_RENEWALS_PER_RECORD",
    "Attempt",
    "Control",
    "Done",
    "Flight",
    "Halt",
    "Retry",
    "Step",
    "out_of_budget",
    "stopped",
]

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
    #: True while the attempt waits for a slot: a soft stop may cut that wait short.
    interruptible: bool = False
    #: Loop time of the first attempt: the start of the record's --deadline.
    started: float = 0.0
    #: The retry budget stayed empty until the deadline: the next step is the verdict.
    denied: bool = False
    last_error: ErrorInfo | None = None
    last_status: int | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempt again after ``delay`` seconds; first wait for a retry-budget token if asked."""

    delay: float
    #: Loop time until which a token of the retry budget is waited for; None: no token needed.
    budget_deadline: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The record's verdict."""

    outcome: Outcome
    error: ErrorInfo | None = None
    new_run_id: str | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Halt:
    """A stop caught the record before it was done: :func:`stopped` says what it became."""


Step = Retry | Done | Halt
#: The one Halt step.
HALT = Halt()
#: Attempt again at once (the token was renewed after a 401013).
AT_ONCE = Retry(0.0)


class Control(Protocol):
    """What an attempt needs of the batch around it."""

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: no new request leaves."""
        ...  # pragma: no cover

    def stop(self, reason: str | None = None, *, hard: bool = False) -> None:
        """Stop the batch; ``hard`` also cancels requests in flight. ``reason`` marks a halt."""
        ...  # pragma: no cover


def stopped(flight: Flight) -> Done:
    """Account for a record that a stop caught before it was done."""
    if flight.on_the_wire or flight.ambiguous:
        error = ErrorInfo(
            kind="interrupted",
            message=(
                "the batch stopped while a request for this run was in flight; "
                "it may have been re-triggered"
            ),
        )
        return Done(Outcome.IN_DOUBT, error)
    if flight.prior_doubt:
        error = ErrorInfo(
            kind="in_doubt",
            message="an earlier request for this run may have re-triggered it; not sent again",
        )
        return Done(Outcome.IN_DOUBT, error)
    return Done(Outcome.NOT_ATTEMPTED, flight.last_error)


def out_of_budget(flight: Flight) -> Done:
    """The verdict of a record whose retry found the retry budget empty until its deadline."""
    last = flight.last_error
    error = ErrorInfo(
        kind=last.kind if last else "http",
        message=f"{last.message if last else ''}; the retry budget stayed empty until the deadline",
    )
    doubt = flight.ambiguous or flight.prior_doubt
    return Done(Outcome.IN_DOUBT if doubt else Outcome.FAILED, error)


class Attempt:
    """The attempts of one batch, over its client, tokens, governor and state file."""

    def __init__(
        self,
        control: Control,
        *,
        settings: Settings,
        stats: Stats,
        client: FlowServiceClient,
        tokens: TokenProvider,
        governor: Governor,
        ledger: Ledger | None,
        rng: random.Random,
    ) -> None:
        self._control = control
        self._settings = settings
        self._stats = stats
        self._client = client
        self._tokens = tokens
        self._governor = governor
        self._ledger = ledger
        self._rng = rng
        self._token = ""

    @classmethod
    def connect(
        cls,
        control: Control,
        *,
        settings: Settings,
        stats: Stats,
        session: aiohttp.ClientSession,
        tokens: TokenProvider | None,
        governor: Governor,
        ledger: Ledger | None,
        rng: random.Random,
    ) -> Attempt:
        """Build a batch's attempts over ``session``, with the settings' credentials.

        ``tokens`` defaults to the provider those credentials call for.
        """
        credentials = settings.credentials
        assert credentials is not None
        if tokens is None:
            tokens = token_provider(credentials, session, proxy=settings.ims_proxy)
        client = FlowServiceClient(
            session,
            base_url=settings.base_url,
            op=settings.op,
            api_key=credentials.api_key,
            org_id=credentials.org_id,
            sandbox=credentials.sandbox,
            timeout=settings.timeout,
            proxy=settings.proxy,
        )
        return cls(
            control,
            settings=settings,
            stats=stats,
            client=client,
            tokens=tokens,
            governor=governor,
            ledger=ledger,
            rng=rng,
        )

    def __repr__(self) -> str:
        return f"Attempt({self._client!r}, {self._governor!r})"

    async def first_token(self) -> None:
        """Get the batch's first token (an IMS refusal raises AuthenticationError)."""
        self._token = await self._tokens.token()

    async def once(self, flight: Flight) -> Step:
        """Make one attempt of ``flight``'s request and return what comes next.

        A place under --max-retriggers, a slot of the throttle and one of the cap are taken in
        one wait that a soft stop may cut short (the caller cancels it); what was taken is given
        back if the request does not leave.
        """
        control = self._control
        if control.stopping:
            return HALT
        if flight.denied:
            return out_of_budget(flight)
        gov = self._governor
        loop = asyncio.get_running_loop()
        if not flight.attempts:
            flight.started = loop.time()
        flight.interruptible = True
        reserved = False
        try:
            reserved = await gov.room()
            if reserved:
                await gov.throttle.acquire()
                await gov.cap.acquire()
        except BaseException:
            if reserved:
                gov.unreserve()
            raise
        finally:
            flight.interruptible = False
        if not reserved:
            control.stop(f"reached --max-retriggers {gov.max_retriggers}")
            return HALT
        if control.stopping:
            gov.abandon()
            return HALT
        run_id = flight.record.run_id
        assert run_id is not None
        sent_at = loop.time()
        try:
            # Cheap while the token is fresh; renews it ahead of expiry on a long batch.
            token = self._token = await self._tokens.token()
            if self._ledger is not None:
                await self._ledger.intent(run_id)
        except AuthenticationError as exc:
            gov.abandon()
            control.stop(str(exc))
            return HALT
        except StateError as exc:
            gov.abandon()
            control.stop(str(exc), hard=True)
            return HALT
        except BaseException:
            gov.abandon()
            raise
        stats = self._stats
        flight.attempts += 1
        stats.attempts += 1
        if flight.attempts == 1:
            gov.budget.on_request()
        else:
            stats.retries += 1
        flight.on_the_wire = True
        try:
            answer: Answer | TransportError = await self._client.retrigger(run_id, token)
        except TransportError as exc:
            answer = exc
        except BaseException:
            gov.abandon()
            raise
        flight.on_the_wire = False
        now = loop.time()
        decision = decide(
            answer,
            attempt=flight.attempts,
            ambiguous_before=flight.ambiguous + flight.prior_doubt,
            elapsed=now - flight.started,
            settings=self._settings,
            rng=self._rng,
            wall_now=time.time(),
        )
        self._count(flight, answer)
        halt = gov.answered(answer, decision, sent_at=sent_at, now=now)
        if halt is not None:
            control.stop(halt, hard=gov.halt_now)
        if decision.ambiguous:
            flight.ambiguous += 1
            stats.ambiguous_attempts += 1
        flight.last_error = decision.error
        action = decision.action
        if action is Action.SUCCEED:
            return Done(Outcome.RETRIGGERED, None, decision.new_run_id, decision.etag)
        if action is Action.FAIL:
            return Done(Outcome.FAILED, decision.error)
        if action is Action.IN_DOUBT:
            return Done(Outcome.IN_DOUBT, decision.error)
        if action is Action.HALT:
            return await self._refused(flight, decision, token)
        if self._ledger is not None:
            self._between_attempts(run_id, flight, decision.ambiguous)
        if decision.throttled or gov.budget.try_spend():
            # 429s are paced by the throttle and cost the retry budget nothing.
            return Retry(decision.delay)
        stats.budget_waits += 1
        return Retry(decision.delay, flight.started + self._settings.deadline)

    async def _refused(self, flight: Flight, decision: Decision, token: str) -> Step:
        """Answer a refusal that halts the batch, unless a renewed token is the cure (401013)."""
        control = self._control
        if decision.token_expired:
            flight.renewals += 1
            if flight.renewals > MAX_RENEWALS_PER_RECORD:
                control.stop(
                    "the API refused freshly renewed access tokens too (401013); check "
                    "that BULKRETRY_IMS_URL belongs to the same environment as the API"
                )
            elif await self._renew(token):
                return AT_ONCE
        control.stop(decision.halt_reason)
        return HALT

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
            self._control.stop(str(exc), hard=True)

    def _count(self, flight: Flight, answer: Answer | TransportError) -> None:
        stats = self._stats
        if isinstance(answer, Answer):
            flight.last_status = answer.status
            flight.request_id = answer.request_id or flight.request_id
            if answer.status == 429:
                stats.throttled += 1
            elif answer.status >= 500:
                stats.server_errors += 1
        else:
            stats.network_errors += 1

    async def _renew(self, stale: str) -> bool:
        """Get a new token after a 401 401013; False when the token cannot be renewed."""
        if self._token != stale:
            return True
        try:
            self._token = await self._tokens.renew(stale)
        except AuthenticationError as exc:
            self._control.stop(str(exc))
            return False
        self._stats.token_renewals += 1
        return True
