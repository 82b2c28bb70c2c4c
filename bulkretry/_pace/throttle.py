"""Pace requests by a rate that learns the server's quota: a bucket and its controller, joined.

:class:`Throttle` is what the governor and the lister hold: a
:class:`~bulkretry._pace.bucket.TokenBucket` hands out the send slots, and a
:class:`~bulkretry._pace.controller.RateController` (with a
:class:`~bulkretry._pace.window.FixedWindow` when the quota is one) reads the answers and steers
the bucket's rate and gate. Both run on the event loop's clock; neither runs a background task.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from .._config import DEFAULT_PAUSE_AFTER, DEFAULT_RETRY_AFTER_CAP
from .._model import QuotaHeaders
from .bucket import TokenBucket
from .controller import DEFAULT_RECOVERY, RateController
from .told import Told

__all__ = ["EASE", "EASE_HORIZON", "Throttle"]

#: Once the sends left fit in this many seconds, a batch that met 429s eases its rate: a
#: Retry-After is whole seconds, so a 429 this close to the end outlasts the rest of the batch.
EASE_HORIZON = 1.0
#: The share of the rate reached that a batch's last second is paced at (see :meth:`ending`).
EASE = 0.97


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class Throttle:
    """Hand out send slots at a rate that backs off on 429s and recovers on successes.

    ``acquire`` is FIFO fair and cancellation-safe: a waiter cancelled after it was given a slot
    returns the slot. Over any window of ``T`` seconds at most ``burst + rate * T`` slots are
    handed out (the first ``burst`` at once, then one per ``1 / rate``). Times are those of the
    running event loop's clock.

    *rate* is the configured maximum, in requests per second; *burst* the slots a quiet spell
    may save up; *min_rate* the floor of cuts (default: ``MIN_RATE_FRACTION`` of *rate*);
    *pause_after* the longest Retry-After that does not pause everyone; *recovery* the fewest
    requests a climb back to the rate of the last cut takes; *longest_wait* the longest
    quota reset an answer's headers may pause everyone for (the ``--retry-after-cap``);
    *processes* how many split the quota (``--shard``), each keeping to its part of a rate the
    headers declare.
    """

    __slots__ = ("_allowed", "_bucket", "_control", "_ease_at", "_told", "acquire")

    #: Wait for a send slot, behind every earlier caller still waiting.
    acquire: Callable[[], Awaitable[None]]

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        min_rate: float | None = None,
        pause_after: float = DEFAULT_PAUSE_AFTER,
        recovery: int = DEFAULT_RECOVERY,
        longest_wait: float = DEFAULT_RETRY_AFTER_CAP,
        processes: int = 1,
    ) -> None:
        self._bucket = bucket = TokenBucket(rate, burst=burst)
        # No burst asked for, none given: a quota without one (a leaky bucket) refuses a slot
        # that a late timer's catch-up brought closer than the interval. (On asyncio's loop
        # strict spacing costs rate: there only once 429s come at the edge.)
        bucket.strict(coarse_only=True)
        self._control = RateController(
            bucket, clock=_loop_time, min_rate=min_rate, pause_after=pause_after, recovery=recovery
        )
        self._told = Told(pause_after, longest_wait, processes)
        # The slot count from which the last second's sends go (see :meth:`ending`; None: not
        # known, or eased already), and the ceiling before that ease lowered it (None: not eased).
        self._ease_at: int | None = None
        self._allowed: float | None = None
        # Every request awaits this: the bucket's own coroutine, with no wrapper around it.
        self.acquire = bucket.acquire

    @property
    def rate(self) -> float:
        """The rate, in requests per second, that the limiter currently allows."""
        return self._bucket.rate

    @property
    def learned_rate(self) -> float:
        """The rate the answers taught: the rate now, but for the ease of a last second."""
        rate = self._bucket.rate
        return rate if self._allowed is None else min(rate / EASE, self.max_rate)

    @property
    def max_rate(self) -> float:
        """The configured rate (or a lower one the server declared): the learned rate never
        goes above it."""
        return self._control.max_rate if self._allowed is None else self._allowed

    @property
    def min_rate(self) -> float:
        """The floor below which 429s no longer cut the rate."""
        return self._control.min_rate

    @property
    def burst(self) -> int:
        """How many slots may be handed out at once after a quiet spell."""
        return self._bucket.burst

    @property
    def paused_until(self) -> float:
        """The loop time at which a pause ends (``-inf`` if there never was one)."""
        return self._bucket.paused_until

    @property
    def throttled_count(self) -> int:
        """How many 429s were reported, including those that did not cut the rate."""
        return self._control.throttled_count

    @property
    def acquired_count(self) -> int:
        """How many slots were handed out (and kept)."""
        return self._bucket.acquired_count

    @property
    def window_requests(self) -> int | None:
        """The requests per window learned from a fixed-window quota (None: not one, or not yet)."""
        return self._control.window_requests

    @property
    def latency(self) -> float | None:
        """The moving average of observed request latency, in seconds, if any was observed."""
        return self._control.latency

    def on_success(self, sent_at: float | None = None) -> None:
        """Record an answer other than a throttle: let the rate climb back towards its maximum.

        *sent_at*, the loop time at which the request got its slot, tells a fixed window's
        passes apart; without it the request counts as sent now.
        """
        self._control.on_success(sent_at)
        if self._ease_at is not None and self._bucket.acquired_count >= self._ease_at:
            self._ease()  # (no property read per answer before the input's end)

    def on_throttled(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        """Record a 429 (or a 503 with Retry-After): cut the rate once per episode, maybe pause.

        *retry_after* is the server's wait in seconds, if it gave one. *sent_at*, the loop time at
        which the throttled request got its slot, tells exactly whether the 429 is news or an
        answer to a request sent before the last cut; without it a time window is used.
        """
        self._control.on_throttled(retry_after, sent_at=sent_at)

    def on_lost(self, sent_at: float) -> None:
        """Record a request given its slot at loop time *sent_at* whose answer never came: a
        hold waiting for that answer asks the next slot instead."""
        self._control.on_lost(sent_at)

    def on_unavailable(self, retry_after: float) -> None:
        """Record a 503 with a Retry-After: nobody sends before it; the rate stays as it was."""
        self._control.on_unavailable(retry_after)

    def on_quota(self, told: QuotaHeaders, *, refused: bool = False) -> None:
        """Take in what an answer's RateLimit headers said of the quota (see :mod:`.told`).

        A declared rate lowers the configured one; a spent window that resets beyond the
        pause threshold pauses everyone until then, unless the answer was *refused* (a 429:
        its Retry-After and the controller decide, window mode included).
        """
        if (rate := self._told.declared_rate(told)) is not None:
            self._control.lower_max(rate)
            if self._allowed is not None:
                self._allowed = min(self._allowed, rate)
        if not refused and (wait := self._told.wait(told)) is not None:
            self._control.pause_until(_loop_time() + wait)

    def ending(self, left: int) -> None:
        """Say that the input is all read, and *left* records of it wait for their first send.

        Once the sends left (those, and the callers waiting for a slot) fit in
        :data:`EASE_HORIZON` at the rate then, a batch that met a 429 paces the rest at
        :data:`EASE` of the rate reached: a 429 there would hold its run a whole Retry-After
        after the others are done (at 200/s, a second on a 15 s batch), and a few per cent
        below the edge avoids most of them. Retries still to come are not counted: the ease
        starts that much early.
        """
        bucket = self._bucket
        last_second = math.ceil(bucket.rate * EASE_HORIZON)
        self._ease_at = bucket.acquired_count + left + bucket.waiting - last_second
        if bucket.acquired_count >= self._ease_at:
            self._ease()

    def _ease(self) -> None:
        self._ease_at = None
        # No 429 yet: no edge known to keep away from. A window learned: its one 429 per
        # window comes however fast its N go.
        if self._control.throttled_count and self._control.window_requests is None:
            self._allowed = self._control.max_rate
            self._control.lower_max(EASE * self._bucket.rate)

    def learned(self) -> str | None:
        """Say in one line what the answers taught about the quota (None: nothing yet)."""
        said = [x for x in (self._control.learned(), self._told.describe()) if x is not None]
        return "; ".join(said) or None

    def pause_until(self, when: float) -> None:
        """Hand out no slot before loop time *when*; extends a pause, never shortens one."""
        self._control.pause_until(when)

    def count_from(self, now: float) -> None:
        """Space the next slot from loop time *now*: the last request reached the server by then."""
        self._bucket.count_from(now)

    def observe_latency(self, seconds: float) -> None:
        """Feed one request's latency into the moving average that sizes episodes."""
        self._control.observe_latency(seconds)

    def __repr__(self) -> str:
        bucket = self._bucket
        state = (
            f"rate={bucket.rate:.4g}/{self.max_rate:.4g}, burst={bucket.burst}, "
            f"tokens={bucket.tokens:.3f}, waiters={bucket.waiting}, "
            f"acquired={bucket.acquired_count}, throttled={self.throttled_count}"
        )
        if (window := self.window_requests) is not None:
            state += f", window of {window}"
        if gate := bucket.describe_gate():
            state += f", {gate}"
        return f"<Throttle {state}>"
