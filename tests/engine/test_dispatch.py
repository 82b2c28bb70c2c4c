"""Tests of bulkretry._engine.dispatch: due retries first, one timer, memory bound, the end.

Async tests run on an event loop whose clock jumps over every idle wait (``virtual_time``), so
due times are exact and the tests are instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from conftest import virtual_time

from bulkretry._engine.dispatch import READ_AHEAD, Dispatch


def now() -> float:
    return asyncio.get_running_loop().time()


async def settle() -> None:
    """Let every ready callback run without moving the clock."""
    for _ in range(5):
        await asyncio.sleep(0)


async def filled(items: list[str], *, max_pending: int = 8, buffer: int = 1000) -> Dispatch[str]:
    """A closed dispatcher holding ``items`` as fresh input."""
    dispatch: Dispatch[str] = Dispatch(max_pending=max_pending, buffer=buffer)
    for item in items:
        await dispatch.put(item)
    dispatch.close()
    return dispatch


def count_timers(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.TimerHandle]:
    """Record every timer the running loop sets from now on."""
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def recording(when: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        handle = call_at(when, callback, *args)
        handles.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_at", recording)
    return handles


def test_nonsense_sizes_are_refused() -> None:
    """No room for a record in hand, or none queued, raises ValueError."""
    with pytest.raises(ValueError, match="at least 1"):
        Dispatch(max_pending=0, buffer=4)
    with pytest.raises(ValueError, match="at least 1"):
        Dispatch(max_pending=4, buffer=0)


async def test_fresh_records_come_out_in_input_order() -> None:
    """Without retries, take() hands out the input as it was put."""
    dispatch = await filled(["a", "b", "c"])
    assert [await dispatch.take() for _ in range(3)] == ["a", "b", "c"]
    assert dispatch.in_hand == 3


@virtual_time
async def test_retries_come_due_in_order_of_due_time_not_of_scheduling() -> None:
    """Records scheduled for 3 s, 1 s and 2 s come back at 1, 2 and 3 s, in that order."""
    dispatch = await filled(["c", "a", "b"])
    for item in ["c", "a", "b"]:
        assert await dispatch.take() == item
    dispatch.schedule("c", 3.0)
    dispatch.schedule("a", 1.0)
    dispatch.schedule("b", 2.0)
    came: list[tuple[str | None, float]] = []
    for _ in range(3):
        item = await dispatch.take()
        came.append((item, now()))
    assert came == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


@virtual_time
async def test_records_due_at_the_same_time_keep_the_order_they_were_scheduled_in() -> None:
    """Equal due times are first come, first served."""
    dispatch = await filled(["a", "b", "c"])
    for _ in range(3):
        await dispatch.take()
    for item in ["b", "c", "a"]:
        dispatch.schedule(item, 1.0)
    assert [await dispatch.take() for _ in range(3)] == ["b", "c", "a"]


@virtual_time
async def test_a_due_time_in_the_past_is_due_at_once() -> None:
    """A record scheduled for now (a renewed token) is handed out without a timer."""
    dispatch = await filled(["a"])
    await dispatch.take()
    dispatch.schedule("a", now())
    assert dispatch.next_due is None
    assert await dispatch.take() == "a"
    assert now() == 0.0


@virtual_time
async def test_one_timer_is_set_for_the_earliest_record_whatever_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hundred records waiting cost one live timer, moved only when an earlier one comes."""
    dispatch = await filled([f"r{i}" for i in range(100)], max_pending=100)
    for _ in range(100):
        await dispatch.take()
    handles = count_timers(monkeypatch)
    dispatch.schedule("r0", 5.0)
    for i in range(1, 99):
        dispatch.schedule(f"r{i}", 5.0 + i)
    assert len(handles) == 1
    assert dispatch.next_due == 5.0
    dispatch.schedule("r99", 2.0)  # earlier than any: the one timer moves
    assert len(handles) == 2
    assert handles[0].cancelled()
    assert dispatch.next_due == 2.0
    assert dispatch.waiting == 100
    while dispatch.waiting or dispatch.in_hand:
        await dispatch.take()
        dispatch.done()
        assert sum(not h.cancelled() and h.when() > now() for h in handles) <= 1


@virtual_time
async def test_a_due_retry_comes_before_fresh_input() -> None:
    """Once a record's retry is due, it is handed out ahead of records still queued."""
    dispatch = await filled(["a", "b", "c"])
    assert await dispatch.take() == "a"
    dispatch.schedule("a", 1.0)
    assert await dispatch.take() == "b"
    await asyncio.sleep(1.5)
    assert await dispatch.take() == "a"
    assert await dispatch.take() == "c"


@virtual_time
async def test_a_worker_waiting_for_work_gets_the_retry_when_it_comes_due() -> None:
    """take() waits while nothing is due and no fresh record may be taken, then wakes at 1 s."""
    dispatch = await filled(["a"])
    await dispatch.take()
    dispatch.schedule("a", 1.0)
    assert await dispatch.take() == "a"
    assert now() == 1.0


async def test_no_fresh_record_is_taken_while_max_pending_are_in_hand() -> None:
    """Records waiting for a retry count: the input waits until one of them is finished."""
    dispatch = await filled(["a", "b", "c", "d"], max_pending=2)
    assert [await dispatch.take(), await dispatch.take()] == ["a", "b"]
    dispatch.schedule("a", now() + 60)
    dispatch.schedule("b", now() + 60)
    third = asyncio.ensure_future(dispatch.take())
    await settle()
    assert not third.done()
    assert (dispatch.in_hand, dispatch.queued) == (2, 2)
    dispatch.done()  # one of them was finished
    assert await third == "c"
    assert dispatch.in_hand == 2


async def test_the_feeder_waits_while_the_queue_is_full_and_resumes_at_half() -> None:
    """put() blocks at ``buffer`` queued records, and goes on once half of them were taken."""
    dispatch: Dispatch[int] = Dispatch(max_pending=100, buffer=4)
    put: list[int] = []

    async def feeder() -> None:
        for i in range(10):
            await dispatch.put(i)
            put.append(i)
        dispatch.close()

    task = asyncio.ensure_future(feeder())
    await settle()
    assert (put, dispatch.queued) == ([0, 1, 2], 4)
    assert await dispatch.take() == 0
    await settle()
    assert dispatch.queued == 3  # not yet half free: the feeder still waits
    assert await dispatch.take() == 1
    await settle()
    assert dispatch.queued == 4
    assert put == [0, 1, 2, 3, 4]
    taken = [await dispatch.take() for _ in range(8)]
    assert taken == list(range(2, 10))
    await task


@pytest.mark.parametrize(
    ("workers", "rate", "queued"),
    [(8, 200, 400), (8, 1e6, READ_AHEAD), (300, 10, 1200), (2, 0.5, 8)],
)
async def test_a_batchs_dispatch_reads_two_seconds_ahead_at_the_rate(
    workers: int, rate: float, queued: int
) -> None:
    """The feeder queues two seconds' worth at the rate (at most READ_AHEAD), and never fewer
    than four per worker, before it waits."""
    dispatch: Dispatch[int] = Dispatch.for_workers(workers, rate)

    async def feeder() -> None:
        for i in range(queued + 1):
            await dispatch.put(i)

    task = asyncio.ensure_future(feeder())
    await settle()
    assert (dispatch.queued, task.done()) == (queued, False)
    task.cancel()


async def test_records_put_while_a_worker_waits_go_straight_to_it() -> None:
    """A waiting worker is handed the next fresh record without it being queued."""
    dispatch: Dispatch[str] = Dispatch(max_pending=2, buffer=2)
    taker = asyncio.ensure_future(dispatch.take())
    await settle()
    await dispatch.put("a")
    assert dispatch.queued == 0
    assert await taker == "a"


@virtual_time
async def test_the_end_comes_only_when_the_input_is_closed_and_nothing_is_in_hand() -> None:
    """A record waiting for its retry keeps every worker going; the last done() ends them all."""
    dispatch = await filled(["a"])
    assert await dispatch.take() == "a"
    dispatch.schedule("a", 5.0)
    workers = [asyncio.ensure_future(dispatch.take()) for _ in range(3)]
    await settle()
    assert not any(w.done() for w in workers)
    await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
    assert now() == 5.0
    [first] = [w for w in workers if w.done()]
    assert first.result() == "a"
    assert not any(w.done() for w in workers if w is not first)
    dispatch.done()
    assert [await w for w in workers if w is not first] == [None, None]
    assert await dispatch.take() is None


async def test_an_open_input_keeps_workers_waiting_even_with_nothing_in_hand() -> None:
    """Until close(), an idle dispatcher is not the end: more input may come."""
    dispatch: Dispatch[str] = Dispatch(max_pending=2, buffer=2)
    worker = asyncio.ensure_future(dispatch.take())
    await settle()
    assert not worker.done()
    dispatch.close()
    assert await worker is None


@virtual_time
async def test_drain_makes_every_waiting_record_due_at_once_in_due_order() -> None:
    """A stop hands out what waits in the heap now, not at its due time, and so from then on."""
    dispatch = await filled(["a", "b", "c"])
    for _ in range(3):
        await dispatch.take()
    dispatch.schedule("b", 20.0)
    dispatch.schedule("a", 10.0)
    dispatch.drain()
    assert dispatch.next_due is None
    dispatch.schedule("c", 30.0)
    assert [await dispatch.take() for _ in range(3)] == ["a", "b", "c"]
    assert now() == 0.0
    assert "drained" in repr(dispatch)


@virtual_time
async def test_a_held_record_comes_back_through_its_callback() -> None:
    """hold() keeps a record in hand until its future is done; the callback schedules it."""
    dispatch = await filled(["a"])
    await dispatch.take()
    loop = asyncio.get_running_loop()
    token: asyncio.Future[bool] = loop.create_future()
    answers: list[tuple[str, bool]] = []

    def then(item: str, future: asyncio.Future[Any]) -> None:
        answers.append((item, future.result()))
        dispatch.schedule(item, now() + 1)

    dispatch.hold("a", token, then)
    assert (dispatch.held, dispatch.in_hand) == (1, 1)
    loop.call_later(2.0, token.set_result, True)
    assert await dispatch.take() == "a"
    assert (answers, now(), dispatch.held) == ([("a", True)], 3.0, 0)


async def test_drain_cancels_what_is_held_and_the_callback_gives_the_record_back() -> None:
    """A stop cancels a held record's future (a retry-budget wait): it is handed out at once."""
    dispatch = await filled(["a"])
    await dispatch.take()
    token: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    seen: list[bool] = []

    def then(item: str, future: asyncio.Future[Any]) -> None:
        seen.append(future.cancelled())
        dispatch.schedule(item, now() + 60)

    dispatch.hold("a", token, then)
    dispatch.drain()
    assert await dispatch.take() == "a"
    assert seen == [True]
    dispatch.hold("a", asyncio.get_running_loop().create_future(), then)  # after the stop
    assert await dispatch.take() == "a"
    assert seen == [True, True]


async def test_a_worker_cancelled_as_it_is_handed_a_record_passes_the_record_on() -> None:
    """A record handed to a worker that is cancelled at that moment is not lost."""
    dispatch: Dispatch[str] = Dispatch(max_pending=2, buffer=2)
    first = asyncio.ensure_future(dispatch.take())
    await settle()
    await dispatch.put("a")  # handed to `first`, which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await dispatch.take() == "a"
    assert dispatch.in_hand == 1


@virtual_time
async def test_repr_shows_the_counts_and_the_next_due_time() -> None:
    """Debugging a stuck batch starts with the dispatcher's repr."""
    dispatch = await filled(["a", "b"])
    await dispatch.take()
    dispatch.schedule("a", 2.5)
    text = repr(dispatch)
    for part in ("in_hand=1/8", "fresh=1/1000", "due=0", "later=1", "next in 2.500s", "closed"):
        assert part in text


def test_a_timer_within_uvloops_clock_tick_is_rescheduled_without_its_handle_time() -> None:
    """uvloop answers call_at for a time within its tick with a plain Handle (no when()): the
    dispatcher keeps the timer's time itself, so a second schedule does not fail."""
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()

    async def main() -> list[str]:
        dispatch: Dispatch[str] = Dispatch(max_pending=4, buffer=4)
        now = asyncio.get_running_loop().time()
        dispatch.adopt("later", now + 0.0003)
        dispatch.adopt("sooner", now + 0.0002)
        assert dispatch.next_due is not None
        return [await dispatch.take() or "", await dispatch.take() or ""]

    try:
        assert sorted(loop.run_until_complete(main())) == ["later", "sooner"]
    finally:
        loop.close()


@virtual_time
async def test_records_adopted_for_later_never_hold_fresh_input_back() -> None:
    """Further rounds waiting out their delay keep the workers alive, not a slot of input."""
    dispatch: Dispatch[str] = Dispatch(max_pending=1, buffer=4)
    now = asyncio.get_running_loop().time()
    for i in range(3):
        dispatch.adopt(f"round-{i}", now + 60)
    await dispatch.put("fresh")
    dispatch.close()
    assert await dispatch.take() == "fresh"
    dispatch.done()
    assert [await dispatch.take() for _ in range(3)] == ["round-0", "round-1", "round-2"]
    for _ in range(3):
        dispatch.release()
    assert await dispatch.take() is None


@virtual_time
async def test_records_waiting_out_their_own_retry_after_never_hold_fresh_input_back() -> None:
    """A run told to wait its Retry-After frees its place: fresh input goes on meanwhile."""
    dispatch = await filled(["a", "b", "c"], max_pending=1)
    assert await dispatch.take() == "a"
    dispatch.schedule("a", now() + 3, aside=True)
    assert await dispatch.take() == "b"  # with "a" in hand, max_pending 1 would wait 3 s
    assert now() == 0
    dispatch.schedule("b", now() + 3, aside=True)
    assert await dispatch.take() == "c"
    dispatch.done()
    assert [await dispatch.take(), await dispatch.take()] == ["a", "b"]
    assert now() == 3
    dispatch.done()
    dispatch.done()
    assert await dispatch.take() is None


@virtual_time
async def test_a_record_set_aside_is_in_hand_again_when_a_stop_drains_the_heap() -> None:
    """A stop makes it due at once; the end still waits for it to be finished."""
    dispatch = await filled(["a"], max_pending=1)
    assert await dispatch.take() == "a"
    dispatch.schedule("a", now() + 60, aside=True)
    dispatch.drain()
    assert await dispatch.take() == "a"
    ending = asyncio.ensure_future(dispatch.take())
    await settle()
    assert not ending.done()
    dispatch.done()
    assert await ending is None


@virtual_time
async def test_a_record_held_aside_leaves_room_for_fresh_input_until_its_future_is_done() -> None:
    """A lost answer's look-up holds its record aside: fresh input goes on meanwhile, and the
    record counts again once the look-up is done."""
    d: Dispatch[str] = Dispatch(max_pending=1, buffer=4)
    await d.put("a")
    await d.put("b")
    assert await d.take() == "a"
    look: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    back: list[str] = []

    def then(item: str, future: asyncio.Future[object]) -> None:
        back.append(item)
        d.schedule(item, 0.0)

    d.hold("a", look, then, aside=True)
    assert d.in_hand == 0
    assert await asyncio.wait_for(d.take(), 1.0) == "b"  # fresh input, "a" not finished
    assert d.in_hand == 1
    look.set_result(None)
    await asyncio.sleep(0)
    assert back == ["a"]
    assert d.in_hand == 2
    assert await d.take() == "a"


@virtual_time
async def test_look_ups_held_aside_are_bounded_by_max_pending() -> None:
    """A second look-up held aside beyond max_pending counts as in hand: however long look-ups
    take, fresh input cannot pile up behind them without bound."""
    d: Dispatch[str] = Dispatch(max_pending=1, buffer=4)
    for item in "abc":
        await d.put(item)
    assert await d.take() == "a"
    first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    d.hold("a", first, lambda item, _: d.schedule(item, 0.0), aside=True)
    assert await asyncio.wait_for(d.take(), 1.0) == "b"
    second: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    d.hold("b", second, lambda item, _: d.schedule(item, 0.0), aside=True)
    assert d.in_hand == 1  # "b" still counts: "c" waits
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(d.take(), 1.0)
    second.set_result(None)
    first.set_result(None)
    await asyncio.sleep(0)
    assert {await d.take(), await d.take()} == {"a", "b"}


@virtual_time
async def test_a_drain_leaves_a_look_up_under_way_alone() -> None:
    """A stop cancels what is held, but not a look-up under way: it finishes, then its record
    comes back with what it found."""
    d: Dispatch[str] = Dispatch(max_pending=2, buffer=4)
    await d.put("a")
    assert await d.take() == "a"
    look: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    d.hold("a", look, lambda item, _: d.schedule(item, 0.0), drained=False)
    d.drain()
    assert not look.cancelled()
    look.set_result(None)
    await asyncio.sleep(0)
    assert await d.take() == "a"
