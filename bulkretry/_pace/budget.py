"""Bound retries to a share of the traffic: a retry budget, as in gRPC and the AWS SDKs.

Every first attempt deposits ``ratio`` tokens (up to ``capacity``); every retry takes one. Over
any stretch of a batch, therefore, retries never exceed ``capacity + ratio * first_attempts``
(plus ``per_second`` times its length, if a time-based trickle is configured), so a struggling
service sees at most about ``1 + ratio`` times the load of the first attempts.

Deposits come with first attempts rather than with successes on purpose: a budget fed by
successes dries up exactly when a service is failing and never refills while it stays down,
whereas deciding that the service is down is :mod:`bulkretry._halt`'s job. The budget only keeps
retries from multiplying the load meanwhile.

Only retries after a 5xx, a network failure or a timeout are charged; 429s are paced by
:class:`bulkretry._throttle.Throttle` and cost nothing here. The budget starts full.

When the budget is empty a record waits (:meth:`RetryBudget.wait`) instead of failing; waiters
are served in order as tokens arrive, and give up at their own deadline. Near the end of a batch
no first attempts remain to pay for the last retries: ``per_second`` keeps them trickling.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from .._config import DEFAULT_RETRY_BUDGET

__all__ = ["DEFAULT_BUDGET_CAPACITY", "RetryBudget"]

#: Tokens in a full budget: the retries allowed at once before any first attempt paid for them.
DEFAULT_BUDGET_CAPACITY = 10.0

# A timer may fire up to the loop's clock resolution early; count a nearly whole token as whole.
_EPSILON = 1e-9


class RetryBudget:
    """Allow retries while they stay within a share of first attempts."""

    __slots__ = (
        "_capacity",
        "_denied",
        "_handle",
        "_loop",
        "_per_second",
        "_ratio",
        "_requests",
        "_retries",
        "_stamp",
        "_tokens",
        "_waiters",
    )

    def __init__(
        self,
        *,
        ratio: float = DEFAULT_RETRY_BUDGET,
        capacity: float = DEFAULT_BUDGET_CAPACITY,
        per_second: float = 0.0,
    ) -> None:
        if not (ratio >= 0 and math.isfinite(ratio)):
            raise ValueError(f"ratio must be a non-negative number, not {ratio!r}")
        if not (capacity >= 1 and math.isfinite(capacity)):
            raise ValueError(f"capacity must be at least one token, not {capacity!r}")
        if not (per_second >= 0 and math.isfinite(per_second)):
            raise ValueError(f"per_second must be a non-negative number, not {per_second!r}")
        self._ratio = float(ratio)
        self._capacity = float(capacity)
        self._per_second = float(per_second)
        self._tokens = float(capacity)
        self._stamp: float | None = None
        self._requests = 0
        self._retries = 0
        self._denied = 0
        self._waiters: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def tokens(self) -> float:
        """The retries the budget allows now (fractions accumulate towards the next one)."""
        self._refill()
        return self._tokens

    @property
    def ratio(self) -> float:
        """Tokens deposited per first attempt."""
        return self._ratio

    @property
    def capacity(self) -> float:
        """Tokens in a full budget."""
        return self._capacity

    @property
    def requests(self) -> int:
        """First attempts recorded."""
        return self._requests

    @property
    def retries(self) -> int:
        """Retries allowed so far."""
        return self._retries

    @property
    def denied(self) -> int:
        """Retries refused for good: waits that reached their deadline without a token."""
        return self._denied

    @property
    def waiting(self) -> int:
        """Records waiting for a token now."""
        return sum(not fut.done() for _, fut in self._waiters)

    def on_request(self) -> None:
        """Record a first attempt: deposit ``ratio`` tokens and serve waiters it pays for."""
        self._requests += 1
        self._refill()
        self._tokens = min(self._capacity, self._tokens + self._ratio)
        if self._waiters:
            self._wake()

    def try_spend(self) -> bool:
        """Take a token for one retry now if there is one and nobody waits before us."""
        self._refill()
        if self.waiting or self._tokens < 1 - _EPSILON:
            return False
        self._take()
        return True

    async def wait(self, deadline: float) -> bool:
        """Take a token for one retry, waiting for it until loop time *deadline* at the latest.

        Return True once the token is taken, False if the deadline came first. Waiters are
        served in order; a waiter cancelled after it was given a token gives it back.
        """
        loop = self._loop = asyncio.get_running_loop()
        self._refill()
        if not self.waiting and self._tokens >= 1 - _EPSILON:
            self._take()
            return True
        if loop.time() >= deadline:
            self._denied += 1
            return False
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append((deadline, fut))
        self._wake()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                # The token was ours but no retry will use it.
                self._retries -= 1
                self._tokens = min(self._capacity, self._tokens + 1)
            self._wake()
            raise

    def reserve(self, deadline: float) -> asyncio.Future[bool]:
        """Queue for a token for one retry, as :meth:`wait` does, and return the future at once.

        The future is done with True once the token is taken, with False at loop time
        *deadline* if none came. Cancelling it leaves the queue; a token it was given is spent.
        For a caller that waits without a task of its own: a callback on the future goes on.
        """
        loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._refill()
        if not self.waiting and self._tokens >= 1 - _EPSILON:
            self._take()
            fut.set_result(True)
        elif loop.time() >= deadline:
            self._denied += 1
            fut.set_result(False)
        else:
            self._waiters.append((deadline, fut))
            self._wake()
        return fut

    def _now(self) -> float | None:
        if self._loop is not None:
            return self._loop.time()
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return None

    def _refill(self) -> None:
        if not self._per_second:
            return
        now = self._now()
        if now is None:
            return
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(
                self._capacity, self._tokens + (now - self._stamp) * self._per_second
            )
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def _take(self) -> None:
        self._tokens = max(0.0, self._tokens - 1)
        self._retries += 1

    def _wake(self) -> None:
        """Expire waiters past their deadline, serve the rest in order, then set the timer."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        self._refill()
        pending: deque[tuple[float, asyncio.Future[bool]]] = deque()
        for deadline, fut in self._waiters:
            if fut.done():
                continue
            if now >= deadline:
                self._denied += 1
                fut.set_result(False)
            elif not pending and self._tokens >= 1 - _EPSILON:
                self._take()
                fut.set_result(True)
            else:
                pending.append((deadline, fut))
        self._waiters = pending
        if not pending:
            return
        wake_at = min(deadline for deadline, _ in pending)
        if self._per_second:
            wake_at = min(wake_at, now + (1 - self._tokens) / self._per_second)
        self._handle = loop.call_at(wake_at, self._wake)

    def __repr__(self) -> str:
        return (
            f"<RetryBudget tokens={self.tokens:.2f}/{self._capacity:g}, ratio={self._ratio:g}, "
            f"requests={self._requests}, retries={self._retries}, denied={self._denied}, "
            f"waiting={self.waiting}>"
        )
