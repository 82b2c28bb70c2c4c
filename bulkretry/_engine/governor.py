"""Decide when the next request may leave: rate, requests in flight, retry budget, halting.

One :class:`Governor` per batch holds the flow-control pieces that every worker shares, so that
the engine asks one object "may I send?" and tells it "this is what came back":

- the :class:`~bulkretry._pace.throttle.Throttle` paces sends and learns the server's quota;
- the :class:`~bulkretry._pace.cap.ConcurrencyCap` keeps requests in flight to what the rate and
  the latency need (Little's law), so a slow server does not collect requests that time out;
- the :class:`~bulkretry._pace.budget.RetryBudget` keeps retries of failed requests to a share
  of first attempts, so a failing server is not hammered (429s are paced by the throttle instead);
- the :class:`~bulkretry._pace.halt.HaltDetector` says when the service looks down (``--halt-on``);
- ``--max-retriggers`` caps successes: a request is only sent while the successes so far plus
  the requests in flight stay below it, so the cap is never passed, even by requests in flight.
"""

from __future__ import annotations

import asyncio

from .._config import Settings, parse_halt_on
from .._exceptions import TransportError
from .._http.client import Answer
from .._pace.budget import RetryBudget
from .._pace.cap import ConcurrencyCap
from .._pace.halt import HaltDetector
from .._pace.halt import Outcome as HaltKind
from .._pace.throttle import Throttle
from .._policy import Action, Decision

__all__ = ["Governor"]


class Governor:
    """The shared flow control of one batch (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.throttle = Throttle(
            settings.rate,
            burst=settings.burst,
            pause_after=settings.pause_after,
            longest_wait=settings.retry_after_cap,
            processes=settings.processes,
        )
        self.cap = ConcurrencyCap(self.throttle, max_concurrency=settings.concurrency)
        self.budget = RetryBudget(
            ratio=settings.retry_budget,
            # Four first attempts' worth per worker: the budget starts full, so a batch that
            # meets failures at once can still retry a few before first attempts pay in.
            capacity=max(1.0, settings.concurrency * settings.retry_budget * 4),
            # At the tail of a batch no first attempt pays for retries any more; this trickle
            # (never under one every ten seconds) keeps the last ones coming.
            per_second=max(0.1, settings.rate * settings.retry_budget / 10),
        )
        self.halt = HaltDetector(parse_halt_on(settings.halt_on))
        self.halt_now = self.halt.policy.when == "now"
        self.max_retriggers = settings.max_retriggers
        self.retriggered = 0
        self._in_flight = 0
        self._room_waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        waiting = sum(not waiter.done() for waiter in self._room_waiters)
        return (
            f"<Governor {self.throttle!r} {self.cap!r} {self.budget!r} {self.halt!r} "
            f"retriggered={self.retriggered} max={self.max_retriggers} "
            f"reserved={self._in_flight} waiting_for_room={waiting}>"
        )

    @property
    def capped(self) -> bool:
        """True once ``--max-retriggers`` re-triggers succeeded: no more may be sent."""
        cap = self.max_retriggers
        return cap is not None and self.retriggered >= cap

    def may_send(self) -> bool:
        """True while one more request cannot take successes past ``--max-retriggers``."""
        return (
            self.max_retriggers is None or self.retriggered + self._in_flight < self.max_retriggers
        )

    async def room(self) -> bool:
        """Reserve a place under ``--max-retriggers`` for one request; False once it is reached.

        The place is held from here, not from the send: a worker waiting for a slot of the
        throttle has a place already, so that no other can take it meanwhile.
        """
        while not self.may_send():
            assert self.max_retriggers is not None
            if self.retriggered >= self.max_retriggers:
                return False
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            await waiter
        self._in_flight += 1
        return True

    def unreserve(self) -> None:
        """Give back a place that :meth:`room` reserved, for a request that was never sent."""
        self._in_flight -= 1
        self._wake_room()

    def abandon(self) -> None:
        """Give back the place and the cap's slot of a request that was never answered."""
        self.cap.release()
        self.unreserve()

    def _wake_room(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def steer(
        self, outcome: Answer | TransportError, decision: Decision, *, sent_at: float
    ) -> None:
        """Tell the throttle what one request's answer says of the quota (a look-up's too)."""
        throttle = self.throttle
        if decision.throttled:
            retry_after = decision.retry_after
            if retry_after is not None and isinstance(outcome, Answer) and outcome.status != 429:
                # A 503 storm is the service's, not the quota's: wait, but keep the rate.
                throttle.on_unavailable(retry_after)
            else:
                throttle.on_throttled(retry_after, sent_at=sent_at)
        elif isinstance(outcome, Answer):
            throttle.on_success(sent_at)
        else:
            throttle.on_lost(sent_at)
        if isinstance(outcome, Answer) and outcome.quota is not None:
            throttle.on_quota(outcome.quota, refused=decision.throttled)

    def answered(
        self, outcome: Answer | TransportError, decision: Decision, *, sent_at: float, now: float
    ) -> str | None:
        """Take one attempt's result into account; return a halt reason, if it is time to halt."""
        self._in_flight -= 1
        self.cap.release()
        self._wake_room()
        self.cap.observe(now - sent_at)  # and the throttle's, through it
        self.steer(outcome, decision, sent_at=sent_at)
        kind: HaltKind
        if decision.action is Action.SUCCEED:
            self.retriggered += 1
            kind = "success"
        elif isinstance(outcome, TransportError):
            kind = "network"
        elif decision.throttled or outcome.status == 429:
            kind = "throttled"
        elif outcome.status >= 500:
            kind = "server_error"
        else:
            kind = "client_error"
        reason = self.halt.observe(kind, now)
        if reason is None and self.capped:
            reason = f"reached --max-retriggers {self.max_retriggers}"
        return reason
