"""Tests of bulkretry._pace.throttle: pacing, fairness, learning the quota, and the concurrency cap.

Every test runs on an event loop whose clock is virtual: when nothing is ready, the loop jumps
its clock to the next timer instead of sleeping, so timing is exact and tests are instant.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiolimiter import AsyncLimiter
from conftest import VirtualClockLoop, virtual_time
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkretry._pace.throttle import (
    BETA,
    DEFAULT_RECOVERY,
    MIN_RATE_FRACTION,
    ConcurrencyCap,
    Throttle,
)


def now() -> float:
    return asyncio.get_running_loop().time()


async def acquire_times(throttle: Throttle, n: int) -> list[float]:
    """Start *n* acquirers at once; return the times their slots came, in arrival order."""
    times = [math.nan] * n

    async def one(i: int) -> None:
        await throttle.acquire()
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
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": math.inf},
        {"rate": 1, "burst": 0},
        {"rate": 1, "min_rate": 2},
        {"rate": 1, "min_rate": 0},
        {"rate": 1, "pause_after": -1},
        {"rate": 1, "recovery": 0},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, Any]) -> None:
    """A rate, burst, floor, pause or recovery that cannot work raises ValueError."""
    with pytest.raises(ValueError):
        Throttle(**kwargs)


def test_defaults() -> None:
    """Defaults: burst 1, floor at MIN_RATE_FRACTION of the rate, full rate, never paused."""
    throttle = Throttle(5)
    assert throttle.burst == 1
    assert throttle.rate == throttle.max_rate == 5
    assert throttle.min_rate == pytest.approx(5 * MIN_RATE_FRACTION)
    assert throttle.paused_until == -math.inf
    assert throttle.throttled_count == 0
    assert throttle.latency is None


# --- pacing -----------------------------------------------------------------------------------


@virtual_time
async def test_burst_one_spaces_every_slot_by_one_over_rate() -> None:
    """With burst 1 the first slot is immediate and each next one comes 1/rate later."""
    times = await acquire_times(Throttle(4), 9)
    assert times == pytest.approx([i * 0.25 for i in range(9)])


class MillisecondClockLoop(VirtualClockLoop):
    """A virtual clock read in whole milliseconds, as uvloop's loop.time() is."""

    def time(self) -> float:
        return math.floor(self.now * 1000) / 1000


def test_a_millisecond_clock_does_not_cap_a_high_rate_at_one_slot_per_tick() -> None:
    """At 50,000/s with burst 1, a 1 ms clock still lets about 50 slots through per tick."""

    async def measure() -> float:
        throttle = Throttle(50_000)
        times = await acquire_times(throttle, 5_000)
        return 5_000 / (times[-1] - times[0])

    with asyncio.Runner(loop_factory=MillisecondClockLoop) as runner:
        rate = runner.run(measure())
    assert rate == pytest.approx(50_000, rel=0.05)


def test_timers_firing_late_on_a_millisecond_clock_do_not_lose_slots() -> None:
    """At 400/s (a slot every 2.5 ms) on a 1 ms clock, burst 1 still delivers the full rate."""

    async def measure() -> float:
        throttle = Throttle(400)
        times = await acquire_times(throttle, 800)
        return 799 / (times[-1] - times[0])

    with asyncio.Runner(loop_factory=MillisecondClockLoop) as runner:
        rate = runner.run(measure())
    assert rate == pytest.approx(400, rel=0.02)


@pytest.mark.parametrize("burst", [1, 3, 10])
@virtual_time
async def test_no_window_holds_more_than_burst_plus_rate_times_its_length(burst: int) -> None:
    """Over any window of T seconds at most burst + rate*T slots are handed out."""
    rate = 5.0
    times = await acquire_times(Throttle(rate, burst=burst), 80)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6


@virtual_time
async def test_no_startup_burst_unlike_aiolimiter() -> None:
    """In its first second at rate 10, aiolimiter lets 19 through; the throttle 10."""
    limiter = AsyncLimiter(10, 1)
    throttle = Throttle(10)
    tasks = [asyncio.create_task(limiter.acquire()) for _ in range(40)]
    tasks += [asyncio.create_task(throttle.acquire()) for _ in range(40)]
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
    throttle = Throttle(2, burst=burst)
    await acquire_times(throttle, burst + 3)
    await asyncio.sleep(100)
    start = now()
    times = [t - start for t in await acquire_times(throttle, burst + 2)]
    assert times == pytest.approx([0.0] * burst + [0.5, 1.0])


@virtual_time
async def test_slots_are_handed_out_in_arrival_order() -> None:
    """Waiters are served first come, first served."""
    throttle = Throttle(10)
    order: list[int] = []

    async def one(i: int) -> None:
        await throttle.acquire()
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
    throttle = Throttle(1)
    await throttle.acquire()
    order: list[str] = []

    async def one(name: str) -> None:
        await throttle.acquire()
        order.append(name)

    first = asyncio.create_task(one("first"))
    await settle()
    await asyncio.sleep(1)  # the first waiter's slot is due now, a newcomer arrives with it
    await asyncio.gather(first, one("newcomer"))
    assert order == ["first", "newcomer"]


@virtual_time
async def test_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    """Cancelling a waiter loses no slot: the one behind it is served at its time."""
    throttle = Throttle(1)
    await throttle.acquire()
    times: dict[str, float] = {}

    async def one(name: str) -> None:
        await throttle.acquire()
        times[name] = now()

    a, b, c = (asyncio.create_task(one(name)) for name in "abc")
    await settle()
    b.cancel()
    await asyncio.gather(a, c)
    assert b.cancelled()
    assert times == {"a": pytest.approx(1.0), "c": pytest.approx(2.0)}
    assert throttle.acquired_count == 3


@virtual_time
async def test_waiter_cancelled_after_its_slot_was_granted_returns_the_slot() -> None:
    """A slot granted to a waiter cancelled before it could use it goes to the next waiter."""
    throttle = Throttle(1, burst=2)
    throttle.pause_until(1.0)
    times: dict[str, float] = {}
    victim: asyncio.Task[None] | None = None

    async def one(name: str) -> None:
        await throttle.acquire()
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
    assert throttle.acquired_count == 2


# --- pauses -----------------------------------------------------------------------------------


@virtual_time
async def test_pause_holds_every_slot_until_its_end() -> None:
    """No slot is handed out during a pause; the first comes exactly at its end."""
    throttle = Throttle(10, burst=3)
    throttle.pause_until(7.5)
    times = await acquire_times(throttle, 4)
    assert times == pytest.approx([7.5, 7.5, 7.5, 7.6])
    assert throttle.paused_until == 7.5


@virtual_time
async def test_pause_extends_but_never_shortens() -> None:
    """A later pause end wins; an earlier one is ignored, even while waiters wait."""
    throttle = Throttle(10)
    throttle.pause_until(5)
    waiter = asyncio.create_task(acquire_times(throttle, 1))
    await settle()
    throttle.pause_until(3)
    assert throttle.paused_until == 5
    throttle.pause_until(8)
    assert throttle.paused_until == 8
    assert await waiter == pytest.approx([8.0])


# --- learning the rate ------------------------------------------------------------------------


@virtual_time
async def test_429_cuts_the_rate_by_beta_and_empties_the_saved_burst() -> None:
    """A 429 multiplies the rate by BETA and the next slot waits a full new interval."""
    throttle = Throttle(10, burst=5)
    await throttle.acquire()
    throttle.on_throttled(None)
    assert throttle.rate == pytest.approx(10 * BETA)
    assert throttle.throttled_count == 1
    times = await acquire_times(throttle, 2)
    assert times == pytest.approx([1 / 7, 2 / 7])


@virtual_time
async def test_429s_answering_requests_sent_before_the_cut_cut_only_once() -> None:
    """Until a slot was handed out after the cut, further 429s belong to the same episode."""
    throttle = Throttle(10)
    await acquire_times(throttle, 8)
    throttle.on_throttled(None)
    await asyncio.sleep(30)
    for _ in range(7):
        throttle.on_throttled(None)
    assert throttle.rate == pytest.approx(7.0)
    assert throttle.throttled_count == 8


@virtual_time
async def test_429s_within_the_episode_window_cut_only_once() -> None:
    """Without send times, 429s within twice the mean latency of the cut do not cut again."""
    throttle = Throttle(10)
    throttle.observe_latency(0.5)
    await throttle.acquire()
    throttle.on_throttled(None)
    await acquire_times(throttle, 3)
    assert now() < 1.0
    throttle.on_throttled(None)
    assert throttle.rate == pytest.approx(7.0)
    await asyncio.sleep(1.0 - now())
    throttle.on_throttled(None)
    assert throttle.rate == pytest.approx(4.9)


@virtual_time
async def test_episode_window_is_one_second_until_a_latency_is_known() -> None:
    """With no latency observed, 429s within DEFAULT_EPISODE (1 s) of a cut are one episode."""
    throttle = Throttle(10)
    await throttle.acquire()
    throttle.on_throttled(None)
    await acquire_times(throttle, 5)
    throttle.on_throttled(None)
    assert throttle.rate == pytest.approx(7.0)
    await asyncio.sleep(1.0 - now())
    throttle.on_throttled(None)
    assert throttle.rate == pytest.approx(4.9)


@virtual_time
async def test_send_time_tells_exactly_whether_a_429_is_news() -> None:
    """With sent_at, a 429 cuts again only if its request left after the last cut."""
    throttle = Throttle(10)
    await throttle.acquire()
    before_cut = now()
    throttle.on_throttled(None, sent_at=before_cut)
    await throttle.acquire()
    await asyncio.sleep(20)
    throttle.on_throttled(None, sent_at=before_cut)
    assert throttle.rate == pytest.approx(7.0)
    throttle.on_success()  # no pause from the next cut
    await throttle.acquire()
    throttle.on_throttled(None, sent_at=now())
    assert throttle.rate < 7.0


@virtual_time
async def test_successes_recover_along_a_cubic_curve_and_never_pass_max_rate() -> None:
    """After a cut, the rate climbs back, flattening near the old rate, capped at max_rate."""
    throttle = Throttle(10, recovery=100)
    await throttle.acquire()
    throttle.on_throttled(None)
    recovery_seconds = 100 / 10
    seen = [throttle.rate]
    for _ in range(60):
        await asyncio.sleep(recovery_seconds / 20)
        throttle.on_success()
        seen.append(throttle.rate)
    assert seen == sorted(seen)
    assert max(seen) == 10
    # Half way, CUBIC has recovered 7/8 of the drop: 7 + 3 * (1 - 0.5**3).
    assert seen[10] == pytest.approx(10 - 3 * 0.5**3)
    assert seen[20] == pytest.approx(10)


@virtual_time
async def test_recovery_probes_above_the_rate_of_the_last_cut() -> None:
    """Once back at the rate of the last cut, the rate keeps rising (up to the maximum)."""
    throttle = Throttle(100, recovery=100)
    await throttle.acquire()
    throttle.on_throttled(None)
    await throttle.acquire()
    await asyncio.sleep(1.5)
    throttle.on_throttled(None)  # second episode: the last cut's rate is now 70
    assert throttle.rate == pytest.approx(49)
    await asyncio.sleep(100 / 70 * 2)
    throttle.on_success()
    assert 70 < throttle.rate < 100


@virtual_time
async def test_rate_never_falls_below_min_rate() -> None:
    """However many episodes, the rate stops at min_rate."""
    throttle = Throttle(10, min_rate=1)
    for _ in range(30):
        await throttle.acquire()
        throttle.on_success()
        throttle.on_throttled(None)
        await asyncio.sleep(5)
    assert throttle.rate == 1


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["ok", "429", "429ra", "acquire"]),
            st.floats(min_value=0, max_value=20),
        ),
        max_size=60,
    )
)
def test_rate_stays_between_min_and_max_rate_whatever_happens(
    events: list[tuple[str, float]],
) -> None:
    """Any sequence of successes, 429s and acquisitions keeps min_rate <= rate <= max_rate."""

    async def main() -> None:
        throttle = Throttle(8, min_rate=0.5)
        for kind, gap in events:
            await asyncio.sleep(gap)
            if kind == "ok":
                throttle.on_success()
            elif kind == "429":
                throttle.on_throttled(None)
            elif kind == "429ra":
                throttle.on_throttled(gap)
            else:
                await throttle.acquire()
            assert 0.5 <= throttle.rate <= 8

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(main())


@virtual_time
async def test_cut_while_waiting_pushes_the_waiter_back() -> None:
    """A waiter's slot time follows a rate change made while it waits."""
    throttle = Throttle(1)
    await throttle.acquire()
    waiter = asyncio.create_task(acquire_times(throttle, 1))
    await asyncio.sleep(0.5)
    throttle.on_throttled(None)  # half a token saved goes; a full interval at 0.7/s follows
    assert await waiter == pytest.approx([0.5 + 1 / 0.7])


@virtual_time
async def test_long_retry_after_pauses_everyone() -> None:
    """A Retry-After above pause_after pauses the whole limiter until then."""
    throttle = Throttle(10, pause_after=5)
    await throttle.acquire()
    throttle.on_throttled(30)
    assert throttle.paused_until == 30
    assert await acquire_times(throttle, 1) == pytest.approx([30.0])


@virtual_time
async def test_short_retry_after_alone_does_not_pause() -> None:
    """A first 429 with a Retry-After within pause_after cuts the rate but pauses nobody."""
    throttle = Throttle(10, pause_after=5)
    await throttle.acquire()
    throttle.on_throttled(3)
    assert throttle.paused_until == -math.inf
    assert await acquire_times(throttle, 1) == pytest.approx([1 / 7])


@virtual_time
async def test_429s_that_keep_coming_after_a_cut_pause_everyone() -> None:
    """A new episode with no success since the last cut pauses for its Retry-After."""
    throttle = Throttle(10, pause_after=5)
    await throttle.acquire()
    throttle.on_throttled(2)
    await acquire_times(throttle, 10)
    throttle.on_throttled(2)
    assert throttle.rate == pytest.approx(4.9)
    assert throttle.paused_until == pytest.approx(now() + 2)


@virtual_time
async def test_a_success_between_episodes_avoids_the_pause() -> None:
    """If something succeeded since the last cut, the next episode only cuts."""
    throttle = Throttle(10, pause_after=5)
    await throttle.acquire()
    throttle.on_throttled(2)
    await acquire_times(throttle, 10)
    throttle.on_success()
    throttle.on_throttled(2)
    assert throttle.paused_until == -math.inf


async def spend_a_window(throttle: Throttle, successes: int, retry_after: float) -> float:
    """Send one pass: *successes* answered 200, then one 429; return that 429's send time."""
    for _ in range(successes):
        await throttle.acquire()
        throttle.on_success(now())
    await throttle.acquire()
    sent = now()
    throttle.on_throttled(retry_after, sent_at=sent)
    return sent


async def window_mode(n: int = 100) -> Throttle:
    """A throttle that met a fixed window of *n* requests: two pauses with *n* successes between."""
    throttle = Throttle(40, pause_after=5)
    await throttle.acquire()
    throttle.on_throttled(8, sent_at=now())  # a long Retry-After: the window resets at t=8
    await asyncio.sleep(8)
    await spend_a_window(throttle, n, 6)
    return throttle


@virtual_time
async def test_two_pauses_with_successes_between_mean_a_fixed_window() -> None:
    """From one pause to the next the quota allowed N successes: window mode, N learned."""
    throttle = await window_mode(100)
    assert throttle.window_requests == 100
    assert throttle.rate == throttle.max_rate == 40  # a pass goes at the configured rate
    assert throttle.paused_until == pytest.approx(now() + 6)


@virtual_time
async def test_window_mode_holds_after_n_plus_one_slots_until_the_last_is_answered() -> None:
    """A pass hands out N + 1 slots, then none until the last one's answer arrives."""
    throttle = await window_mode(100)
    await asyncio.sleep(throttle.paused_until - now())
    start = now()
    await acquire_times(throttle, 101)
    assert now() == pytest.approx(start + 100 / 40)
    late = asyncio.create_task(acquire_times(throttle, 1))
    await asyncio.sleep(60)
    assert not late.done()
    answered = now()
    throttle.on_throttled(1, sent_at=answered - 60)  # the 101st: the window is spent
    assert await late == pytest.approx([answered + 1])


@virtual_time
async def test_a_throttled_slot_after_n_costs_one_429_per_window() -> None:
    """Windows of N: each pass is N successes and one 429, and N stays learned."""
    throttle = await window_mode(100)
    for _ in range(5):
        await asyncio.sleep(throttle.paused_until - now())
        before = throttle.throttled_count
        sent = await spend_a_window(throttle, 100, 1)
        assert throttle.throttled_count == before + 1
        assert throttle.paused_until == pytest.approx(sent + 1)
    assert throttle.window_requests == 100


@virtual_time
async def test_when_the_slot_after_n_succeeds_the_pass_goes_on() -> None:
    """A pass that ran into the next window goes on past N + 1 until a 429."""
    throttle = await window_mode(100)
    await asyncio.sleep(throttle.paused_until - now())
    for _ in range(101):
        await throttle.acquire()
        throttle.on_success(now())
    start = now()
    assert await acquire_times(throttle, 50) == pytest.approx(
        [start + (i + 1) / 40 for i in range(50)]
    )


@virtual_time
async def test_a_smaller_window_lowers_n_from_the_last_complete_pass() -> None:
    """When the window shrinks, N follows the smaller of the last two complete passes."""
    throttle = await window_mode(100)
    for successes in (100, 60, 60):
        await asyncio.sleep(throttle.paused_until - now())
        await spend_a_window(throttle, successes, 1)
    assert throttle.window_requests == 60


@virtual_time
async def test_a_success_behind_a_429_of_the_same_pass_leaves_window_mode() -> None:
    """A 429 then a success for a later request of the same pass: not a fixed window."""
    throttle = await window_mode(100)
    await asyncio.sleep(throttle.paused_until - now())
    await throttle.acquire()
    first = now()
    await throttle.acquire()
    second = now()
    throttle.on_throttled(1, sent_at=first)
    assert throttle.window_requests == 100
    throttle.on_success(second)
    assert throttle.window_requests is None
    assert throttle.paused_until == pytest.approx(first + 1 + 1 / 40)  # its Retry-After stays


def test_repr_shows_the_state() -> None:
    """repr shows the learned and maximum rate, burst, tokens, waiters and counts."""
    text = repr(Throttle(5, burst=2))
    assert text.startswith("<Throttle rate=5/5, burst=2, tokens=2.000, waiters=0")
    assert "throttled=0" in text


@virtual_time
async def test_repr_shows_a_pause() -> None:
    """repr shows how long a pause still lasts."""
    throttle = Throttle(5)
    await throttle.acquire()
    throttle.pause_until(12.5)
    assert "paused for 12.500s" in repr(throttle)


# --- the concurrency cap ----------------------------------------------------------------------


def test_cap_refuses_nonsense() -> None:
    """A cap below one or a headroom of zero raises ValueError."""
    with pytest.raises(ValueError):
        ConcurrencyCap(Throttle(1), max_concurrency=0)
    with pytest.raises(ValueError):
        ConcurrencyCap(Throttle(1), max_concurrency=1, headroom=0)


@pytest.mark.parametrize(
    ("rate", "latency", "expected"),
    [
        (5, 0.2, 3),  # ceil(5 * 0.2 * 2) + 1
        (5, 1.0, 11),
        (5, 10.0, 16),  # clamped to max_concurrency
        (0.1, 0.5, 2),  # ceil(0.1) + 1
    ],
)
def test_cap_limit_follows_littles_law(rate: float, latency: float, expected: int) -> None:
    """limit = clamp(ceil(rate * latency * headroom) + 1, 1, max_concurrency)."""
    throttle = Throttle(rate)
    cap = ConcurrencyCap(throttle, max_concurrency=16)
    assert cap.limit == 16
    cap.observe(latency)
    assert cap.limit == expected


def test_cap_latency_is_a_moving_average() -> None:
    """Each observation moves the average a fifth of the way towards it."""
    throttle = Throttle(1)
    cap = ConcurrencyCap(throttle, max_concurrency=8)
    cap.observe(1.0)
    cap.observe(2.0)
    assert throttle.latency == pytest.approx(1.2)


@virtual_time
async def test_cap_holds_callers_beyond_the_limit_until_a_release() -> None:
    """Callers beyond the limit wait, in order, for places given back."""
    cap = ConcurrencyCap(Throttle(10), max_concurrency=2)
    order: list[int] = []

    async def one(i: int) -> None:
        async with cap:
            order.append(i)
            await asyncio.sleep(1)

    await asyncio.gather(*(one(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert now() == pytest.approx(3.0)
    assert cap.in_flight == 0


@virtual_time
async def test_slow_server_shrinks_the_cap() -> None:
    """When latency drops the limit, new callers wait until in-flight requests fall below it."""
    throttle = Throttle(1)
    cap = ConcurrencyCap(throttle, max_concurrency=8)
    for _ in range(4):
        await cap.acquire()
    cap.observe(0.4)  # limit = ceil(0.8) + 1 = 2
    waiter = asyncio.create_task(cap.acquire())
    await settle()
    cap.release()
    cap.release()
    await settle()
    assert not waiter.done()
    cap.release()
    await settle()
    assert waiter.done()
    assert cap.in_flight == 2


@virtual_time
async def test_cap_waiter_cancelled_after_admission_gives_the_place_back() -> None:
    """A waiter admitted but cancelled before running does not keep its place."""
    cap = ConcurrencyCap(Throttle(1), max_concurrency=1)
    await cap.acquire()
    victim = asyncio.create_task(cap.acquire())
    await settle()
    cap.release()
    victim.cancel()
    await settle()
    assert victim.cancelled()
    assert cap.in_flight == 0
    await cap.acquire()
    plain = asyncio.create_task(cap.acquire())
    await settle()
    plain.cancel()
    await settle()
    cap.release()
    assert cap.in_flight == 0
    assert "waiters=0" in repr(cap)


def test_cap_release_without_acquire_is_an_error() -> None:
    """Releasing more often than acquiring raises RuntimeError."""
    with pytest.raises(RuntimeError):
        ConcurrencyCap(Throttle(1), max_concurrency=1).release()


def test_cap_repr_shows_the_state() -> None:
    """repr shows places in flight, the limit and its ceiling."""
    assert repr(ConcurrencyCap(Throttle(1), max_concurrency=4)) == (
        "<ConcurrencyCap in_flight=0, limit=4/4, waiters=0>"
    )


# --- simulation against fake quotas -----------------------------------------------------------


class TokenBucketQuota:
    """A server that allows `rate` per second with bursts of `burst`, like most API gateways."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = 0.0

    def _fill(self, at: float) -> None:
        self.tokens = min(self.burst, self.tokens + (at - self.stamp) * self.rate)
        self.stamp = at

    def set_rate(self, at: float, rate: float) -> None:
        self._fill(at)
        self.rate = rate

    def admit(self, at: float) -> float | None:
        """Return None if the request is allowed, else its Retry-After in whole seconds."""
        self._fill(at)
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return float(math.ceil((1 - self.tokens) / self.rate))


class FixedWindowQuota:
    """A server that allows `limit` requests per window; Retry-After points at the window's end."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.index = -1
        self.count = 0

    @property
    def rate(self) -> float:
        return self.limit / self.window

    def set_rate(self, at: float, rate: float) -> None:
        self.limit = round(rate * self.window)

    def admit(self, at: float) -> float | None:
        """Return None if the request is allowed, else its Retry-After in whole seconds."""
        index = int(at // self.window)
        if index != self.index:
            self.index, self.count = index, 0
        if self.count < self.limit:
            self.count += 1
            return None
        return float(math.ceil((index + 1) * self.window - at))


@dataclass
class Outcome:
    requests: int
    throttled: int
    elapsed: float
    goodput: float  # successes over what the quota allowed in the time taken
    settled_rate: float  # mean learned rate over the last fifth of the run


async def simulate(
    quota: TokenBucketQuota | FixedWindowQuota,
    configured: float,
    successes: int,
    *,
    halve_at: float | None = None,
    workers: int = 16,
    latency: float = 0.2,
    jitter: float = 0.1,
    seed: int = 1,
) -> Outcome:
    """Drive `workers` concurrent senders through one Throttle against a fake quota.

    Each request takes latency plus up to `jitter` seconds and is judged by the quota half way.
    A throttled record waits its Retry-After when that is short (as the retry policy does) and
    goes again; the others carry on. Nothing here touches a socket.
    """
    rng = random.Random(seed)
    throttle = Throttle(configured)
    quota_at_start = quota.rate
    done = throttled = 0
    samples: list[tuple[float, float]] = []

    async def worker() -> None:
        nonlocal done, throttled, halve_at
        while done < successes:
            await throttle.acquire()
            sent_at = now()
            if halve_at is not None and now() >= halve_at:
                quota.set_rate(now(), quota.rate / 2)
                halve_at = None
            took = latency + rng.random() * jitter
            await asyncio.sleep(took / 2)
            retry_after = quota.admit(now())
            await asyncio.sleep(took / 2)
            throttle.observe_latency(took)
            if retry_after is None:
                done += 1
                throttle.on_success(sent_at)
            else:
                throttled += 1
                throttle.on_throttled(retry_after, sent_at=sent_at)
                if retry_after <= 5:
                    await asyncio.sleep(retry_after)
            samples.append((now(), throttle.rate))

    halving = halve_at
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = now()
    if halving is not None and elapsed > halving:
        allowed = quota_at_start * halving + quota_at_start / 2 * (elapsed - halving)
    else:
        allowed = quota_at_start * elapsed
    tail = [rate for at, rate in samples if at >= 0.8 * elapsed]
    return Outcome(
        requests=done + throttled,
        throttled=throttled,
        elapsed=elapsed,
        goodput=done / allowed,
        settled_rate=sum(tail) / len(tail),
    )


# Measured (seed 1, 16 workers, 0.2-0.3 s latency, 3000 successes, default recovery of 600). In a
# fixed window the limiter sends each pass at the configured rate (window mode), so its rate does
# not settle at the quota's; the window's N does. The 429s of a window are one per pass, plus the
# requests in flight (a latency's worth) when a pass runs into the next window. (A recovery of
# 300 gave 35 429s and 99.4% in bucket-4x here, but against the real simulator at 200/s it left
# pauses at startup that cost (b) up to 5% of the quota; 600 measured 0.99 there, see README.)
#   quota                             configured   429s           goodput  settled rate
#   token bucket 10/s, burst 10       40/s         28/3043 0.92%  96.1%     9.59/s
#   token bucket 10/s, burst 10       10/s          0/3015 0%     99.9%    10.00/s
#   fixed window 100 per 10 s         40/s         53/3067 1.73%  100.0%   (N = 100)
#   fixed window 100 per 10 s         10/s          0/3015 0%     99.9%    10.00/s
#   token bucket 10/s -> 5/s at 150 s 40/s         31/3046 1.02%  96.8%     4.91/s
#   fixed window 100 -> 50 at 150 s   40/s         87/3101 2.81%  100.2%   (N = 50)
SIMULATIONS = [
    pytest.param(lambda: TokenBucketQuota(10, 10), 40.0, None, 0.02, 0.95, 10, id="bucket-4x"),
    pytest.param(lambda: TokenBucketQuota(10, 10), 10.0, None, 0.0, 0.97, 10, id="bucket-right"),
    pytest.param(lambda: FixedWindowQuota(100, 10), 40.0, None, 0.025, 0.97, None, id="window-4x"),
    pytest.param(lambda: FixedWindowQuota(100, 10), 10.0, None, 0.0, 0.97, 10, id="window-right"),
    pytest.param(lambda: TokenBucketQuota(10, 10), 40.0, 150.0, 0.02, 0.95, 5, id="bucket-halves"),
    pytest.param(
        lambda: FixedWindowQuota(100, 10), 40.0, 150.0, 0.04, 0.97, None, id="window-halves"
    ),
]


@pytest.mark.parametrize(
    ("make_quota", "configured", "halve_at", "max_429s", "min_goodput", "settles_at"),
    SIMULATIONS,
)
@virtual_time
async def test_simulated_batch_learns_the_quota(
    make_quota: Callable[[], TokenBucketQuota | FixedWindowQuota],
    configured: float,
    halve_at: float | None,
    max_429s: float,
    min_goodput: float,
    settles_at: float | None,
) -> None:
    """Over 3000 requests the throttle finds the quota with few 429s and little idle capacity."""
    outcome = await simulate(make_quota(), configured, 3000, halve_at=halve_at)
    assert outcome.throttled <= max_429s * outcome.requests, outcome
    assert outcome.goodput >= min_goodput, outcome
    if settles_at is not None:
        assert 0.85 * settles_at <= outcome.settled_rate <= 1.15 * settles_at, outcome


def test_default_recovery_is_the_one_simulated() -> None:
    """The simulation figures above hold for the default recovery length."""
    assert DEFAULT_RECOVERY == 600
