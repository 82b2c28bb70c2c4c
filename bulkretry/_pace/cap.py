"""Bound the requests in flight by Little's law, so that a slow server collects no pile of them.

Requests that queue up at a slow server only time out together. The cap lets as many be in
flight as the current rate times the observed latency calls for, with room to spare. Like the
bucket, it runs no background task: waiters are futures, admitted in order as places come back.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from types import TracebackType
from typing import Protocol

__all__ = ["DEFAULT_HEADROOM", "ConcurrencyCap", "Paced"]

#: Requests in flight allowed above what the current rate and latency need.
DEFAULT_HEADROOM = 2.0
# The latency that sizes the cap is the longest of the recent answers, each weighed down by 2%
# per answer since (a slow one counts half after ~35 answers). A mean (even of ~50 answers)
# dips between hung requests, which are seen only when they time out, and meanwhile hold their
# places: with 5% hanging 1 s at 200/s, a mean of 50 +/- 25 ms left 7-8 places, the hung ones
# held them, and the workers queued behind the cap.
_DECAY = 0.98


class Paced(Protocol):
    """What the cap needs of the throttle: its rate, and to hear each latency observed."""

    @property
    def rate(self) -> float:
        """The requests per second allowed now."""

    def observe_latency(self, seconds: float) -> None:
        """Feed one request's latency into the moving average."""


class ConcurrencyCap:
    """Bound the requests in flight to what the throttle's rate and the latency call for.

    The limit is ``ceil(rate * latency * headroom) + 1`` clamped to ``[1, max_concurrency]``
    (Little's law with room to spare), the latency being the longest recent one, fading by 2%
    an answer; until a latency was observed it is ``max_concurrency``.
    Use as ``async with cap:`` or with :meth:`acquire` and :meth:`release`; FIFO fair.
    """

    __slots__ = ("_headroom", "_in_flight", "_max_concurrency", "_peak", "_throttle", "_waiters")

    def __init__(
        self, throttle: Paced, *, max_concurrency: int, headroom: float = DEFAULT_HEADROOM
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency!r}")
        if not headroom > 0:
            raise ValueError(f"headroom must be positive, not {headroom!r}")
        self._throttle = throttle
        self._max_concurrency = max_concurrency
        self._headroom = float(headroom)
        self._in_flight = 0
        self._peak: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        latency = self._peak
        if latency is None:
            return self._max_concurrency
        wanted = math.ceil(self._throttle.rate * latency * self._headroom) + 1
        return max(1, min(self._max_concurrency, wanted))

    @property
    def in_flight(self) -> int:
        """How many requests hold a place now."""
        return self._in_flight

    @property
    def max_concurrency(self) -> int:
        """The configured ceiling of the limit."""
        return self._max_concurrency

    def observe(self, latency_seconds: float) -> None:
        """Feed one request's latency (shared with the throttle) and admit waiters if room grew."""
        self._throttle.observe_latency(latency_seconds)
        peak = self._peak
        self._peak = latency_seconds if peak is None else max(latency_seconds, peak * _DECAY)
        self._wake()

    async def acquire(self) -> None:
        """Wait for a place among the requests in flight."""
        if not self._waiters and self._in_flight < self.limit:
            self._in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._in_flight -= 1
            self._wake()
            raise

    def release(self) -> None:
        """Give a place back."""
        if self._in_flight <= 0:
            raise RuntimeError("ConcurrencyCap.release() called more often than acquire()")
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        if not waiters:
            return  # the common case, on every release: no limit to work out
        limit = self.limit
        while waiters and (waiters[0].done() or self._in_flight < limit):
            fut = waiters.popleft()
            if not fut.done():
                self._in_flight += 1
                fut.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        waiting = sum(not f.done() for f in self._waiters)
        return (
            f"<ConcurrencyCap in_flight={self._in_flight}, limit={self.limit}/"
            f"{self._max_concurrency}, waiters={waiting}>"
        )
