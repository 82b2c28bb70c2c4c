"""The gateway's quota in every shape, each at its edge, and the Retry-After it gives."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from sim_helpers import quota_sim, retrigger

from bulkretry._simulator import (
    LeakyBucketQuota,
    ManualClock,
    Quota,
    Simulator,
    SimulatorConfig,
    SlidingWindowQuota,
    TokenBucketQuota,
    WindowQuota,
    per_minute,
)
from bulkretry._simulator._control import quota_from_json, quota_to_json
from bulkretry._simulator._quota import Limiter

pytestmark = pytest.mark.e2e

EPS = 1e-3


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000.0)


async def statuses(session: aiohttp.ClientSession, sim: Simulator, n: int) -> list[int]:
    return [(await retrigger(session, sim))[0] for _ in range(n)]


# -- token bucket ----------------------------------------------------------------------------------


async def test_token_bucket_quota_answers_429_then_refills(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Past the burst the gateway answers 429050 with Retry-After; time refills the bucket."""
    config = SimulatorConfig(
        clock=clock, quota=TokenBucketQuota(rate=2, burst=2), allow_repeat_retrigger=True
    )
    async with Simulator(config) as sim:
        statuses = [(await retrigger(session, sim))[0] for _ in range(2)]
        status, text, headers = await retrigger(session, sim)
        clock.advance(0.5)
        after = (await retrigger(session, sim))[0]
    assert statuses == [200, 200]
    assert status == 429
    assert text == '{"error_code":"429050","message":"Too many requests"}'
    assert headers["Retry-After"] == "1"
    assert after == 200
    assert sim.stats[429] == 1


@pytest.mark.parametrize("style", ["seconds", "http-date", "none"])
async def test_retry_after_comes_as_seconds_date_or_not_at_all(
    session: aiohttp.ClientSession, clock: ManualClock, style: Any
) -> None:
    """Retry-After is delay-seconds, an HTTP-date of when to come back, or absent."""
    config = SimulatorConfig(
        clock=clock,
        wall_clock=clock,
        quota=TokenBucketQuota(rate=0.25, burst=1),
        retry_after=style,
        allow_repeat_retrigger=True,
    )
    async with Simulator(config) as sim:
        await retrigger(session, sim)
        clock.advance(1.5)
        status, _, headers = await retrigger(session, sim)
    assert status == 429
    value = headers.get("Retry-After")
    if style == "seconds":
        assert value == "3"
    elif style == "http-date":
        assert value is not None
        assert parsedate_to_datetime(value).timestamp() == math.ceil(clock() + 2.5)
    else:
        assert value is None


async def test_fixed_window_quota_points_to_the_window_end(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A fixed window admits N requests, then 429s until the window ends, then admits again."""
    config = SimulatorConfig(
        clock=clock, quota=WindowQuota(requests=3, window=10), allow_repeat_retrigger=True
    )
    async with Simulator(config) as sim:
        admitted = [(await retrigger(session, sim))[0] for _ in range(3)]
        first = await retrigger(session, sim)
        clock.advance(4)
        second = await retrigger(session, sim)
        clock.advance(6)
        again = [(await retrigger(session, sim))[0] for _ in range(4)]
    assert admitted == [200, 200, 200]
    assert (first[0], first[2]["Retry-After"]) == (429, "10")
    assert (second[0], second[2]["Retry-After"]) == (429, "6")
    assert again == [200, 200, 200, 429]


async def test_quota_can_be_halved_and_lifted_at_runtime(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """set_quota changes the quota mid-run without handing out a fresh burst."""
    config = SimulatorConfig(
        clock=clock, quota=TokenBucketQuota(rate=10, burst=10), allow_repeat_retrigger=True
    )
    async with Simulator(config) as sim:
        assert [(await retrigger(session, sim))[0] for _ in range(5)] == [200] * 5
        sim.set_quota(TokenBucketQuota(rate=5, burst=5))
        assert (await retrigger(session, sim))[0] == 200
        assert [(await retrigger(session, sim))[0] for _ in range(5)] == [200] * 4 + [429]
        clock.advance(0.2)
        assert (await retrigger(session, sim))[0] == 200
        sim.set_quota(None)
        assert [(await retrigger(session, sim))[0] for _ in range(20)] == [200] * 20
    assert sim.quota is None


async def test_requests_refused_at_the_gateway_use_no_quota(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Requests with bad credentials are refused before the quota counts them."""
    config = SimulatorConfig(clock=clock, quota=TokenBucketQuota(rate=1, burst=1))
    async with Simulator(config) as sim:
        refused = [(await retrigger(session, sim, headers={}))[0] for _ in range(3)]
        status = (await retrigger(session, sim))[0]
    assert (refused, status) == ([403, 403, 403], 200)


# -- leaky bucket --------------------------------------------------------------------------------


async def test_leaky_bucket_refuses_a_request_closer_than_one_over_rate(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Two requests 1/rate - ε apart: the second is refused; exactly 1/rate apart: admitted."""
    async with quota_sim(clock, LeakyBucketQuota(rate=4)) as sim:
        first = await retrigger(session, sim)
        clock.advance(0.25 - EPS)
        early, _, headers = await retrigger(session, sim)
        clock.advance(EPS)
        on_time = await retrigger(session, sim)
    assert (first[0], early, on_time[0]) == (200, 429, 200)
    assert headers["Retry-After"] == "1"


def test_leaky_bucket_refusals_do_not_push_the_next_slot_back() -> None:
    """A refused request leaves the reference at the last admitted one."""
    limiter = Limiter(LeakyBucketQuota(rate=2), 0.0)
    assert limiter.admit(10.0) is None
    assert limiter.admit(10.2) == pytest.approx(0.3)
    assert limiter.admit(10.4) == pytest.approx(0.1)
    assert limiter.admit(10.5) is None


async def test_leaky_bucket_has_no_burst_even_after_a_long_idle(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """However long it was idle, two requests at once: the second is refused."""
    async with quota_sim(clock, LeakyBucketQuota(rate=10)) as sim:
        clock.advance(3_600)
        assert await statuses(session, sim, 2) == [200, 429]
        clock.advance(0.1)
        assert await statuses(session, sim, 2) == [200, 429]


# -- sliding window --------------------------------------------------------------------------------


async def test_sliding_window_counting_refusals_stays_closed_while_hammered(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """3 per 10 s, refusals counted: one request a second keeps it shut; then it says when."""
    async with quota_sim(clock, SlidingWindowQuota(requests=3, window=10)) as sim:
        admitted = []
        for _ in range(3):
            admitted.append((await retrigger(session, sim))[0])
            clock.advance(1)
        hammered = []
        for _ in range(27):
            hammered.append((await retrigger(session, sim))[0])
            clock.advance(1)
        last, _, headers = await retrigger(session, sim)
        clock.set(1_038.0 - EPS)
        early = (await retrigger(session, sim))[0]
        clock.set(1_038.5)
        still = (await retrigger(session, sim))[0]
        clock.set(1_040.0)
        opened = (await retrigger(session, sim))[0]
    assert admitted == [200] * 3
    assert hammered == [429] * 27
    # The last three requests came at 28, 29 and 30 s: the window opens at 38 s...
    assert (last, headers["Retry-After"]) == (429, "8")
    # ...unless the client comes back early: that refusal counts, and so does the next one.
    assert (early, still, opened) == (429, 429, 200)


def test_sliding_window_without_counting_refusals_opens_as_admitted_ones_leave() -> None:
    """count_rejected=False: hammering does not keep it shut; it opens W after each admission."""
    limiter = Limiter(SlidingWindowQuota(requests=2, window=10, count_rejected=False), 0.0)
    times = [float(t) for t in range(31)]
    admitted = [t for t in times if limiter.admit(t) is None]
    assert admitted == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0, 30.0]


def test_sliding_window_admits_at_exactly_w_after_the_oldest() -> None:
    """N per W over the last W seconds: a request W - ε after the oldest is refused, W after not."""
    counting = Limiter(SlidingWindowQuota(requests=1, window=10), 0.0)
    assert counting.admit(100.0) is None
    assert counting.admit(110.0 - EPS) == pytest.approx(10.0)
    assert counting.admit(120.0 - EPS) is None
    plain = Limiter(SlidingWindowQuota(requests=1, window=10, count_rejected=False), 0.0)
    assert plain.admit(100.0) is None
    assert plain.admit(110.0 - EPS) == pytest.approx(EPS)
    assert plain.admit(110.0) is None


# -- fixed window and per-minute quotas ------------------------------------------------------------


@pytest.mark.parametrize("style", ["seconds", "http-date", "none"])
async def test_fixed_window_retry_after_is_the_exact_time_to_the_reset(
    session: aiohttp.ClientSession, style: Any
) -> None:
    """Refused at 1000.25 in a window ending at 1020: Retry-After 20, or that date, or none."""
    clock = ManualClock(start=1_000.25)
    async with quota_sim(clock, WindowQuota(requests=1, window=60), retry_after=style) as sim:
        first = (await retrigger(session, sim))[0]
        refused, _, headers = await retrigger(session, sim)
        clock.set(1_020.0 - EPS)
        last = (await retrigger(session, sim))[0]
        clock.set(1_020.0)
        reset = (await retrigger(session, sim))[0]
    assert (first, refused, last, reset) == (200, 429, 429, 200)
    value = headers.get("Retry-After")
    if style == "seconds":
        assert value == "20"
    elif style == "http-date":
        assert value is not None
        assert parsedate_to_datetime(value).timestamp() == 1_020.0
    else:
        assert value is None


def test_per_minute_quotas_are_windows_of_sixty_seconds() -> None:
    """per_minute builds a fixed window of 60 s, or a sliding one that counts refusals."""
    assert per_minute(100) == WindowQuota(requests=100, window=60)
    assert per_minute(100, sliding=True) == SlidingWindowQuota(requests=100, window=60)


async def test_per_minute_fixed_window_resets_on_the_minute(
    session: aiohttp.ClientSession,
) -> None:
    """A fixed per-minute quota refuses until the next minute, then admits a full minute's."""
    clock = ManualClock(start=6_000.0 + 42.5)
    async with quota_sim(clock, per_minute(3)) as sim:
        first = await statuses(session, sim, 4)
        _, _, headers = await retrigger(session, sim)
        clock.set(6_060.0)
        second = await statuses(session, sim, 4)
    assert first == second == [200, 200, 200, 429]
    assert headers["Retry-After"] == "18"


async def test_per_minute_sliding_window_counts_the_last_sixty_seconds(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A sliding per-minute quota has no minute boundary: it admits 60 s after the oldest."""
    async with quota_sim(clock, per_minute(2, sliding=True)) as sim:
        first = await statuses(session, sim, 2)
        clock.advance(59)
        refused, _, headers = await retrigger(session, sim)
        clock.advance(60)
        admitted = await statuses(session, sim, 2)
    assert (first, refused, admitted) == ([200, 200], 429, [200, 200])
    # The refusal pushed one of the first two out: one slot frees when the other one leaves.
    assert headers["Retry-After"] == "1"


def test_changing_the_quota_keeps_what_a_shape_has_used() -> None:
    """Replacing a leaky bucket or sliding window by one of the same shape keeps its usage."""
    leaky = Limiter(LeakyBucketQuota(rate=1), 0.0)
    assert leaky.admit(5.0) is None
    assert leaky.replace(LeakyBucketQuota(rate=2), 5.1).admit(5.2) == pytest.approx(0.3)
    sliding = Limiter(SlidingWindowQuota(requests=2, window=10), 0.0)
    assert sliding.admit(5.0) is None
    assert sliding.admit(6.0) is None
    assert sliding.replace(SlidingWindowQuota(requests=3, window=10), 6.0).admit(7.0) is None
    assert sliding.replace(SlidingWindowQuota(requests=2, window=10), 6.0).admit(7.0) is not None


@pytest.mark.parametrize(
    "quota",
    [
        TokenBucketQuota(rate=5, burst=2),
        LeakyBucketQuota(rate=3),
        WindowQuota(requests=10, window=60),
        SlidingWindowQuota(requests=10, window=60, count_rejected=False),
    ],
)
def test_control_endpoint_reads_every_shape_it_writes(quota: Quota) -> None:
    """quota_from_json reads back what quota_to_json writes, for every shape."""
    assert quota_from_json(quota_to_json(quota)) == quota


@pytest.mark.parametrize(
    "bad",
    [{"shape": "leaky-bucket"}, {"shape": "cone", "rate": 1}, {"shape": "leaky-bucket", "rate": 0}],
)
def test_control_endpoint_refuses_a_shape_without_its_numbers(bad: dict[str, object]) -> None:
    """A named shape needs its own numbers; an unknown shape is refused."""
    with pytest.raises(ValueError):
        quota_from_json(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LeakyBucketQuota(rate=0),
        lambda: SlidingWindowQuota(requests=0),
        lambda: SlidingWindowQuota(requests=1, window=0),
    ],
)
def test_new_shapes_refuse_nonsense(make: Any) -> None:
    """A leaky bucket needs a positive rate; a sliding window, requests and a window."""
    with pytest.raises(ValueError):
        make()
