"""Tests of bulkretry._pace.cap: the bound on requests in flight, by Little's law.

The cap reads the rate and latency of a throttle; these tests give it a real one. Async tests
run on the suite's virtual loop clock, so they are exact and instant.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import virtual_time

from bulkretry._pace.cap import ConcurrencyCap
from bulkretry._pace.throttle import Throttle


def now() -> float:
    return asyncio.get_running_loop().time()


async def settle() -> None:
    """Let every ready callback run without moving the clock."""
    for _ in range(5):
        await asyncio.sleep(0)


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


@virtual_time
async def test_cap_limit_follows_the_rate_the_throttle_learns() -> None:
    """A 429 that cuts the throttle's rate shrinks the cap's limit with it."""
    throttle = Throttle(5)
    cap = ConcurrencyCap(throttle, max_concurrency=16)
    cap.observe(1.0)
    assert cap.limit == 11  # ceil(5 * 1.0 * 2) + 1
    await throttle.acquire()
    throttle.on_throttled(None)
    assert cap.limit == 8  # ceil(3.5 * 1.0 * 2) + 1


def test_hung_requests_keep_their_places_even_in_a_lull_between_them() -> None:
    """5% of requests hanging 1 s, the rest answered in 2 ms, at 200/s: about ten are hung at
    any time and hold a place each. A mean of the last ~50 answers dipped to ~15 ms in a lull
    of 60 fast answers (7 places: the hung ones held them all); the recent peak keeps 20+."""
    throttle = Throttle(200)
    cap = ConcurrencyCap(throttle, max_concurrency=64)
    hung = {n for n in range(0, 2000, 20) if not 1000 < n < 1060}  # one lull of 60 answers
    limits = []
    for n in range(2000):
        cap.observe(1.0 if n in hung else 0.002)
        limits.append(cap.limit)
    assert min(limits[100:]) >= 20


def test_one_slow_answer_fades_and_the_cap_is_back_to_littles_law() -> None:
    """One 1 s answer among 2 ms ones: 300 answers later the cap is what 2 ms calls for."""
    throttle = Throttle(200)
    cap = ConcurrencyCap(throttle, max_concurrency=64)
    cap.observe(1.0)
    assert cap.limit == 64
    for _ in range(300):
        cap.observe(0.002)
    assert cap.limit <= 3  # ceil(200 * ~0.002 * 2) + 1
