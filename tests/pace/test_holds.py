"""The passes that hold the gate: a probe asking a short window for N + 1, window mode's passes."""

from __future__ import annotations

import asyncio

import pytest
from conftest import virtual_time

from bulkretry._pace.bucket import TokenBucket
from bulkretry._pace.holds import Probe, WindowPasses, ask_one_more, release
from bulkretry._pace.window import FixedWindow


def now() -> float:
    return asyncio.get_running_loop().time()


async def take(bucket: TokenBucket, n: int) -> None:
    """Take *n* slots one after another (failing, not hanging, if the gate stays shut)."""
    for _ in range(n):
        await asyncio.wait_for(bucket.acquire(), 5)


async def assert_held(bucket: TokenBucket) -> None:
    """A slot asked for now is still not handed out a second later."""
    waiter = await shut_after(bucket)
    assert not waiter.done()
    waiter.cancel()


async def shut_after(bucket: TokenBucket) -> asyncio.Task[None]:
    """A waiter started now; the caller checks whether the gate lets it through."""
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(1)
    return waiter


@virtual_time
async def test_a_probe_hands_out_what_it_asks_then_shuts_the_gate() -> None:
    """From the pause's end, the probe's slots go out; the next waits for answers."""
    bucket = TokenBucket(100)
    await take(bucket, 5)  # an earlier pass's
    bucket.pause_until(now() + 1)
    probe = Probe(bucket, asks=3)
    assert probe.start == pytest.approx(now() + 1)
    await take(bucket, 3)
    waiter = await shut_after(bucket)
    assert not waiter.done()
    release(bucket, now())
    bucket.wake()
    await asyncio.wait_for(waiter, 1)


def test_a_probe_is_through_once_every_request_it_asked_succeeded() -> None:
    """Successes of an earlier pass count for nothing; all asked through ends the probe."""
    bucket = TokenBucket(100)
    bucket.pause_until(10.0)
    probe = Probe(bucket, asks=2)
    assert not probe.mine(9.9)
    assert probe.mine(10.0)
    assert not probe.succeeded(9.9)
    assert not probe.succeeded(10.1)
    assert probe.succeeded(10.2)


@virtual_time
async def test_a_probe_asks_one_more_for_each_answer_lost() -> None:
    """A timed-out request's place goes to one more; then the gate shuts again."""
    bucket = TokenBucket(100)
    bucket.pause_until(now())
    probe = Probe(bucket, asks=2)
    await take(bucket, 2)
    waiter = await shut_after(bucket)
    assert not waiter.done()
    probe.lost(now())
    await asyncio.wait_for(waiter, 1)
    assert not probe.succeeded(now() - 5)  # (an earlier pass's)
    assert not probe.succeeded(now())
    assert probe.succeeded(now())  # two through of the three sent: all it asked
    await assert_held(bucket)


@virtual_time
async def test_one_more_asks_only_once_the_gate_is_shut_or_later() -> None:
    """Asking one more before the hold shut the gate only moves the hold on by one."""
    bucket = TokenBucket(100)
    bucket.hold_after(2)
    ask_one_more(bucket, 3, now())
    await take(bucket, 3)
    await assert_held(bucket)


@virtual_time
async def test_window_passes_hold_after_n_plus_one_and_a_lost_last_answer_asks_again() -> None:
    """A fixed window's pass: N + 1 slots, then the held one's timeout lets one more go."""
    bucket = TokenBucket(100)
    passes = WindowPasses(bucket, FixedWindow(3, start=0.0, first_429=0.0))
    await take(bucket, 4)
    held = now()
    waiter = await shut_after(bucket)
    assert not waiter.done()
    passes.lost(held - 1, now())  # an earlier slot's: the hold waits on
    await asyncio.sleep(1)
    assert not waiter.done()
    passes.lost(held, now())
    await asyncio.wait_for(waiter, 1)


def test_window_passes_read_a_429_by_the_pass_it_answers() -> None:
    """An earlier pass's 429 says nothing; none of Retry-After is no window; else spent."""
    bucket = TokenBucket(100)
    bucket.pause_until(5.0)
    passes = WindowPasses(bucket, FixedWindow(3, start=0.0, first_429=1.0))
    assert passes.throttled(6.0, 1.0, sent=4.0) == "earlier"
    assert passes.throttled(6.0, None, sent=5.5) == "no window"
    assert passes.throttled(6.0, 1.0, sent=5.5) == "spent"
