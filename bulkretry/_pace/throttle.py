"""Pace requests: one adaptive rate limiter and one concurrency cap, shared by every worker.

:class:`Throttle` is a token bucket (``rate`` per second, ``burst`` at most) whose rate learns the
server's quota. A 429 cuts the rate to ``BETA`` (0.7) of what it was; successes then bring it back
along a CUBIC curve (as in the AWS SDKs' adaptive retry mode), flat near the rate of the last cut,
so that the limiter dwells just below the quota it found and probes above it only slowly. The
curve's length is measured in requests (``recovery`` of them to regain the rate of the last cut),
which keeps the share of 429s the same at any rate. The rate never exceeds the configured one.

All 429s answered for requests sent before a cut belong to the same *episode* and cut only once
(given the send time, that is exact; without it, 429s until a slot was handed out after the cut,
or within twice the average latency of it, are taken to be such answers). A second episode with
no success since the first, or a ``Retry-After`` above ``pause_after``, pauses the whole limiter
until that time.

Two such pauses in a row, with successes in between, mean a *fixed window* (N requests per
window, ``Retry-After`` at the window's end, as Adobe's gateway does for some APIs). Pausing for
the whole Retry-After there wastes most of a window when the server rounds it up to whole
seconds, and cutting the rate only spreads the window's requests thinly. So the limiter switches
to *window mode*: it learns N as the successes of one pass (from one pause to the next; a pass
that runs into a second window counts more, so the smaller of the last two is taken), sends each
pass at the configured rate, and holds after N + 1 slots: if the last one is throttled, the
window is spent and everyone waits for its Retry-After (a late resume costs nothing as long as
the next window's N still fit in it); if it succeeds, the pass ran into the next window and goes
on until a 429. So a window costs one 429, and every window is used. A success for a request sent
after a 429 of the same pass means the quota is not a fixed window after all, and the limiter
goes back to cutting the rate.

:class:`ConcurrencyCap` bounds the requests in flight by Little's law, so that a slow server does
not collect a pile of requests that will all time out.

Neither runs a background task: waiters are futures, woken in order by one timer handle.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from types import TracebackType

__all__ = [
    "BETA",
    "DEFAULT_EPISODE",
    "DEFAULT_HEADROOM",
    "DEFAULT_PAUSE_AFTER",
    "DEFAULT_RECOVERY",
    "MIN_RATE_FRACTION",
    "ConcurrencyCap",
    "Throttle",
]

#: A 429 multiplies the rate by this (CUBIC's beta).
BETA = 0.7
#: A Retry-After longer than this, in seconds, pauses every worker, not only the throttled one.
DEFAULT_PAUSE_AFTER = 5.0
#: Requests it takes to climb back to the rate of the last cut; more means fewer 429s but a slower
#: return after a short-lived quota drop.
DEFAULT_RECOVERY = 600
#: Seconds after a cut during which further 429s are taken as answers to requests sent before it,
#: until a latency has been observed (then twice the average latency is used).
DEFAULT_EPISODE = 1.0
#: Without ``min_rate``, the rate is never cut below this fraction of the configured one.
MIN_RATE_FRACTION = 0.01
#: Requests in flight allowed above what the current rate and latency need.
DEFAULT_HEADROOM = 2.0

# A timer may fire up to the loop's clock resolution early; count a nearly full token as full.
_EPSILON = 1e-6
# The coarsest event-loop clock step in use (uvloop's loop.time() has millisecond resolution).
_CLOCK_TICK = 0.001
# Weight of the newest latency sample in the moving average.
_LATENCY_WEIGHT = 0.2
# Bounds of the recovery time, in seconds, whatever the rate.
_MIN_RECOVERY_SECONDS = 1.0
_MAX_RECOVERY_SECONDS = 600.0


class Throttle:
    """Hand out send slots at a rate that backs off on 429s and recovers on successes.

    ``acquire`` is FIFO fair and cancellation-safe: a waiter cancelled after it was given a slot
    returns the slot. Over any window of ``T`` seconds at most ``burst + rate * T`` slots are
    handed out (the first ``burst`` at once, then one per ``1 / rate``). Times are those of the
    running event loop's clock.

    *rate* is the configured maximum, in requests per second; *burst* the slots a quiet spell
    may save up; *min_rate* the floor of cuts (default: ``MIN_RATE_FRACTION`` of *rate*);
    *pause_after* the longest Retry-After that does not pause everyone; *recovery* the number
    of requests it takes to climb back to the rate of the last cut.
    """

    __slots__ = (
        "_burst",
        "_cut_at",
        "_due",
        "_epoch",
        "_grants",
        "_grants_since_cut",
        "_handle",
        "_hold_at",
        "_hold_sent",
        "_latency",
        "_loop",
        "_max_rate",
        "_min_rate",
        "_pass_counts",
        "_pass_first_429",
        "_pass_ok",
        "_pass_start",
        "_pause_after",
        "_paused_until",
        "_prev_first_429",
        "_prev_ok",
        "_prev_start",
        "_rate",
        "_recovery",
        "_recovery_seconds",
        "_stamp",
        "_successes_since_cut",
        "_successes_since_pause",
        "_throttled_count",
        "_tokens",
        "_w_max",
        "_waiters",
        "_window",
    )

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        min_rate: float | None = None,
        pause_after: float = DEFAULT_PAUSE_AFTER,
        recovery: int = DEFAULT_RECOVERY,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of requests per second, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        if min_rate is None:
            min_rate = rate * MIN_RATE_FRACTION
        if not 0 < min_rate <= rate:
            raise ValueError(f"min_rate must be positive and at most rate, not {min_rate!r}")
        if not pause_after >= 0:
            raise ValueError(f"pause_after must not be negative, not {pause_after!r}")
        if recovery < 1:
            raise ValueError(f"recovery must be at least one request, not {recovery!r}")
        self._max_rate = float(rate)
        self._min_rate = float(min_rate)
        self._rate = float(rate)
        self._burst = burst
        self._pause_after = float(pause_after)
        self._recovery = recovery
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._paused_until = -math.inf
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        # When the armed timer's slot comes due (None: no timer armed for a slot).
        self._due: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grants = 0
        self._throttled_count = 0
        self._latency: float | None = None
        # CUBIC state: the rate at the last cut, when recovery starts, and how long it takes.
        self._cut_at: float | None = None
        self._w_max = float(rate)
        self._epoch = -math.inf
        self._recovery_seconds = _MIN_RECOVERY_SECONDS
        self._grants_since_cut = 0
        self._successes_since_cut = 0
        self._successes_since_pause = 0
        # Window mode: the learned requests per window (None: not a fixed window, or not yet),
        # the grant count at which to hold, and the send time of the slot that set the hold.
        self._window: int | None = None
        self._hold_at = math.inf
        self._hold_sent = math.inf
        # The pass under way (since the last pause's end) and the one before it: when each
        # started and how many of its requests succeeded; the complete counts of recent passes.
        self._pass_start = -math.inf
        self._pass_ok = 0
        self._pass_first_429 = math.inf
        self._prev_start = -math.inf
        self._prev_ok = 0
        self._prev_first_429 = math.inf
        self._pass_counts: list[int] = []

    @property
    def rate(self) -> float:
        """The rate, in requests per second, that the limiter currently allows."""
        return self._rate

    @property
    def max_rate(self) -> float:
        """The configured rate: the learned rate never goes above it."""
        return self._max_rate

    @property
    def min_rate(self) -> float:
        """The floor below which 429s no longer cut the rate."""
        return self._min_rate

    @property
    def burst(self) -> int:
        """How many slots may be handed out at once after a quiet spell."""
        return self._burst

    @property
    def paused_until(self) -> float:
        """The loop time at which a pause ends (``-inf`` if there never was one)."""
        return self._paused_until

    @property
    def throttled_count(self) -> int:
        """How many 429s were reported, including those that did not cut the rate."""
        return self._throttled_count

    @property
    def acquired_count(self) -> int:
        """How many slots were handed out (and kept)."""
        return self._grants

    @property
    def window_requests(self) -> int | None:
        """The requests per window learned from a fixed-window quota (None: not one, or not yet)."""
        return self._window

    @property
    def latency(self) -> float | None:
        """The moving average of observed request latency, in seconds, if any was observed."""
        return self._latency

    async def acquire(self) -> None:
        """Wait for a send slot, behind every earlier caller still waiting."""
        loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self._refill(now)
        if not self._waiters and now >= self._paused_until and self._tokens >= 1 - _EPSILON:
            self._take()
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self._wake()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was ours but nobody will use it: hand it to the next waiter.
                self._grants -= 1
                self._grants_since_cut = max(0, self._grants_since_cut - 1)
                self._tokens = min(self._capacity(), self._tokens + 1)
            self._wake()
            raise

    def on_success(self, sent_at: float | None = None) -> None:
        """Record an answer other than a throttle: let the rate climb back towards its maximum.

        *sent_at*, the loop time at which the request got its slot, tells a fixed window's
        passes apart; without it the request counts as sent now.
        """
        self._successes_since_cut += 1
        self._successes_since_pause += 1
        if self._window is not None:
            self._window_success(self._now() if sent_at is None else sent_at)
            return
        if self._cut_at is None or self._rate >= self._max_rate:
            return
        now = self._now()
        elapsed = max(0.0, now - self._epoch)
        shortfall = 1 - elapsed / self._recovery_seconds
        target = self._w_max * (1 - (1 - BETA) * shortfall**3)
        self._set_rate(now, min(self._max_rate, max(self._min_rate, target)))

    def on_throttled(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        """Record a 429 (or a 503 with Retry-After): cut the rate once per episode, maybe pause.

        *retry_after* is the server's wait in seconds, if it gave one. *sent_at*, the loop time at
        which the throttled request got its slot, tells exactly whether the 429 is news or an
        answer to a request sent before the last cut; without it a time window is used.
        """
        now = self._now()
        self._throttled_count += 1
        if self._window is not None:
            self._window_throttled(now, retry_after, sent_at)
            return
        resumed_at = self._paused_until
        allowed = self._successes_since_pause
        same_episode = self._same_episode(now, sent_at)
        pause = retry_after is not None and (
            retry_after > self._pause_after
            # A new episode hard on the heels of the last cut: the cut did not help, so stop
            # everyone rather than collect 429s until the next one.
            or (not same_episode and self._cut_at is not None and not self._successes_since_cut)
        )
        if retry_after is not None and pause:
            self.pause_until(now + retry_after)
        if same_episode:
            return
        self._refill(now)
        self._w_max = self._rate
        if pause and allowed and -math.inf < resumed_at <= now and retry_after is not None:
            # Two pauses in a row for 429s that went on after a cut, with successes between
            # them: the quota is a fixed window, and the successes were its N (or a bit more).
            self._enter_window(now, allowed, resumed_at)
            return
        self._cut_at = now
        self._epoch = max(now, self._paused_until)
        self._recovery_seconds = min(
            _MAX_RECOVERY_SECONDS, max(_MIN_RECOVERY_SECONDS, self._recovery / self._w_max)
        )
        self._grants_since_cut = 0
        self._successes_since_cut = 0
        # The server's bucket is empty; a burst saved up in ours would only earn more 429s.
        self._tokens = 0.0
        self._due = None
        self._set_rate(now, max(self._min_rate, self._w_max * BETA))

    def pause_until(self, when: float) -> None:
        """Hand out no slot before loop time *when*; extends a pause, never shortens one."""
        if when <= self._paused_until:
            return
        self._paused_until = when
        self._successes_since_pause = 0
        self._epoch = max(self._epoch, when)
        self._wake()

    def observe_latency(self, seconds: float) -> None:
        """Feed one request's latency into the moving average that sizes episodes."""
        if self._latency is None:
            self._latency = seconds
        else:
            self._latency += _LATENCY_WEIGHT * (seconds - self._latency)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- window mode -----------------------------------------------------------------------

    def _enter_window(self, now: float, allowed: int, resumed_at: float) -> None:
        """Switch to window mode after a pass of *allowed* successes from *resumed_at* to now."""
        self._window = allowed
        self._pass_counts = []
        # The pass that just ended; successes still in flight for it are counted as they come.
        self._pass_start, self._pass_ok = resumed_at, allowed
        self._pass_first_429 = now
        self._cut_at = None
        self._w_max = self._max_rate
        self._set_rate(now, self._max_rate)
        self._next_pass()

    def _next_pass(self) -> None:
        """Close the pass under way; the next starts when the pause ends, and holds after N+1."""
        self._prev_start, self._prev_ok = self._pass_start, self._pass_ok
        self._prev_first_429 = self._pass_first_429
        self._pass_start, self._pass_ok = self._paused_until, 0
        self._pass_first_429 = math.inf
        assert self._window is not None
        self._hold_at = self._grants + self._window + 1
        self._hold_sent = math.inf
        self._tokens = 0.0
        self._due = None

    def _window_throttled(
        self, now: float, retry_after: float | None, sent_at: float | None
    ) -> None:
        sent = now if sent_at is None else sent_at
        if sent < self._pass_start:
            return  # an answer to an earlier pass, whose window is spent already
        if retry_after is None:
            # Without a Retry-After there is no window's end to wait for: cut the rate instead.
            self._leave_window(now)
            self.on_throttled(None, sent_at=sent_at)
            return
        self._pass_first_429 = min(self._pass_first_429, sent)
        # The pass before the one that just ended is complete by now: learn N from it.
        if self._prev_start > -math.inf:
            self._pass_counts = [*self._pass_counts[-1:], self._prev_ok]
            self._window = max(1, min(self._pass_counts))
        if self._paused_until == math.inf:
            self._paused_until = now  # the hold ends; the window's Retry-After begins
        self.pause_until(now + retry_after)
        self._next_pass()

    def _window_success(self, sent: float) -> None:
        if sent >= self._pass_start:
            self._pass_ok += 1
            if sent >= self._hold_sent:
                # The slot after N succeeded: this pass ran into the next window. Go on.
                self._hold_at = math.inf
                self._hold_sent = math.inf
                now = self._now()
                if self._paused_until > now:
                    self._paused_until = now
                    self._wake()
        elif sent > self._prev_first_429:
            # A success for a request sent after a 429 of the same pass: not a fixed window.
            self._leave_window(self._now())
        elif sent >= self._prev_start:
            self._prev_ok += 1

    def _leave_window(self, now: float) -> None:
        self._window = None
        self._hold_at = self._hold_sent = math.inf
        if self._paused_until == math.inf:
            self._paused_until = now
        self._cut_at = None
        self._wake()

    def _hold(self) -> None:
        """Stop handing out slots until the answer to this last one says whether to go on."""
        self._hold_at = math.inf
        self._hold_sent = self._stamp if self._stamp is not None else -math.inf
        self._paused_until = math.inf

    def _same_episode(self, now: float, sent_at: float | None) -> bool:
        if self._cut_at is None:
            return False
        if sent_at is not None:
            return sent_at <= self._cut_at
        if self._grants_since_cut == 0:
            return True
        window = DEFAULT_EPISODE if self._latency is None else 2 * self._latency
        return now < self._epoch + window

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self._capacity(), self._tokens + (now - self._stamp) * self._rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def _capacity(self) -> float:
        # uvloop's clock moves in 1 ms steps, so a bucket of one token would release at most
        # one slot per millisecond whatever the rate: hold at least one tick's worth.
        return max(float(self._burst), self._rate * _CLOCK_TICK)

    def _take(self) -> None:
        self._tokens = max(0.0, self._tokens - 1)
        self._grants += 1
        self._grants_since_cut += 1
        if self._grants >= self._hold_at:
            self._hold()

    def _set_rate(self, now: float, rate: float) -> None:
        self._refill(now)
        self._rate = rate
        if self._waiters:
            # The head's wake-up time depends on the rate.
            self._wake()

    def _wake(self) -> None:
        """Hand slots to waiters in order while there are tokens, then set the timer."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        loop = self._loop
        waiters = self._waiters
        if loop is None:
            return
        now = loop.time()
        self._refill(now)
        due, self._due = self._due, None
        if due is not None and now > due and waiters:
            # The timer fired late (a millisecond clock, a busy loop): a full one-token bucket
            # would drop the slots that came due meanwhile, several percent of the rate with
            # burst 1. Keep them, up to one more, so that slots stay on their grid.
            late = 1.0 + min(now - due, 1.0 / self._rate) * self._rate
            self._tokens = max(self._tokens, min(late, self._capacity() + 1.0))
        while waiters:
            fut = waiters[0]
            if fut.done():
                waiters.popleft()
            elif now < self._paused_until:
                if self._paused_until < math.inf:  # a hold ends with an answer, not a timer
                    self._handle = loop.call_at(self._paused_until, self._wake)
                return
            elif self._tokens >= 1 - _EPSILON:
                waiters.popleft()
                self._take()
                fut.set_result(None)
            else:
                self._due = now + (1 - self._tokens) / self._rate
                self._handle = loop.call_at(self._due, self._wake)
                return

    def __repr__(self) -> str:
        state = (
            f"rate={self._rate:.4g}/{self._max_rate:.4g}, burst={self._burst}, "
            f"tokens={self._tokens:.3f}, waiters={sum(not f.done() for f in self._waiters)}, "
            f"acquired={self._grants}, throttled={self._throttled_count}"
        )
        if self._loop is not None:
            left = self._paused_until - self._loop.time()
            if left > 0:
                state += f", paused for {left:.3f}s"
        return f"<Throttle {state}>"


class ConcurrencyCap:
    """Bound the requests in flight to what the throttle's rate and the latency call for.

    The limit is ``ceil(rate * latency * headroom) + 1`` clamped to ``[1, max_concurrency]``
    (Little's law with room to spare); until a latency was observed it is ``max_concurrency``.
    Use as ``async with cap:`` or with :meth:`acquire` and :meth:`release`; FIFO fair.
    """

    __slots__ = ("_headroom", "_in_flight", "_max_concurrency", "_throttle", "_waiters")

    def __init__(
        self, throttle: Throttle, *, max_concurrency: int, headroom: float = DEFAULT_HEADROOM
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency!r}")
        if not headroom > 0:
            raise ValueError(f"headroom must be positive, not {headroom!r}")
        self._throttle = throttle
        self._max_concurrency = max_concurrency
        self._headroom = float(headroom)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        latency = self._throttle.latency
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
