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
import dataclasses
import random
import time
from typing import TYPE_CHECKING

from .._config import Settings
from .._exceptions import AuthenticationError, StateError, TransportError
from .._http.auth import TokenProvider, token_provider
from .._http.client import Answer, FlowServiceClient
from .._model import Outcome
from .._policy import Action, Decision, decide
from .._stats import Stats
from .governor import Governor
from .resolve import Resolver
from .steps import (
    AT_ONCE,
    HALT,
    Control,
    Done,
    Flight,
    Retry,
    Step,
    out_of_budget,
)

if TYPE_CHECKING:
    import aiohttp

    from .._ledger.ledger import Ledger

__all__ = ["MAX_RENEWALS_PER_RECORD", "Attempt"]

#: 401s (401013) one record may answer with a renewal; past that the API is refusing fresh
#: tokens too (an IMS of another environment), and renewing again would loop on IMS.
MAX_RENEWALS_PER_RECORD = 3


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
        #: Looks lost answers up (``--on-ambiguous check``); None under hold and retry.
        self.resolver: Resolver | None = None
        if settings.on_ambiguous == "check":
            self.resolver = Resolver(
                client=client,
                tokens=tokens,
                governor=governor,
                settings=settings,
                stats=stats,
                rng=rng,
            )

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
        client = FlowServiceClient.for_settings(session, settings)
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

    @property
    def client(self) -> FlowServiceClient:
        """The batch's client (the pre-flight and look-ups share it)."""
        return self._client

    @property
    def settings(self) -> Settings:
        """The batch's settings."""
        return self._settings

    @property
    def tokens(self) -> TokenProvider:
        """The batch's access tokens."""
        return self._tokens

    @property
    def governor(self) -> Governor:
        """The batch's flow control (look-ups share its throttle and cap)."""
        return self._governor

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
        if (verdict := flight.verdict) is not None:
            flight.verdict = None  # its look-up came back (see :meth:`look`)
            if isinstance(verdict, BaseException):
                raise verdict
            if isinstance(verdict, Done) or not control.stopping:
                return verdict  # what the look-up found stands, stop or not
        if control.stopping:
            return HALT
        if flight.denied:
            return out_of_budget(flight)
        gov = self._governor
        loop = asyncio.get_running_loop()
        if not flight.attempts:
            flight.started = loop.time()
            flight.first_wall = time.time()
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
            if flight.prior_doubt and self.resolver is not None:
                self.resolver.haunt(None)  # sent again (--retry-in-doubt): the first may land
        else:
            stats.retries += 1
        flight.on_the_wire = True
        resolver = self.resolver
        if resolver is not None:
            sent_wall = time.time()
            resolver.sending(id(flight))
        try:
            answer: Answer | TransportError = await self._client.retrigger(run_id, token)
        except TransportError as exc:
            answer = exc
        except BaseException:
            gov.abandon()
            if resolver is not None:
                resolver.answered(id(flight), None)
            raise
        flight.on_the_wire = False
        now, wall_now = loop.time(), time.time()
        s = self._settings
        decision = decide(
            answer,
            attempt=flight.attempts,
            ambiguous_before=flight.ambiguous + flight.prior_doubt,
            elapsed=now - flight.started,
            settings=self._settings,
            rng=self._rng,
            wall_now=wall_now,
        )
        self._count(flight, answer)
        if resolver is not None:
            resolver.answered(id(flight), decision.new_run_id)
        halt = gov.answered(answer, decision, sent_at=sent_at, now=now)
        if halt is not None:
            control.stop(halt, hard=gov.halt_now)
        if decision.ambiguous:
            flight.ambiguous += 1
            flight.lost_wall = wall_now
            stats.ambiguous_attempts += 1
        flight.last_error = decision.error
        action = decision.action
        if action is Action.SUCCEED:
            return Done(Outcome.RETRIGGERED, None, decision.new_run_id, decision.etag)
        if action is Action.FAIL:
            return Done(Outcome.FAILED, decision.error)
        if action is Action.IN_DOUBT:
            if resolver is not None and decision.ambiguous and flight.attempts < s.max_attempts:
                # Look before anything else: was the run re-triggered by this attempt?
                stats.checks += 1
                resolver.open(flight, sent_wall)
                if self._ledger is not None:
                    self._between_attempts(run_id, flight, ambiguous=True)
                return Retry(s.check_delay)
            if resolver is not None and decision.ambiguous:
                resolver.haunt(sent_wall)  # lost on its last attempt: no check looks it up
            return Done(Outcome.IN_DOUBT, decision.error)
        if action is Action.HALT:
            return await self._refused(flight, decision, token)
        if self._ledger is not None:
            self._between_attempts(run_id, flight, decision.ambiguous)
        if decision.throttled:
            # 429s are paced by the throttle and cost the retry budget nothing; an input record
            # waits its own Retry-After without holding fresh input back (a further round never
            # held any: it is not counted against max_pending at all).
            return Retry(decision.delay, aside=flight.chain is None)
        if gov.budget.try_spend():
            return Retry(decision.delay)
        stats.budget_waits += 1
        return Retry(decision.delay, flight.started + self._settings.deadline)

    async def look(self, flight: Flight) -> Step:
        """Look up the run whose answer was lost; clear its doubt when it was not processed.

        For a flight left ``checking`` by :meth:`once`, when its check delay is over. The batch
        runs it in a task of its own, not in a worker: a look-up waits for every request sent
        before it to be answered, hung ones up to their timeout, and a worker held so is a
        place fresh input cannot use.
        """
        assert self.resolver is not None
        step = await self.resolver.resolve(flight)
        if step is AT_ONCE:
            self._stats.checks_resent += 1
            run_id = flight.record.run_id
            if self._ledger is not None and run_id is not None and not flight.prior_doubt:
                try:
                    self._ledger.clear_doubt(run_id)
                except StateError as exc:
                    self._control.stop(str(exc), hard=True)
                    return HALT
        elif isinstance(step, Done) and step.error is not None and flight.last_error is not None:
            # Keep what the lost answer said (HTTP 502…) before what the look-up found.
            error = step.error
            message = f"{flight.last_error.message}; {error.message}"
            step = dataclasses.replace(step, error=dataclasses.replace(error, message=message))
        return step

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
