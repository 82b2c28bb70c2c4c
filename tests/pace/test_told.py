"""What the server's quota headers told: a declared rate is a ceiling, a spent window a pause."""

from __future__ import annotations

import asyncio

import pytest
from conftest import virtual_time

from bulkretry._model import QuotaHeaders
from bulkretry._pace.throttle import Throttle
from bulkretry._pace.told import Told


def now() -> float:
    return asyncio.get_running_loop().time()


async def wait_after(told: QuotaHeaders) -> tuple[Throttle, float]:
    """At 100/s, one slot taken, then an answer's headers: how long the next slot waits."""
    throttle = Throttle(100)
    await throttle.acquire()
    throttle.on_quota(told)
    start = now()
    await throttle.acquire()
    return throttle, now() - start


@virtual_time
async def test_a_declared_policy_lowers_the_configured_rate_and_the_summary_says_so() -> None:
    """--rate 800 against a server that declares 200 requests a second: 3% under it from the
    first answer, with no 429 spent to learn it; the summary says what the server said."""
    throttle = Throttle(800)
    throttle.on_quota(QuotaHeaders(limit=200, remaining=199, reset=1.0, window=1.0))
    assert throttle.rate == throttle.max_rate == pytest.approx(194)
    start = now()
    for _ in range(401):
        await throttle.acquire()
    assert now() - start == pytest.approx(400 / 194, abs=0.01)
    assert throttle.learned() == "the server's RateLimit headers say 200 requests per 1 s"


@virtual_time
async def test_a_shard_keeps_to_its_part_of_a_declared_rate() -> None:
    """--rate 800 --shard K/4 (200 each) against a server that declares 200 a second for all
    four: each keeps to a quarter of it, 48.5, not to 194."""
    throttle = Throttle(200, processes=4)
    throttle.on_quota(QuotaHeaders(limit=200, remaining=199, reset=1.0, window=1.0))
    assert throttle.rate == throttle.max_rate == pytest.approx(48.5)
    assert throttle.learned() == (
        "the server's RateLimit headers say 200 requests per 1 s (1/4 for this shard)"
    )


@virtual_time
async def test_a_declared_rate_above_the_configured_one_never_raises_it() -> None:
    throttle = Throttle(50)
    throttle.on_quota(QuotaHeaders(limit=200, remaining=199, reset=1.0, window=1.0))
    assert throttle.rate == throttle.max_rate == 50


@virtual_time
async def test_a_spent_window_with_a_long_reset_pauses_everyone_until_it_resets() -> None:
    """Remaining 0, Reset 8 s (over the 5 s pause threshold): nobody sends for 8 s, no 429
    spent to find out."""
    throttle, waited = await wait_after(QuotaHeaders(limit=2000, remaining=0, reset=8.0))
    assert waited == pytest.approx(8.0, abs=0.01)
    assert throttle.throttled_count == 0
    assert throttle.learned() == (
        "the server's RateLimit headers say 2000 requests per window, reset within 8 s"
    )


@virtual_time
async def test_a_spent_window_with_a_short_reset_is_left_to_the_429s() -> None:
    """Remaining 0, Reset 1 (whole seconds, rounded up: a bucket's 5 ms reads as 1 s): pausing
    everyone a second for it would cost a fast quota most of its rate."""
    _, waited = await wait_after(QuotaHeaders(limit=1, remaining=0, reset=1.0))
    assert waited == pytest.approx(0.01, abs=0.001)  # the next slot at 100/s, no more


def test_headers_that_told_nothing_of_a_limit_say_nothing() -> None:
    told = Told(5.0, 900.0)
    assert told.declared_rate(QuotaHeaders(remaining=3)) is None
    assert told.describe() is None
    assert told.wait(QuotaHeaders(remaining=0)) is None


@virtual_time
async def test_a_policy_of_a_long_window_says_nothing_of_the_rate() -> None:
    """1000 an hour would mean 0.27/s: a short batch may go at --rate, and Remaining 0 says
    when the hour is spent."""
    throttle = Throttle(10)
    throttle.on_quota(QuotaHeaders(limit=1000, remaining=999, reset=3600.0, window=3600.0))
    assert throttle.rate == throttle.max_rate == 10


@virtual_time
async def test_a_reset_beyond_the_longest_wait_is_left_to_the_429s_retry_after_cap() -> None:
    """Remaining 0 with a Reset of a day (a millisecond Reset read as seconds, a bad epoch):
    no silent day-long pause; the 429 that follows halts the batch with a message."""
    _, waited = await wait_after(QuotaHeaders(limit=60, remaining=0, reset=86000.0))
    assert waited == pytest.approx(0.01, abs=0.001)


@virtual_time
async def test_headers_on_a_429_leave_the_pause_and_window_mode_to_its_retry_after() -> None:
    """A fixed window of 20 per 10 s whose 429s also say Remaining 0, Reset 10: the headers do
    not pause ahead of the 429, so its two pauses with successes between still reveal the
    window, and each window is sent at the full rate."""
    throttle = Throttle(50)
    spent = QuotaHeaders(limit=20, remaining=0, reset=10.0)
    for _ in range(3):  # three windows: 20 successes, then a 429 at the window's end
        for _ in range(20):
            await throttle.acquire()
            sent = now()
            throttle.on_success(sent)
        await throttle.acquire()
        sent = now()
        throttle.on_throttled(10.0, sent_at=sent)
        throttle.on_quota(spent, refused=True)
    assert throttle.window_requests is not None
    assert throttle.rate == 50


@virtual_time
async def test_the_longest_reset_paused_for_is_the_retry_after_cap_given() -> None:
    """--retry-after-cap 60: a spent window resetting in 30 s pauses, one in 100 s does not
    (its 429's Retry-After halts the batch with a message instead)."""
    for reset, paused in ((30.0, True), (100.0, False)):
        throttle = Throttle(100, longest_wait=60.0)
        await throttle.acquire()
        throttle.on_quota(QuotaHeaders(limit=10, remaining=0, reset=reset))
        start = now()
        await throttle.acquire()
        assert (now() - start > 1.0) is paused
