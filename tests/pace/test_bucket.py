"""Tests of bulkretry._pace.bucket: pacing, fairness, cancellation, the gate and the hold.

Every test runs on an event loop whose clock is virtual: when nothing is ready, the loop jumps
its clock to the next timer instead of sleeping, so timing is exact and tests are instant.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from typing import Any

import pytest
from aiolimiter import AsyncLimiter
from conftest import VirtualClockLoop, _JumpingSelector, virtual_time

from bulkretry._pace.bucket import TokenBucket


def now() -> float:
    return asyncio.get_running_loop().time()


async def acquire_times(bucket: TokenBucket, n: int) -> list[float]:
    """Start *n* acquirers at once; return the times their slots came, in arrival order."""
    times = [math.nan] * n

    async def one(i: int) -> None:
        await bucket.acquire()
        times[i] = now()

    await asyncio.gather(*(one(i) for i in range(n)))
    return times


async def settle() -> None:
    """Let every ready callback run without moving the clock."""
    for _ in range(5):
        await asyncio.sleep(0)


# --- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0}, {"rate": -1}, {"rate": math.inf}, {"rate": math.nan}, {"rate": 1, "burst": 0}],
)
def test_nonsense_rate_or_burst_is_refused(kwargs: dict[str, Any]) -> None:
    """A rate or burst that cannot work raises ValueError."""
    with pytest.raises(ValueError):
        TokenBucket(**kwargs)


def test_a_new_bucket_is_full_open_and_unused() -> None:
    """A new bucket holds `burst` tokens, its gate was never closed, nothing was handed out."""
    bucket = TokenBucket(5, burst=3)
    assert (bucket.rate, bucket.burst, bucket.tokens) == (5, 3, 3)
    assert bucket.paused_until == -math.inf
    assert bucket.held_slot == math.inf
    assert (bucket.acquired_count, bucket.since_mark, bucket.waiting) == (0, 0, 0)


# --- pacing -----------------------------------------------------------------------------------


@virtual_time
async def test_burst_one_spaces_every_slot_by_one_over_rate() -> None:
    """With burst 1 the first slot is immediate and each next one comes 1/rate later."""
    times = await acquire_times(TokenBucket(4), 9)
    assert times == pytest.approx([i * 0.25 for i in range(9)])


class MillisecondClockLoop(VirtualClockLoop):
    """A virtual clock read in whole milliseconds, as uvloop's loop.time() is."""

    def time(self) -> float:
        return math.floor(self.now * 1000) / 1000


def test_a_millisecond_clock_does_not_cap_a_high_rate_at_one_slot_per_tick() -> None:
    """At 50,000/s with burst 1, a 1 ms clock still lets about 50 slots through per tick."""

    async def measure() -> float:
        times = await acquire_times(TokenBucket(50_000), 5_000)
        return 5_000 / (times[-1] - times[0])

    with asyncio.Runner(loop_factory=MillisecondClockLoop) as runner:
        rate = runner.run(measure())
    assert rate == pytest.approx(50_000, rel=0.05)


@pytest.mark.parametrize(("rate", "burst"), [(400, 1), (800, 1), (400, 2)])
def test_timers_firing_late_on_a_millisecond_clock_do_not_lose_slots(rate: int, burst: int) -> None:
    """Slots on a grid (not strict, or faster than one per two ticks) keep the full rate."""

    async def measure() -> float:
        times = await acquire_times(TokenBucket(rate, burst=burst), 2 * rate)
        return (2 * rate - burst) / (times[-1] - times[burst - 1])

    with asyncio.Runner(loop_factory=MillisecondClockLoop) as runner:
        measured = runner.run(measure())
    assert measured == pytest.approx(rate, rel=0.02)


class _LateSelector(_JumpingSelector):
    """Timers fire up to 0.9 ms late, at random, as on a busy machine."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__(loop)
        self._late_loop = loop
        self._rng = random.Random(7)

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(timeout)
        if not ready and timeout:
            self._late_loop.now += self._rng.uniform(0, 0.0009)
        return ready


class LateTimerLoop(VirtualClockLoop):
    """A virtual clock whose timers fire late by up to 0.9 ms."""

    def __init__(self) -> None:
        self.now = 0.0
        asyncio.SelectorEventLoop.__init__(self, _LateSelector(self))


@pytest.mark.parametrize("rate", [5.0, 200.0, 500.0])
def test_burst_one_never_hands_out_two_slots_closer_than_the_interval(rate: float) -> None:
    """A quota with no burst refuses a request sooner than 1/rate after the last: none is,
    even when timers fire late (a grid would let the next slot catch up)."""

    async def gaps() -> list[float]:
        bucket = TokenBucket(rate)
        bucket.strict()
        times = await acquire_times(bucket, 50)
        await asyncio.sleep(3.5 / rate)  # a quiet spell saves up one token, never two
        times += await acquire_times(bucket, 50)
        return [b - a for a, b in itertools.pairwise(times)]

    with asyncio.Runner(loop_factory=LateTimerLoop) as runner:
        measured = runner.run(gaps())
    assert min(measured) >= 1 / rate - 1e-9
    # Each gap is the interval plus that timer's lateness, never more.
    assert max(measured[:49]) <= 1 / rate + 0.001


@virtual_time
async def test_a_rate_raised_while_a_caller_waits_times_its_slot_by_the_tokens() -> None:
    """Half a token at the old rate, the rest at the new one: spacing adds no wait of its own."""
    bucket = TokenBucket(10)
    bucket.strict()
    await bucket.acquire()
    start = now()
    await asyncio.sleep(0.05)
    bucket.set_rate(now(), 20)  # half a token at 10/s, the rest in 25 ms at 20/s
    assert await acquire_times(bucket, 1) == pytest.approx([start + 0.075])


@pytest.mark.parametrize("burst", [1, 3, 10])
@virtual_time
async def test_no_window_holds_more_than_burst_plus_rate_times_its_length(burst: int) -> None:
    """Over any window of T seconds at most burst + rate*T slots are handed out."""
    rate = 5.0
    times = await acquire_times(TokenBucket(rate, burst=burst), 80)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6


@virtual_time
async def test_no_startup_burst_unlike_aiolimiter() -> None:
    """In its first second at rate 10, aiolimiter lets 19 through; the bucket 10."""
    limiter = AsyncLimiter(10, 1)
    bucket = TokenBucket(10)
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(40)]
    tasks += [asyncio.create_task(bucket.acquire()) for _ in range(40)]
    await asyncio.sleep(0.95)
    assert sum(task.done() for task in tasks[:40]) == 19
    assert sum(task.done() for task in tasks[40:]) == 10
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("burst", [1, 4])
@virtual_time
async def test_a_quiet_spell_saves_up_at_most_burst_slots(burst: int) -> None:
    """After a long idle time, exactly `burst` slots are immediate, then the pace resumes."""
    bucket = TokenBucket(2, burst=burst)
    await acquire_times(bucket, burst + 3)
    await asyncio.sleep(100)
    start = now()
    times = [t - start for t in await acquire_times(bucket, burst + 2)]
    assert times == pytest.approx([0.0] * burst + [0.5, 1.0])


@virtual_time
async def test_a_new_rate_moves_the_waiting_head() -> None:
    """set_rate while a caller waits re-times its slot by the new rate from then on."""
    bucket = TokenBucket(1)
    await bucket.acquire()
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(0.5)
    bucket.set_rate(now(), 0.25)  # half a token earned at 1/s; the other half takes 2 s
    assert await waiter == pytest.approx([2.5])


@virtual_time
async def test_drain_throws_away_the_saved_burst() -> None:
    """After drain, even a full bucket makes the next caller wait a whole interval."""
    bucket = TokenBucket(4, burst=5)
    await asyncio.sleep(10)
    bucket.refill(now())
    bucket.drain()
    assert bucket.tokens == 0
    assert await acquire_times(bucket, 2) == pytest.approx([10.25, 10.5])


@pytest.mark.parametrize("strict", [False, True], ids=["grid", "strict"])
@virtual_time
async def test_count_from_spaces_the_next_slot_from_the_time_given(strict: bool) -> None:
    """A slot taken at 0 whose request was answered at 0.3: the next waits until 0.3 + 1/rate,
    and a caller already waiting is pushed back to it."""
    bucket = TokenBucket(5)
    if strict:
        bucket.strict()
    await bucket.acquire()  # at 0; the next would be due at 0.2
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(0.1)
    bucket.count_from(0.1)
    assert await waiter == pytest.approx([0.3])
    await asyncio.sleep(0.5)
    bucket.count_from(now())  # a quiet spell's saved slot is spent too
    assert await acquire_times(bucket, 2) == pytest.approx([1.0, 1.2])


@virtual_time
async def test_count_from_keeps_a_configured_burst() -> None:
    """With --burst, the quota has one: the saved slots go at once (10 requests at --rate 2
    --burst 10 took 5 s instead of 0.5 s when they were thrown away)."""
    bucket = TokenBucket(2, burst=10)
    bucket.count_from(now())
    assert await acquire_times(bucket, 10) == pytest.approx([0.0] * 10)


# --- fairness and cancellation ----------------------------------------------------------------


@virtual_time
async def test_slots_are_handed_out_in_arrival_order() -> None:
    """Waiters are served first come, first served."""
    bucket = TokenBucket(10)
    order: list[int] = []

    async def one(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    tasks = []
    for i in range(20):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    assert order == list(range(20))


@virtual_time
async def test_a_new_caller_does_not_overtake_waiters() -> None:
    """A caller arriving when a slot is free still queues behind earlier waiters."""
    bucket = TokenBucket(1)
    await bucket.acquire()
    order: list[str] = []

    async def one(name: str) -> None:
        await bucket.acquire()
        order.append(name)

    first = asyncio.create_task(one("first"))
    await settle()
    await asyncio.sleep(1)  # the first waiter's slot is due now, a newcomer arrives with it
    await asyncio.gather(first, one("newcomer"))
    assert order == ["first", "newcomer"]


@virtual_time
async def test_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    """Cancelling a waiter loses no slot: the one behind it is served at its time."""
    bucket = TokenBucket(1)
    await bucket.acquire()
    times: dict[str, float] = {}

    async def one(name: str) -> None:
        await bucket.acquire()
        times[name] = now()

    a, b, c = (asyncio.create_task(one(name)) for name in "abc")
    await settle()
    b.cancel()
    await asyncio.gather(a, c)
    assert b.cancelled()
    assert times == {"a": pytest.approx(1.0), "c": pytest.approx(2.0)}
    assert bucket.acquired_count == 3


@virtual_time
async def test_waiter_cancelled_after_its_slot_was_granted_returns_the_slot() -> None:
    """A slot granted to a waiter cancelled before it could use it goes to the next waiter."""
    bucket = TokenBucket(1, burst=2)
    bucket.pause_until(1.0)
    times: dict[str, float] = {}
    victim: asyncio.Task[None] | None = None

    async def one(name: str) -> None:
        await bucket.acquire()
        times[name] = now()
        if name == "x" and victim is not None:
            # x and the victim got their slots in the same wake-up; x runs first.
            victim.cancel()

    x = asyncio.create_task(one("x"))
    victim = asyncio.create_task(one("victim"))
    after = asyncio.create_task(one("after"))
    await asyncio.gather(x, after)
    assert victim.cancelled()
    assert times == {"x": pytest.approx(1.0), "after": pytest.approx(1.0)}
    assert bucket.acquired_count == 2
    assert bucket.since_mark == 2


@virtual_time
async def test_mark_restarts_the_count_and_a_slot_given_back_never_takes_it_below_zero() -> None:
    """since_mark counts from mark(); a slot granted before the mark and given back after: 0."""
    bucket = TokenBucket(1, burst=2)
    await bucket.acquire()
    assert bucket.since_mark == 1
    bucket.pause_until(1.0)
    victim: asyncio.Task[None] | None = None

    async def marker() -> None:
        await bucket.acquire()
        bucket.mark()  # the victim got its slot in the same wake-up, before this mark
        assert victim is not None
        victim.cancel()

    first = asyncio.create_task(marker())
    victim = asyncio.create_task(bucket.acquire())
    await first
    await asyncio.gather(victim, return_exceptions=True)
    assert victim.cancelled()
    assert (bucket.since_mark, bucket.acquired_count) == (0, 2)
    await bucket.acquire()
    assert (bucket.since_mark, bucket.acquired_count) == (1, 3)


# --- the gate ---------------------------------------------------------------------------------


@virtual_time
async def test_pause_holds_every_slot_until_its_end() -> None:
    """No slot is handed out during a pause; the first comes exactly at its end."""
    bucket = TokenBucket(10, burst=3)
    bucket.pause_until(7.5)
    times = await acquire_times(bucket, 4)
    assert times == pytest.approx([7.5, 7.5, 7.5, 7.6])
    assert bucket.paused_until == 7.5


@virtual_time
async def test_pause_extends_but_never_shortens() -> None:
    """A later pause end wins; an earlier one is ignored, even while waiters wait."""
    bucket = TokenBucket(10)
    assert bucket.pause_until(5)
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await settle()
    assert not bucket.pause_until(3)
    assert bucket.paused_until == 5
    assert bucket.pause_until(8)
    assert bucket.paused_until == 8
    assert await waiter == pytest.approx([8.0])


@virtual_time
async def test_resume_opens_the_gate_early() -> None:
    """resume(now) ends a pause at once and serves the waiters; a gate open by then stays so."""
    bucket = TokenBucket(10)
    bucket.pause_until(30)
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(2)
    bucket.resume(now())
    assert await waiter == pytest.approx([2.0])
    bucket.resume(now() + 1)
    assert bucket.paused_until == pytest.approx(2.0)


# --- the hold ---------------------------------------------------------------------------------


@virtual_time
async def test_a_hold_shuts_the_gate_after_the_given_slot_until_its_owner_opens_it() -> None:
    """hold_after(n): slot n is the last; held_slot is its time; no timer ever opens the gate."""
    bucket = TokenBucket(10)
    bucket.hold_after(3)
    assert await acquire_times(bucket, 3) == pytest.approx([0.0, 0.1, 0.2])
    assert bucket.paused_until == math.inf
    assert bucket.held_slot == pytest.approx(0.2)
    late = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(100)
    assert not late.done()
    bucket.unhold()
    bucket.resume(now())
    assert await late == pytest.approx([100.2])
    assert bucket.held_slot == math.inf


@virtual_time
async def test_end_hold_opens_a_held_gate_without_waking_anyone() -> None:
    """end_hold(now) turns a hold into a pause that ended at now; wake() then serves waiters."""
    bucket = TokenBucket(10)
    bucket.hold_after(1)
    await bucket.acquire()
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(5)
    bucket.end_hold(now())
    assert bucket.paused_until == pytest.approx(5.0)
    await settle()
    assert not waiter.done()
    bucket.wake()
    assert await waiter == pytest.approx([5.0])
    bucket.end_hold(9.0)  # not held: nothing changes
    assert bucket.paused_until == pytest.approx(5.0)


@virtual_time
async def test_unhold_cancels_a_hold_to_come() -> None:
    """A hold forgotten before its slot came never shuts the gate."""
    bucket = TokenBucket(10)
    bucket.hold_after(2)
    bucket.unhold()
    assert await acquire_times(bucket, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert bucket.paused_until == -math.inf


# --- repr -------------------------------------------------------------------------------------


def test_repr_shows_the_state() -> None:
    """repr shows the rate, burst, tokens, waiters and slots handed out."""
    assert repr(TokenBucket(5, burst=2)) == (
        "<TokenBucket rate=5, burst=2, tokens=2.000, waiters=0, acquired=0>"
    )


@virtual_time
async def test_repr_shows_a_pause_and_a_hold() -> None:
    """repr shows how long a pause still lasts, and a gate held until an answer."""
    bucket = TokenBucket(5)
    await bucket.acquire()
    bucket.pause_until(12.5)
    assert repr(bucket).endswith(", acquired=1, paused for 12.500s>")
    bucket.resume(now())
    bucket.hold_after(2)
    await bucket.acquire()
    assert repr(bucket).endswith(", acquired=2, held until an answer>")
