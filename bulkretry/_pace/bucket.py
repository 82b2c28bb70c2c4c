"""Hand out send slots at a rate: a token bucket with FIFO waiters and one timer handle.

The shape of aiolimiter's leaky bucket: no background task; a caller that finds no token waits on
a future, and one timer handle wakes the head of the queue when its token comes due. The bucket
only paces. Whoever learns the rate (:class:`~bulkretry._pace.controller.RateController`) steers
it through a few plain methods, each taking the loop time it acts at:

- :meth:`TokenBucket.set_rate`, :meth:`~TokenBucket.refill` and :meth:`~TokenBucket.drain` (a
  burst saved up is thrown away after a 429);
- a *gate*: :meth:`~TokenBucket.pause_until` closes it until a time, :meth:`~TokenBucket.resume`
  opens it early;
- a *hold*: :meth:`~TokenBucket.hold_after` closes the gate once a given number of slots was
  handed out, and no timer opens it again: its owner does (:meth:`~TokenBucket.end_hold`,
  ``resume``);
- :meth:`~TokenBucket.mark` starts a count of the slots handed out since.

Times are those of the running event loop's clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["TokenBucket"]

# A timer may fire up to the loop's clock resolution early; count a nearly full token as full.
_EPSILON = 1e-6
# Weight of the newest timer lateness in the moving average by which slot timers are set early.
_EARLY_WEIGHT = 0.1
# Timers are never set earlier than this share of a slot's interval before it.
_MAX_EARLY = 0.25
# The coarsest event-loop clock step in use (uvloop's loop.time() has millisecond resolution).
_CLOCK_TICK = 0.001


class TokenBucket:
    """Hand out send slots, ``rate`` per second and ``burst`` at most at once, in arrival order.

    ``acquire`` is FIFO fair and cancellation-safe: a waiter cancelled after it was given a slot
    returns the slot. Over any window of ``T`` seconds at most ``burst + rate * T`` slots are
    handed out (the first ``burst`` at once, then one per ``1 / rate``).
    """

    __slots__ = (
        "_burst",
        "_coarse",
        "_due",
        "_early",
        "_gap",
        "_grants",
        "_handle",
        "_held_slot",
        "_hold_at",
        "_last",
        "_loop",
        "_paused_until",
        "_precise",
        "_rate",
        "_since_mark",
        "_stamp",
        "_strict",
        "_strict_coarse_only",
        "_tokens",
        "_waiters",
    )

    def __init__(self, rate: float, *, burst: int = 1) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of requests per second, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self._rate = float(rate)
        self._burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._paused_until = -math.inf
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._handle: asyncio.Handle | None = None
        # When the armed timer's slot comes due (None: no timer armed for a slot).
        self._due: float | None = None
        # How late slot timers fire, on average: they are set that much before their slot.
        self._early = 0.0
        # Strict spacing (see :meth:`strict`): no slot sooner than one interval after the last.
        self._strict = False
        self._strict_coarse_only = False
        # When the last slot was handed out, by a clock finer than uvloop's (strict mode only).
        self._last = -math.inf
        self._precise: Callable[[], float] = time.monotonic
        self._coarse = False
        self._gap = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grants = 0
        self._since_mark = 0
        # The grant count at which the gate closes, and the time of the slot that closed it.
        self._hold_at = math.inf
        self._held_slot = math.inf

    @property
    def rate(self) -> float:
        """The slots per second handed out now."""
        return self._rate

    @property
    def burst(self) -> int:
        """How many slots may be handed out at once after a quiet spell."""
        return self._burst

    @property
    def tokens(self) -> float:
        """The slots saved up at the last refill (fractions accumulate towards the next one)."""
        return self._tokens

    @property
    def paused_until(self) -> float:
        """The loop time the gate opens at (``-inf``: never closed; ``inf``: held shut)."""
        return self._paused_until

    @property
    def acquired_count(self) -> int:
        """How many slots were handed out (and kept)."""
        return self._grants

    @property
    def since_mark(self) -> int:
        """How many slots were handed out (and kept) since the last :meth:`mark`."""
        return self._since_mark

    @property
    def held_slot(self) -> float:
        """The loop time of the slot after which a hold closed the gate (``inf``: none did)."""
        return self._held_slot

    @property
    def waiting(self) -> int:
        """How many callers wait for a slot now."""
        return sum(not fut.done() for fut in self._waiters)

    async def acquire(self) -> None:
        """Wait for a send slot, behind every earlier caller still waiting."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._set_clock(loop)
        now = loop.time()
        self.refill(now)
        if (
            not self._waiters
            and now >= self._paused_until
            and self._tokens >= 1 - _EPSILON
            and not (self._strict and self._spaced() and self._too_soon())
        ):
            self._take()
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self.wake()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was ours but nobody will use it: hand it to the next waiter.
                self._grants -= 1
                self._since_mark = max(0, self._since_mark - 1)
                self._tokens = min(self._capacity(), self._tokens + 1)
            self.wake()
            raise

    def set_rate(self, now: float, rate: float) -> None:
        """From loop time *now* on, hand out *rate* slots per second."""
        self.refill(now)
        self._rate = rate
        if self._waiters:
            # The head's wake-up time depends on the rate.
            self.wake()

    def refill(self, now: float) -> None:
        """Add the tokens earned at the current rate up to loop time *now*."""
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self._capacity(), self._tokens + (now - self._stamp) * self._rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def drain(self) -> None:
        """Throw away the tokens saved up: the next slot waits a whole interval."""
        self._tokens = 0.0
        self._due = None

    def count_from(self, now: float) -> None:
        """Space the next slot from loop time *now*, as if the last one went out then.

        For a request that reached the server at some moment before its answer, unknown: the
        first one, which opened a connection on its way. Counted from its slot, the next one
        can arrive closer to it than the interval, which a quota with no burst refuses. With a
        burst (configured, so the quota has one) nothing changes: the saved slots are kept.
        """
        if self._burst != 1:
            return
        self.refill(now)
        self._tokens = min(self._tokens, 0.0)
        if self._spaced():
            self._last = self._precise()
            self._gap = 1 / self._rate
        if self._waiters:
            self.wake()

    def pause_until(self, when: float) -> bool:
        """Close the gate until loop time *when*; extend a pause, never shorten one.

        Return True if the pause was extended.
        """
        if when <= self._paused_until:
            return False
        self._paused_until = when
        self.wake()
        return True

    def resume(self, now: float) -> None:
        """Open the gate at loop time *now* if it is closed beyond it (a pause or a hold)."""
        if self._paused_until > now:
            self._paused_until = now
            self.wake()

    def hold_after(self, grants: int) -> None:
        """Close the gate once *grants* slots in all were handed out, until its owner opens it."""
        self._hold_at = grants
        self._held_slot = math.inf

    def unhold(self) -> None:
        """Forget the hold to come or the one that closed the gate (the gate stays as it is)."""
        self._hold_at = math.inf
        self._held_slot = math.inf

    def end_hold(self, now: float) -> None:
        """If a hold closed the gate, let it open at loop time *now*.

        No waiter is woken: the caller pauses anew or calls :meth:`wake`.
        """
        if self._paused_until == math.inf:
            self._paused_until = now

    def strict(self, *, coarse_only: bool = False) -> None:
        """From now on, with burst 1, never hand out two slots closer than the interval (with
        *coarse_only*, only on uvloop's millisecond clock, until asked again without it).

        A quota with no burst (a leaky bucket) refuses a request sooner than its interval
        after the last. On the grid, a slot whose timer fired late is followed by one that
        catches up; strictly, the next counts from the last one handed out, by a clock finer
        than uvloop's, the timer set a tick early and the last fraction waited out yielding to
        the loop. That costs a little CPU; on asyncio's loop, whose timers fire up to a
        millisecond late and where nothing waits out the last fraction, 12-22% of the rate. So
        the throttle asks for it from the start on uvloop only, the controller everywhere once
        429s come at the edge of a steady rate.
        """
        self._strict = self._burst == 1
        self._strict_coarse_only = coarse_only

    def mark(self) -> None:
        """Start counting the slots handed out afresh (see :attr:`since_mark`)."""
        self._since_mark = 0

    def wake(self) -> None:
        """Hand slots to waiters in order while there are tokens, then set the timer."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        loop = self._loop
        waiters = self._waiters
        if loop is None:
            return
        now = loop.time()
        self.refill(now)
        due, self._due = self._due, None
        early = 0.0
        spaced = self._spaced()
        if due is not None and waiters and not spaced:
            # The slot's timer fired (or is as good as fired): learn how late timers run here,
            # so that the next one is set that much early and fires on its slot, not after it.
            lateness = now - (due - self._early)
            if lateness >= 0:
                cap = _MAX_EARLY / self._rate
                self._early += _EARLY_WEIGHT * (min(lateness, cap) - self._early)
                early = self._early
        if due is not None and now > due and waiters and not spaced:
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
                    self._handle = loop.call_at(self._paused_until, self.wake)
                return
            elif spaced and self._tokens >= 1 - _EPSILON - self._slack():
                # Due by the tokens (their refill runs on the loop's clock, which uvloop keeps
                # in whole ms): hand the slot out once the precise clock agrees.
                wait = self._too_soon()
                if not wait:
                    waiters.popleft()
                    self._take()
                    fut.set_result(None)
                elif self._coarse and wait <= 2 * _CLOCK_TICK:
                    # The last fraction of a tick: yield to everything else ready, then look.
                    self._handle = loop.call_soon(self.wake)
                    return
                else:
                    self._handle = loop.call_at(now + wait - self._slack() / self._rate, self.wake)
                    return
            elif self._tokens >= 1 - _EPSILON - early * self._rate:
                # Up to ``early`` before its slot: the token owed is paid back by the next slot
                # (the tokens go below zero), so slots keep to their grid and the rate holds.
                waiters.popleft()
                self._take()
                early = 0.0
                fut.set_result(None)
            else:
                self._due = now + (1 - self._tokens) / self._rate
                # Spaced on a coarse clock, wake a tick early and let the precise one decide.
                early_at = self._slack() / self._rate if spaced else self._early
                self._handle = loop.call_at(self._due - early_at, self.wake)
                return

    def _capacity(self) -> float:
        # uvloop's clock moves in 1 ms steps, so a bucket of one token would release at most
        # one slot per millisecond whatever the rate: hold at least one tick's worth.
        return max(float(self._burst), self._rate * _CLOCK_TICK)

    def _spaced(self) -> bool:
        """True if slots keep strict spacing now: strict, at an interval of two ticks or more.

        Faster than that a millisecond timer cannot space slots one by one; they keep to a
        grid instead, a late one caught up by the next.
        """
        if self._strict_coarse_only and not self._coarse:
            return False
        return self._strict and self._rate * 2 * _CLOCK_TICK <= 1

    def _slack(self) -> float:
        """The tokens a coarse loop clock may lag behind the precise one by (0 on a fine one)."""
        return self._rate * _CLOCK_TICK if self._coarse else 0.0

    def _too_soon(self) -> float:
        """Seconds until the slot after the last is due by the precise clock (0.0: it is).

        Due one interval after the last: the interval of then, or of now if shorter (a cut
        while a caller waits is the tokens' to time, and they wait longer already).
        """
        gap = min(self._gap, 1 / self._rate)
        wait = self._last + gap - self._precise()
        return wait if wait > _EPSILON else 0.0

    def _set_clock(self, loop: asyncio.AbstractEventLoop) -> None:
        """Choose the clock that spaces slots: uvloop's loop.time() moves in whole ms."""
        self._loop = loop
        self._coarse = type(loop).__module__.startswith("uvloop")
        self._precise = time.monotonic if self._coarse else loop.time

    def _take(self) -> None:
        self._tokens -= 1
        if self._spaced():
            # Never two slots closer than the interval: the next counts from this one.
            self._tokens = min(self._tokens, 0.0)
            self._last = self._precise()
            self._gap = 1 / self._rate
        self._grants += 1
        self._since_mark += 1
        if self._grants >= self._hold_at:
            # Answers decide what comes next (:mod:`.holds`): the gate waits for its owner.
            self._hold_at = math.inf
            self._held_slot = self._stamp if self._stamp is not None else -math.inf
            self._paused_until = math.inf

    def describe_gate(self) -> str:
        """Describe the gate at the loop's time, for a repr: '' when it is open."""
        if self._paused_until == math.inf:
            return "held until an answer"
        if self._loop is not None:
            left = self._paused_until - self._loop.time()
            if left > 0:
                return f"paused for {left:.3f}s"
        return ""

    def __repr__(self) -> str:
        state = (
            f"rate={self._rate:.4g}, burst={self._burst}, tokens={self._tokens:.3f}, "
            f"waiters={self.waiting}, acquired={self._grants}"
        )
        if gate := self.describe_gate():
            state += f", {gate}"
        return f"<TokenBucket {state}>"
