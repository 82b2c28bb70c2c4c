"""Tests of bulkretry._pace.controller: cutting, recovering, pausing, episodes and window mode.

The controller runs on the clock it is given. The first tests give it a hand-moved clock and no
event loop at all; the rest pair it with a real bucket on the suite's virtual loop clock (when
nothing is ready the loop jumps to the next timer), so that slots are handed out as in a batch.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from conftest import VirtualClockLoop, virtual_time
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkretry._pace.bucket import TokenBucket
from bulkretry._pace.controller import BETA, MIN_RATE_FRACTION, RateController


def now() -> float:
    return asyncio.get_running_loop().time()


def paced(rate: float, *, burst: int = 1, **kwargs: Any) -> tuple[TokenBucket, RateController]:
    """A bucket at *rate* and a controller steering it on the running loop's clock."""
    bucket = TokenBucket(rate, burst=burst)
    return bucket, RateController(bucket, clock=now, **kwargs)


async def acquire_times(bucket: TokenBucket, n: int) -> list[float]:
    """Start *n* acquirers at once; return the times their slots came, in arrival order."""
    times = [math.nan] * n

    async def one(i: int) -> None:
        await bucket.acquire()
        times[i] = now()

    await asyncio.gather(*(one(i) for i in range(n)))
    return times


async def send_then_answer(
    bucket: TokenBucket, control: RateController, sent: int, through: int
) -> list[float]:
    """Send *sent* requests one after another; answer the first *through* with successes.
    Return the send times (the rest are the caller's to answer)."""
    times = []
    for _ in range(sent):
        await bucket.acquire()
        times.append(now())
    for when in times[:through]:
        control.on_success(when)
    return times


async def assert_held(bucket: TokenBucket, seconds: float = 1.0) -> None:
    """A slot asked for now is still not handed out *seconds* later (the caller's gate shut)."""
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(seconds)
    assert not waiter.done()
    waiter.cancel()


class Clock:
    """A clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- on a hand-moved clock, with no event loop ------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"min_rate": 2}, {"min_rate": 0}, {"pause_after": -1}, {"recovery": 0}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, Any]) -> None:
    """A floor above the rate or at zero, a negative pause or no recovery raises ValueError."""
    with pytest.raises(ValueError):
        RateController(TokenBucket(1), clock=Clock(), **kwargs)


def test_defaults() -> None:
    """The bucket's rate is the maximum; the floor is MIN_RATE_FRACTION of it; nothing seen yet."""
    control = RateController(TokenBucket(5), clock=Clock())
    assert control.max_rate == 5
    assert control.min_rate == pytest.approx(5 * MIN_RATE_FRACTION)
    assert (control.throttled_count, control.latency, control.window_requests) == (0, None, None)


def test_a_recorded_pattern_needs_no_event_loop() -> None:
    """Cut, same episode, CUBIC recovery and a long Retry-After's pause, on a hand-moved clock."""
    clock = Clock()
    bucket = TokenBucket(10)
    control = RateController(bucket, clock=clock, recovery=400, pause_after=5)
    control.on_throttled(None, sent_at=0.0)
    assert bucket.rate == pytest.approx(7)
    clock.now = 0.5
    control.on_throttled(None, sent_at=0.0)  # sent before the cut: the same episode
    assert bucket.rate == pytest.approx(7)
    clock.now = 5.0  # half of the climb: a quarter of 400 requests at 10/s
    control.on_success(4.9)
    assert bucket.rate == pytest.approx(10 - 3 * 0.5**3)
    clock.now = 6.0
    control.on_throttled(30, sent_at=5.5)
    assert bucket.paused_until == 36.0
    assert control.throttled_count == 3


def test_latency_is_a_moving_average() -> None:
    """Each observation moves the average a fifth of the way towards it."""
    control = RateController(TokenBucket(1), clock=Clock())
    control.observe_latency(1.0)
    control.observe_latency(2.0)
    assert control.latency == pytest.approx(1.2)


def test_repr_shows_the_state() -> None:
    """repr shows the rate and its bounds, the 429s, the last cut and the latency."""
    clock = Clock()
    control = RateController(TokenBucket(10), clock=clock)
    assert repr(control) == "<RateController rate=10/10 (floor 0.1), throttled=0>"
    clock.now = 2.0
    control.observe_latency(0.25)
    control.on_throttled(None, sent_at=1.0)
    assert repr(control) == (
        "<RateController rate=7/10 (floor 0.1), throttled=1, cut at t=2.000 from 10, "
        "latency=0.250s>"
    )


# --- learning the rate ------------------------------------------------------------------------


@virtual_time
async def test_429_cuts_the_rate_by_beta_and_empties_the_saved_burst() -> None:
    """A 429 multiplies the rate by BETA and the next slot waits a full new interval."""
    bucket, control = paced(10, burst=5)
    await bucket.acquire()
    control.on_throttled(None)
    assert bucket.rate == pytest.approx(10 * BETA)
    assert control.throttled_count == 1
    times = await acquire_times(bucket, 2)
    assert times == pytest.approx([1 / 7, 2 / 7])


@virtual_time
async def test_429s_answering_requests_sent_before_the_cut_cut_only_once() -> None:
    """Until a slot was handed out after the cut, further 429s belong to the same episode."""
    bucket, control = paced(10)
    await acquire_times(bucket, 8)
    control.on_throttled(None)
    await asyncio.sleep(30)
    for _ in range(7):
        control.on_throttled(None)
    assert bucket.rate == pytest.approx(7.0)
    assert control.throttled_count == 8


@virtual_time
async def test_429s_within_the_episode_window_cut_only_once() -> None:
    """Without send times, 429s within twice the mean latency of the cut do not cut again."""
    bucket, control = paced(10)
    control.observe_latency(0.5)
    await bucket.acquire()
    control.on_throttled(None)
    await acquire_times(bucket, 3)
    assert now() < 1.0
    control.on_throttled(None)
    assert bucket.rate == pytest.approx(7.0)
    await asyncio.sleep(1.0 - now())
    control.on_throttled(None)
    assert bucket.rate == pytest.approx(4.9)


@virtual_time
async def test_episode_window_is_one_second_until_a_latency_is_known() -> None:
    """With no latency observed, 429s within DEFAULT_EPISODE (1 s) of a cut are one episode."""
    bucket, control = paced(10)
    await bucket.acquire()
    control.on_throttled(None)
    await acquire_times(bucket, 5)
    control.on_throttled(None)
    assert bucket.rate == pytest.approx(7.0)
    await asyncio.sleep(1.0 - now())
    control.on_throttled(None)
    assert bucket.rate == pytest.approx(4.9)


@virtual_time
async def test_send_time_tells_exactly_whether_a_429_is_news() -> None:
    """With sent_at, a 429 cuts again only if its request left after the last cut."""
    bucket, control = paced(10)
    await bucket.acquire()
    before_cut = now()
    control.on_throttled(None, sent_at=before_cut)
    await bucket.acquire()
    await asyncio.sleep(20)
    control.on_throttled(None, sent_at=before_cut)
    assert bucket.rate == pytest.approx(7.0)
    await bucket.acquire()
    control.on_throttled(None, sent_at=now())
    assert bucket.rate < 7.0


@virtual_time
async def test_successes_recover_along_a_cubic_curve_and_never_pass_max_rate() -> None:
    """After a cut, the rate climbs back, flattening near the old rate, capped at max_rate."""
    bucket, control = paced(10, recovery=400)
    await bucket.acquire()
    control.on_throttled(None)
    recovery_seconds = 400 / 4 / 10  # a quarter of 400 requests, nothing in flight
    seen = [bucket.rate]
    for _ in range(60):
        await asyncio.sleep(recovery_seconds / 20)
        control.on_success()
        seen.append(bucket.rate)
    assert seen == sorted(seen)
    assert max(seen) == 10
    # Half way, CUBIC has recovered 7/8 of the drop: 7 + 3 * (1 - 0.5**3).
    assert seen[10] == pytest.approx(10 - 3 * 0.5**3)
    assert seen[20] == pytest.approx(10)


@virtual_time
async def test_recovery_probes_above_the_rate_of_the_last_cut() -> None:
    """Once back at the rate of the last cut, the rate keeps rising (up to the maximum)."""
    bucket, control = paced(100, recovery=100)
    await bucket.acquire()
    control.on_throttled(None)
    await bucket.acquire()
    await asyncio.sleep(1.5)
    control.on_throttled(None)  # second episode: the last cut's rate is now 70
    assert bucket.rate == pytest.approx(49)
    await asyncio.sleep(100 / 70 * 2)
    control.on_success()
    assert 70 < bucket.rate < 100


@virtual_time
async def test_rate_never_falls_below_min_rate() -> None:
    """However many episodes, the rate stops at min_rate."""
    bucket, control = paced(10, min_rate=1, recovery=400)
    for _ in range(30):
        await bucket.acquire()
        control.on_success()
        control.on_throttled(None)
        control.on_throttled(None)  # the same episode: most requests refused, a quota's
        await asyncio.sleep(1.0)  # past the episode (1 s), sooner than the climb back
    assert bucket.rate == 1


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
        bucket, control = paced(8, min_rate=0.5)
        for kind, gap in events:
            await asyncio.sleep(gap)
            if kind == "ok":
                control.on_success()
            elif kind == "429":
                control.on_throttled(None)
            elif kind == "429ra":
                control.on_throttled(gap)
            else:
                await bucket.acquire()
            assert 0.5 <= bucket.rate <= 8

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(main())


@virtual_time
async def test_cut_while_waiting_pushes_the_waiter_back() -> None:
    """A waiter's slot time follows a rate change made while it waits."""
    bucket, control = paced(1)
    await bucket.acquire()
    waiter = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(0.5)
    control.on_throttled(None)  # half a token saved goes; a full interval at 0.7/s follows
    assert await waiter == pytest.approx([0.5 + 1 / 0.7])


# --- pauses -----------------------------------------------------------------------------------


@virtual_time
async def test_long_retry_after_pauses_everyone() -> None:
    """A Retry-After above pause_after pauses the whole limiter until then."""
    bucket, control = paced(10, pause_after=5)
    await bucket.acquire()
    control.on_throttled(30)
    assert bucket.paused_until == 30
    assert await acquire_times(bucket, 1) == pytest.approx([30.0])


@virtual_time
async def test_a_503_with_retry_after_pauses_everyone_and_keeps_the_rate() -> None:
    """The service's own Retry-After (a 503 storm) pauses everyone; the rate is not cut."""
    bucket, control = paced(10)
    await bucket.acquire()
    control.on_unavailable(3)
    assert bucket.rate == 10
    assert control.throttled_count == 0
    assert await acquire_times(bucket, 1) == pytest.approx([3.0])


@virtual_time
async def test_short_retry_after_alone_does_not_pause() -> None:
    """A first 429 with a Retry-After within pause_after cuts the rate but pauses nobody."""
    bucket, control = paced(10, pause_after=5)
    await bucket.acquire()
    control.on_throttled(3)
    assert bucket.paused_until == -math.inf
    assert await acquire_times(bucket, 1) == pytest.approx([1 / 7])


@virtual_time
async def test_429s_that_keep_coming_after_a_cut_pause_everyone() -> None:
    """A third 429 in a row, news after the last cut, pauses for its Retry-After."""
    bucket, control = paced(10, pause_after=5)
    await bucket.acquire()
    control.on_throttled(2)
    await acquire_times(bucket, 10)
    control.on_throttled(2)
    assert bucket.paused_until < now()  # two in a row: 429s at random come so too
    await acquire_times(bucket, 10)
    control.on_throttled(2)
    assert bucket.rate == pytest.approx(10 * BETA**3)
    assert bucket.paused_until == pytest.approx(now() + 2)


async def refuse_in_a_row(
    bucket: TokenBucket, control: RateController, most: int, retry_after: float | None = 1
) -> int:
    """Send one request after another, each refused, until everyone is paused or *most* were
    sent; return how many were."""
    refusals = 0
    while bucket.paused_until <= now() and refusals < most:
        await bucket.acquire()
        control.on_throttled(retry_after, sent_at=now())
        refusals += 1
    return refusals


@virtual_time
async def test_429s_in_a_row_after_a_proven_rates_shave_still_pause_at_the_third() -> None:
    """A rate held for seconds proves no window: a fixed window's first pass holds its rate too,
    then refuses everything until it resets. Waiting for an eighth in a row let the window
    reset first at 10/s, so it was never paused for, nor learned (three times the 429s)."""
    bucket, control = paced(10, pause_after=5)
    await send_then_answer(bucket, control, 40, 40)
    assert await refuse_in_a_row(bucket, control, 10) == 3


@pytest.mark.parametrize(("held", "back"), [(250, True), (100, False)])
@virtual_time
async def test_the_climb_after_429s_in_a_row_goes_back_to_a_rate_held_for_a_second(
    held: int, back: bool
) -> None:
    """After a shave and two cuts with no success between, a rate held for a second's worth of
    successes is back in the 3 s a climb to it takes (to the last cut's rate, 133/s of 200/s, it
    took 7 s in a batch); from a rate held for less, the climb aims at the last cut's."""
    bucket, control = paced(200, pause_after=5)
    await send_then_answer(bucket, control, held, held)
    await refuse_in_a_row(bucket, control, 3, retry_after=None)  # (no pause: not read as a pass)
    start = now()
    while now() < start + 3:
        await bucket.acquire()
        control.on_success(now())
    assert (bucket.rate > 0.99 * 200) == back
    assert (bucket.rate < 0.7 * 200) != back


@virtual_time
async def test_a_success_between_episodes_avoids_the_pause() -> None:
    """If something succeeded since the last cut, the next episode only cuts."""
    bucket, control = paced(10, pause_after=5)
    await bucket.acquire()
    control.on_throttled(2)
    await acquire_times(bucket, 10)
    control.on_success()
    control.on_throttled(2)
    assert bucket.paused_until == -math.inf


@virtual_time
async def test_pause_until_extends_but_never_shortens() -> None:
    """The controller's pause is the bucket's gate: a later end wins, an earlier one is ignored."""
    bucket, control = paced(10)
    control.pause_until(5)
    control.pause_until(3)
    assert bucket.paused_until == 5
    assert await acquire_times(bucket, 1) == pytest.approx([5.0])


# --- windows with a short wait -----------------------------------------------------------------


async def overrun(bucket: TokenBucket, control: RateController, successes: int) -> list[float]:
    """Send a pass of *successes* answered 200, then 429s saying 1 s, each sent after the last;
    return the rate before the pass and after each 429."""
    rates = [bucket.rate]
    for _ in range(successes):
        await bucket.acquire()
        control.on_success(now())
    while bucket.paused_until < now():  # the third 429 in a row after a cut pauses everyone
        await bucket.acquire()
        control.on_throttled(1, sent_at=now())
        rates.append(bucket.rate)
    return rates


async def window_learned(
    bucket: TokenBucket, control: RateController, first: int, second: int
) -> None:
    """A first pass of *first*, its pause, then a pass of *second* that a window is read from."""
    await overrun(bucket, control, first)
    await asyncio.sleep(bucket.paused_until - now())
    await overrun(bucket, control, second)


@virtual_time
async def test_a_short_wait_after_a_pass_paces_at_the_pass_per_second() -> None:
    """200 through in a quarter of a second, then wait 1 s: a window of 200 a second (read from
    the pass after the first pause)."""
    bucket, control = paced(800, pause_after=5)
    await window_learned(bucket, control, 200, 200)
    assert bucket.paused_until == pytest.approx(now() + 1)
    assert bucket.rate == pytest.approx(0.97 * 200)  # its last successes were still in flight
    assert control.learned() == "a window of about 200 requests in 1 s"


@virtual_time
async def test_a_first_pass_that_looks_like_a_window_is_read_again_from_the_next() -> None:
    """The first pass may meet a window still holding others' requests (a batch killed or run
    a moment before): 50 through of 100. The next pass, after the pause, finds it drained and
    goes on to 100: that is the window learned, not 50."""
    bucket, control = paced(400, pause_after=5)
    await overrun(bucket, control, 50)
    assert control.learned() is None
    assert bucket.rate == 400  # the next pass goes at the rate this one ran
    assert bucket.paused_until == pytest.approx(now() + 1)
    await asyncio.sleep(1)
    await overrun(bucket, control, 100)
    assert control.learned() == "a window of about 100 requests in 1 s"
    assert bucket.rate == pytest.approx(0.97 * 100)


async def probing(bucket: TokenBucket, control: RateController) -> tuple[float, asyncio.Task[Any]]:
    """A first pass of 200 at 800/s read as a window's; the next pass's 201 slots handed out.
    Return when that pass started and a waiter held back by its hold."""
    await overrun(bucket, control, 200)
    await asyncio.sleep(bucket.paused_until - now())
    start = now()
    await acquire_times(bucket, 201)
    late = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(0.5)
    assert not late.done()
    return start, late


@virtual_time
async def test_the_pass_a_window_is_read_from_asks_n_plus_one_then_waits_for_answers() -> None:
    """After a first pass of 200 in a quarter second, the next asks 201 and no more until an
    answer: with a server's latency, sending on at 800/s until the first 429 came back overran
    the window by all that went out meanwhile (190 refused at 0.24 s). A 429 for one of them
    ends the pass: everyone waits its Retry-After, and the window is learned."""
    bucket, control = paced(800, pause_after=5)
    start, late = await probing(bucket, control)
    for _ in range(200):
        control.on_success(start)
    assert not late.done()
    answered = now()
    control.on_throttled(1, sent_at=start + 0.25)  # the 201st (answers come in any order)
    assert await late == pytest.approx([answered + 1])
    assert control.learned() == "a window of about 200 requests in 1 s"
    assert bucket.rate == pytest.approx(0.97 * 200)


@virtual_time
async def test_eight_429s_in_a_row_for_requests_sent_before_a_shave_pause_everyone() -> None:
    """A 429 after a run of successes only shaves the rate, and sending goes on nearly as fast;
    when the requests sent before it come back refused, solid, the quota is spent: everyone
    waits from the eighth (a window's edge grazed refuses two or three), not from a 429 for a
    request sent after the shave, a latency later."""
    bucket, control = paced(800, pause_after=5)
    sent = await send_then_answer(bucket, control, 60, 40)
    control.on_throttled(1, sent_at=sent[40])
    assert 0.9 * 800 < bucket.rate < 800  # a shave
    for i, when in enumerate(sent[41:48], start=2):
        control.on_throttled(1, sent_at=when)
        assert (bucket.paused_until > now()) == (i == 8)
    # The pass is read as a window's first: the next goes at 800/s, and asks 41.
    assert bucket.rate == 800
    await asyncio.sleep(bucket.paused_until - now())
    await acquire_times(bucket, 41)
    await assert_held(bucket)


@virtual_time
async def test_a_shave_that_came_with_a_pause_is_no_shave_for_the_429s_that_follow() -> None:
    """A 429 at the edge saying wait 6 s pauses everyone: sending did not go on, so the 429s of
    the requests sent before it, coming back once the pause is over, are that episode's and
    pause nobody again (as eight in a row after a plain shave would)."""
    bucket, control = paced(800, pause_after=5)
    sent = await send_then_answer(bucket, control, 60, 40)
    control.on_throttled(6, sent_at=sent[40])
    assert 0.9 * 800 < bucket.rate < 800  # a shave, and a pause
    paused = bucket.paused_until
    await asyncio.sleep(paused - now())
    for when in sent[41:50]:
        control.on_throttled(1, sent_at=when)
    assert bucket.paused_until == paused


@virtual_time
async def test_a_success_reordered_past_a_429_does_not_keep_a_spent_quota_from_pausing() -> None:
    """With a jittered latency, a request sent just after a refused one can reach the server
    first and go through. That marked the whole pass scattered: it never paused, and each 429
    cut by 0.7 (400/s down to 22/s in 1.5 s of a resume). Each cut judges afresh: three 429s in
    a row after a cut, each sent after the last, pause everyone as for any spent quota."""
    bucket, control = paced(400, pause_after=5)
    for _ in range(40):
        await bucket.acquire()
        control.on_success(now())
    await bucket.acquire()
    refused = now()
    await bucket.acquire()
    control.on_throttled(1, sent_at=refused)  # a shave
    control.on_success(now())  # sent after the refused one, through first
    refusals = 0
    while bucket.paused_until <= now() and refusals < 10:  # each sent after the last answer
        await bucket.acquire()
        control.on_throttled(1, sent_at=now())
        refusals += 1
    assert refusals == 3
    assert bucket.paused_until == pytest.approx(now() + 1)


@virtual_time
async def test_eight_429s_without_retry_after_after_a_shave_are_still_that_shave() -> None:
    """With no Retry-After there is nothing to pause for: the 429s of requests sent before the
    shave answer for it, and cut nothing more."""
    bucket, control = paced(800, pause_after=5)
    sent = await send_then_answer(bucket, control, 60, 40)
    control.on_throttled(None, sent_at=sent[40])
    shaved = bucket.rate
    for when in sent[41:50]:
        control.on_throttled(None, sent_at=when)
    assert bucket.rate == shaved
    assert bucket.paused_until < now()


@virtual_time
async def test_a_probe_whose_answer_is_lost_sends_one_more_in_its_place() -> None:
    """A timed-out request of the probe's pass lets one more slot out, then the gate shuts."""
    bucket, control = paced(800, pause_after=5)
    start, late = await probing(bucket, control)
    control.on_lost(start + 0.1)
    await asyncio.wait_for(late, 1)
    await assert_held(bucket)


@virtual_time
async def test_a_pause_of_zero_during_a_probe_opens_the_gate_for_its_waiters() -> None:
    """A 503 saying wait 0 ends the probe's pass: the gate it held shut opens, and the waiters
    behind it are woken (nothing else would wake them)."""
    bucket, control = paced(800, pause_after=5)
    _, late = await probing(bucket, control)
    control.on_unavailable(0)
    await asyncio.wait_for(late, 1)


@virtual_time
async def test_a_probe_told_to_wait_long_reads_no_fixed_window() -> None:
    """A 429 for a probed request saying wait 5 s is no short window's end (nor a fixed
    window's: two passes of 200 at 800/s): the pass pauses and cuts, window mode stays off."""
    bucket, control = paced(800, pause_after=10)
    start, late = await probing(bucket, control)
    for _ in range(200):
        control.on_success(start)
    control.on_throttled(5, sent_at=start + 0.1)
    assert control.window_requests is None
    assert control.learned() is None
    assert bucket.paused_until == pytest.approx(now() + 5)
    await asyncio.wait_for(late, 6)


@virtual_time
async def test_a_learned_window_grazed_is_not_paused_for_by_the_429s_of_its_shave() -> None:
    """Once a window is learned, the 429s within its length of a shave answer for the shave
    (a window that counts refusals refuses on until the overrun slides out): no pause."""
    bucket, control = paced(800, pause_after=5)
    await window_learned(bucket, control, 200, 200)
    await asyncio.sleep(bucket.paused_until - now())
    sent = await send_then_answer(bucket, control, 50, 40)
    control.on_throttled(1, sent_at=sent[40])
    shaved = bucket.rate
    for when in sent[41:]:
        control.on_throttled(1, sent_at=when)
    assert bucket.paused_until < now()
    assert bucket.rate == shaved


@pytest.mark.parametrize(("rate", "successes"), [(30, 40), (800, 20)])
@virtual_time
async def test_a_slow_pass_or_a_short_one_is_no_window(rate: float, successes: int) -> None:
    """A window lets N through faster than its wait: N over longer, or a handful, is no window.

    (Its wait says 1 s when a token bucket's few milliseconds round up to a whole second.)
    """
    bucket, control = paced(rate, pause_after=5)
    await overrun(bucket, control, successes)
    assert bucket.paused_until == pytest.approx(now() + 1)
    assert bucket.rate < rate * BETA**2  # three cuts, as for any quota
    assert control.learned() is None


@pytest.mark.parametrize("wait", [0.0, 0.05])
@virtual_time
async def test_a_wait_under_a_second_is_no_window(wait: float) -> None:
    """A Retry-After of 0 (or a date just ahead) says nothing of a window: nothing learned."""
    bucket, control = paced(800, burst=64, pause_after=5)
    for _ in range(40):
        await bucket.acquire()
        control.on_success(now())
    rates = [bucket.rate]
    for _ in range(3):  # each sent after the last cut: the third pauses, and may learn
        await bucket.acquire()
        control.on_throttled(wait, sent_at=now())
        rates.append(bucket.rate)
    assert control.learned() is None
    assert rates == sorted(rates, reverse=True)
    assert bucket.rate < 800 * BETA


@virtual_time
async def test_a_window_learned_never_raises_the_rate() -> None:
    """A burst of 100 through at a 20/s limiter, then a 1 s wait: no window of 100 a second
    (a client's own burst is not a window's), and the rate never goes above 20."""
    bucket, control = paced(20, burst=100, pause_after=5)
    rates = await overrun(bucket, control, 100)
    assert max(rates) == 20
    assert control.learned() is None


@virtual_time
async def test_a_window_learned_is_never_above_the_configured_rate() -> None:
    """At 80/s with a burst of 100, each pass's 100 go at once (the pause saves the burst up
    again), then wait a second: 100 a second would be above ``--rate``, so the rate goes to 3%
    under 80."""
    bucket, control = paced(80, burst=100, pause_after=5)
    await window_learned(bucket, control, 100, 100)
    assert control.learned() == "a window of about 100 requests in 1 s"
    assert bucket.rate == pytest.approx(0.97 * 80)


@virtual_time
async def test_a_429_for_a_request_sent_as_a_pause_began_belongs_to_the_pass_before() -> None:
    """A worker handed its slot as a pause began sends at that very moment. Its 429 is the last
    pass's: taken for the next pass's first 429, it made every success of that pass look
    scattered, and a window at 4x with 0.2 s latency went unread (0.46 of the quota, a third
    refused, in two runs of three of the benchmark row)."""
    bucket, control = paced(800, pause_after=5)
    await overrun(bucket, control, 200)
    control.on_throttled(1, sent_at=now())  # sent as the pause began, answered in it
    await asyncio.sleep(bucket.paused_until - now())
    for _ in range(200):
        await bucket.acquire()
        control.on_success(now())
    for _ in range(10):  # (a scattered pass never pauses: bounded, not overrun's loop)
        if bucket.paused_until >= now():
            break
        await bucket.acquire()
        control.on_throttled(1, sent_at=now())
    assert control.learned() == "a window of about 200 requests in 1 s"
    assert bucket.rate == pytest.approx(0.97 * 200)


@virtual_time
async def test_a_pass_the_clients_burst_swelled_is_paced_at_the_rate_it_went_at() -> None:
    """A window of 100 a second learned at 300/s with a burst of 100: the pause saves the burst
    up again, so the next pass's first 97 go at once and 150 get through before its 429s. The
    pace stays 3% under the rate that pass went at (under 100/s), not 150 a second."""
    bucket, control = paced(300, burst=100, pause_after=5)
    for successes in (100, 100):  # (each pass's 100 go at once: the burst)
        await overrun(bucket, control, successes)
        await asyncio.sleep(bucket.paused_until + 0.01 - now())
    assert bucket.rate == pytest.approx(0.97 * 100)
    rates = await overrun(bucket, control, 150)
    assert control.learned() == "a window of about 150 requests in 1 s"
    assert bucket.rate == pytest.approx(0.97 * rates[0], rel=0.03)
    assert bucket.rate < 0.97 * 100


@pytest.mark.parametrize("configured", [250.0, 300.0])
@virtual_time
async def test_a_window_read_after_its_pass_was_cut_goes_at_the_window_not_the_cut(
    configured: float,
) -> None:
    """A window of 200 a second read at 1.25-1.5 times it: the pass's own 429s cut the rate
    before its pause reads the window. The rate learned is 3% under the window, not under the
    rate those 429s cut to (from there it was probed past slowly, and once past, a window that
    counts refusals refused every request for a second)."""
    bucket, control = paced(configured, pause_after=5)
    await overrun(bucket, control, 200)
    await asyncio.sleep(bucket.paused_until - now())
    rates = await overrun(bucket, control, 200)
    assert min(rates) < 200  # the second pass's 429s cut the rate below the window
    assert control.learned() == "a window of about 200 requests in 1 s"
    assert bucket.rate == pytest.approx(0.97 * 200)


@virtual_time
async def test_a_long_wait_after_a_pass_is_no_window_per_second() -> None:
    """A wait of whole seconds that is long (a fixed window's end) pauses, and cuts as before."""
    bucket, control = paced(800, pause_after=5)
    for _ in range(200):
        await bucket.acquire()
        control.on_success(now())
    while bucket.paused_until < now():
        await bucket.acquire()
        control.on_throttled(4, sent_at=now())
    assert bucket.rate < 0.97 * 800 * BETA
    assert control.learned() is None


@virtual_time
async def test_a_window_learned_is_a_ceiling_probed_past_only_slowly() -> None:
    """Read from a pass that starts when a pause ends (the window drained), N per W is known:
    past it the rate probes only as slowly as the cut was shallow."""
    bucket, control = paced(800, pause_after=5)
    await window_learned(bucket, control, 200, 100)
    assert control.learned() == "a window of about 100 requests in 1 s"
    await asyncio.sleep(1)
    start = now()
    while now() < start + 10:
        await bucket.acquire()
        control.on_success(now())
    assert 100 < bucket.rate < 1.03 * 100  # probing as after a full cut: 109


@virtual_time
async def test_after_a_window_is_learned_429s_within_it_of_a_shave_are_that_shave() -> None:
    """A window that counts refusals refuses for one window after a shave: one cut, not three."""
    bucket, control = paced(800, pause_after=5)
    await window_learned(bucket, control, 200, 200)
    await asyncio.sleep(1)
    for _ in range(100):
        await bucket.acquire()
        control.on_success(now())
    await bucket.acquire()
    control.on_throttled(1, sent_at=now())  # at the edge, after 100 successes: a shave
    shaved, shaved_at = bucket.rate, now()
    assert 0.9 * 194 < shaved < 194
    await asyncio.sleep(0.5)
    control.on_throttled(1, sent_at=now())  # the window still holds the overrun
    assert bucket.rate == shaved
    for _ in range(40):  # measured at this rate: the share of 429s holds no cut back
        await bucket.acquire()
        control.on_success(now())
    await asyncio.sleep(shaved_at + 1.5 - now())
    control.on_throttled(1, sent_at=now())  # a window later: news
    assert bucket.rate < shaved


@virtual_time
async def test_without_a_learned_window_a_429_sent_after_a_shave_is_news() -> None:
    """With no window learned, the shave answers only for requests sent before it."""
    bucket, control = paced(200)
    for _ in range(100):
        await bucket.acquire()
        control.on_success(now())
    await bucket.acquire()
    control.on_throttled(None, sent_at=now())
    shaved = bucket.rate
    await asyncio.sleep(0.5)
    control.on_throttled(None, sent_at=now())
    assert bucket.rate < shaved


# --- window mode ------------------------------------------------------------------------------


async def spend_a_window(
    bucket: TokenBucket, control: RateController, successes: int, retry_after: float
) -> float:
    """Send one pass: *successes* answered 200, then one 429; return that 429's send time."""
    for _ in range(successes):
        await bucket.acquire()
        control.on_success(now())
    await bucket.acquire()
    sent = now()
    control.on_throttled(retry_after, sent_at=sent)
    return sent


async def window_mode(n: int = 100) -> tuple[TokenBucket, RateController]:
    """A pair that met a fixed window of *n* requests: two pauses with *n* successes between."""
    bucket, control = paced(40, pause_after=5)
    await bucket.acquire()
    control.on_throttled(8, sent_at=now())  # a long Retry-After: the window resets at t=8
    await asyncio.sleep(8)
    await spend_a_window(bucket, control, n, 6)
    return bucket, control


@virtual_time
async def test_two_pauses_with_successes_between_mean_a_fixed_window() -> None:
    """From one pause to the next the quota allowed N successes: window mode, N learned."""
    bucket, control = await window_mode(100)
    assert control.window_requests == 100
    assert bucket.rate == control.max_rate == 40  # a pass goes at the configured rate
    assert bucket.paused_until == pytest.approx(now() + 6)


@virtual_time
async def test_window_mode_says_what_it_learned() -> None:
    """Once in window mode the controller names the window's N; before, it says nothing."""
    _, fresh = paced(40)
    assert fresh.learned() is None
    _, control = await window_mode(100)
    assert control.learned() == "fixed window of 100 requests"


@virtual_time
async def test_window_mode_holds_after_n_plus_one_slots_until_the_last_is_answered() -> None:
    """A pass hands out N + 1 slots, then none until the last one's answer arrives."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    start = now()
    await acquire_times(bucket, 101)
    assert now() == pytest.approx(start + 100 / 40)
    late = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(60)
    assert not late.done()
    answered = now()
    control.on_throttled(1, sent_at=answered - 60)  # the 101st: the window is spent
    assert await late == pytest.approx([answered + 1])


@virtual_time
async def test_a_lost_answer_to_the_held_slot_lets_the_next_slot_ask_in_its_place() -> None:
    """The N + 1st request timed out: one more slot goes out and holds the gate in its turn,
    and its answer ends the pass (the gate used to stay shut for good: the batch hung)."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    await acquire_times(bucket, 101)
    held = now()
    late = asyncio.create_task(acquire_times(bucket, 2))
    await asyncio.sleep(5)
    assert not late.done()
    control.on_lost(held)  # its timeout: no answer will come
    await asyncio.sleep(1)
    assert not late.done()  # one slot went out; the second waits for that one's answer
    assert bucket.acquired_count == 1 + 100 + 1 + 101 + 1  # the pair's, two passes, and it
    answered = now()
    control.on_throttled(2, sent_at=answered - 1)  # the window is spent: wait for its reset
    assert (await late)[-1] == pytest.approx(answered + 2)


@virtual_time
async def test_a_lost_answer_to_a_slot_before_the_held_one_keeps_the_hold() -> None:
    """Only the held slot's answer ends a hold: a request sent earlier whose answer was lost
    leaves the gate shut."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    first = now()
    await acquire_times(bucket, 101)
    late = asyncio.create_task(acquire_times(bucket, 1))
    control.on_lost(first)
    await asyncio.sleep(5)
    assert not late.done()
    late.cancel()


@virtual_time
async def test_a_retry_after_of_zero_in_window_mode_wakes_the_waiters() -> None:
    """A 429 saying wait 0 opens the next pass at once instead of leaving waiters stuck."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    await acquire_times(bucket, 101)
    late = asyncio.create_task(acquire_times(bucket, 1))
    await asyncio.sleep(5)
    assert not late.done()
    answered = now()
    control.on_throttled(0, sent_at=answered - 5)  # the 101st, with Retry-After: 0
    assert await asyncio.wait_for(late, 1) == pytest.approx([answered])


@virtual_time
async def test_a_throttled_slot_after_n_costs_one_429_per_window() -> None:
    """Windows of N: each pass is N successes and one 429, and N stays learned."""
    bucket, control = await window_mode(100)
    for _ in range(40):  # measured at this rate: the share of 429s holds no cut back
        await asyncio.sleep(bucket.paused_until - now())
        before = control.throttled_count
        sent = await spend_a_window(bucket, control, 100, 1)
        assert control.throttled_count == before + 1
        assert bucket.paused_until == pytest.approx(sent + 1)
    assert control.window_requests == 100


@virtual_time
async def test_when_the_slot_after_n_succeeds_the_pass_goes_on() -> None:
    """A pass that ran into the next window goes on past N + 1 until a 429."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    for _ in range(101):
        await bucket.acquire()
        control.on_success(now())
    start = now()
    assert await acquire_times(bucket, 50) == pytest.approx(
        [start + (i + 1) / 40 for i in range(50)]
    )


@virtual_time
async def test_a_smaller_window_lowers_n_from_the_last_complete_pass() -> None:
    """When the window shrinks, N follows the smaller of the last two complete passes."""
    bucket, control = await window_mode(100)
    for successes in (100, 60, 60):
        await asyncio.sleep(bucket.paused_until - now())
        await spend_a_window(bucket, control, successes, 1)
    assert control.window_requests == 60


@virtual_time
async def test_a_success_behind_a_429_of_the_same_pass_leaves_window_mode() -> None:
    """A 429 then a success for a later request of the same pass: not a fixed window."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    await bucket.acquire()
    first = now()
    await bucket.acquire()
    second = now()
    control.on_throttled(1, sent_at=first)
    assert control.window_requests == 100
    control.on_success(second)
    assert control.window_requests is None
    assert bucket.paused_until == pytest.approx(first + 1 + 1 / 40)  # its Retry-After stays


@virtual_time
async def test_a_429_answering_an_earlier_pass_changes_nothing() -> None:
    """In window mode, a 429 for a request sent before this pass began is old news."""
    bucket, control = await window_mode(100)
    paused_until = bucket.paused_until
    control.on_throttled(30, sent_at=1.0)
    assert bucket.paused_until == paused_until
    assert control.window_requests == 100


@virtual_time
async def test_a_429_without_retry_after_in_window_mode_goes_back_to_cutting() -> None:
    """No Retry-After means no window's end to wait for: window mode ends and the rate is cut."""
    bucket, control = await window_mode(100)
    await asyncio.sleep(bucket.paused_until - now())
    await bucket.acquire()
    before = control.throttled_count
    control.on_throttled(None, sent_at=now())
    assert control.window_requests is None
    assert bucket.rate == pytest.approx(40 * BETA)
    assert control.throttled_count == before + 1  # counted once, not again by the cut


@virtual_time
async def test_repr_shows_window_mode() -> None:
    """repr names the learned requests per window."""
    _, control = await window_mode(100)
    assert "window of 100" in repr(control)


@virtual_time
async def test_two_passes_in_a_row_past_n_plus_one_leave_window_mode() -> None:
    """Passes that keep running past N + 1 are 429s at random, not a window: cut as usual."""
    bucket, control = await window_mode(100)
    for left_at in (True, False):
        await asyncio.sleep(bucket.paused_until - now())
        for _ in range(101):
            await bucket.acquire()
            control.on_success(now())
        if left_at:
            assert control.window_requests == 100  # the first one only ran on
            await bucket.acquire()
            control.on_throttled(1, sent_at=now())
    assert control.window_requests is None
    assert bucket.paused_until <= now()
