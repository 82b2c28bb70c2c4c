"""Tests of bulkretry._pace.budget: the bound on retries, waiting for a token, and fairness.

Async tests run on an event loop whose clock jumps over every idle wait, so deadlines are exact
and tests are instant (`conftest.virtual_time`).
"""

from __future__ import annotations

import asyncio
import math
import random

import pytest
from conftest import virtual_time
from hypothesis import given
from hypothesis import strategies as st

from bulkretry._config import DEFAULT_RETRY_BUDGET
from bulkretry._pace.budget import DEFAULT_BUDGET_CAPACITY, RetryBudget


def now() -> float:
    return asyncio.get_running_loop().time()


async def settle() -> None:
    """Let every ready callback run without moving the clock."""
    for _ in range(5):
        await asyncio.sleep(0)


def drain(budget: RetryBudget) -> None:
    while budget.try_spend():
        pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": -0.1},
        {"ratio": math.nan},
        {"capacity": 0.5},
        {"capacity": math.inf},
        {"per_second": -1.0},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    """A negative ratio, a capacity below one token or a negative trickle raises ValueError."""
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)


def test_defaults_allow_half_of_requests_plus_ten() -> None:
    """By default the budget starts with 10 tokens and earns --retry-budget's 0.5 per attempt."""
    budget = RetryBudget()
    assert (budget.ratio, budget.capacity) == (DEFAULT_RETRY_BUDGET, DEFAULT_BUDGET_CAPACITY)
    assert (DEFAULT_RETRY_BUDGET, DEFAULT_BUDGET_CAPACITY) == (0.5, 10.0)
    assert budget.tokens == 10


def test_a_full_budget_allows_capacity_retries_then_refuses() -> None:
    """A fresh budget pays for `capacity` retries, then try_spend says no."""
    budget = RetryBudget(capacity=3)
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    assert budget.retries == 3


def test_first_attempts_pay_for_retries_at_ratio() -> None:
    """Ten first attempts at ratio 0.1 pay for exactly one retry."""
    budget = RetryBudget(ratio=0.1, capacity=5)
    drain(budget)
    for _ in range(9):
        budget.on_request()
    assert not budget.try_spend()
    budget.on_request()
    assert budget.try_spend()
    assert budget.requests == 10


def test_tokens_never_exceed_capacity() -> None:
    """Deposits beyond a full budget are lost."""
    budget = RetryBudget(ratio=0.5, capacity=4)
    for _ in range(100):
        budget.on_request()
    assert budget.tokens == 4


def test_retries_stay_within_ratio_of_requests_over_a_long_failing_batch() -> None:
    """With half of all attempts failing, retries reach but never pass 10 + 0.1 * requests."""
    rng = random.Random(7)
    budget = RetryBudget(ratio=0.1)
    retries_wanted = 0
    for _ in range(20_000):
        budget.on_request()
        attempts = 0
        while rng.random() < 0.5 and attempts < 5:
            attempts += 1
            retries_wanted += 1
            if not budget.try_spend():
                break
        assert budget.retries <= 10 + 0.1 * budget.requests + 1e-9
    assert retries_wanted > 3 * budget.retries
    assert budget.retries >= 10 + 0.1 * budget.requests - 1


@given(
    st.lists(st.sampled_from(["request", "retry"]), max_size=300),
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=1, max_value=20),
)
def test_retries_never_exceed_capacity_plus_ratio_of_requests(
    events: list[str], ratio: float, capacity: int
) -> None:
    """Whatever the order of first attempts and retries, retries <= capacity + ratio * requests."""
    budget = RetryBudget(ratio=ratio, capacity=capacity)
    for event in events:
        if event == "request":
            budget.on_request()
        else:
            budget.try_spend()
        assert budget.retries <= capacity + ratio * budget.requests + 1e-9
        assert 0 <= budget.tokens <= capacity


@virtual_time
async def test_wait_takes_a_token_at_once_when_there_is_one() -> None:
    """wait returns True immediately, with the token taken."""
    budget = RetryBudget(capacity=2)
    assert await budget.wait(deadline=10)
    assert budget.tokens == 1
    assert now() == 0


@virtual_time
async def test_wait_on_an_empty_budget_ends_when_first_attempts_pay_for_a_token() -> None:
    """A waiter gets its token the moment deposits make one whole."""
    budget = RetryBudget(ratio=0.25, capacity=2)
    drain(budget)
    waiter = asyncio.create_task(budget.wait(deadline=100))
    await asyncio.sleep(5)
    for _ in range(3):
        budget.on_request()
    await settle()
    assert not waiter.done()
    budget.on_request()
    await settle()
    assert waiter.result() is True
    assert budget.tokens == 0
    assert budget.waiting == 0


@virtual_time
async def test_wait_gives_up_exactly_at_the_deadline() -> None:
    """With no deposit, wait returns False at its deadline, not before."""
    budget = RetryBudget(capacity=1)
    drain(budget)
    assert not await budget.wait(deadline=42.5)
    assert now() == pytest.approx(42.5)
    assert budget.denied == 1


@virtual_time
async def test_wait_with_a_deadline_already_past_returns_false_at_once() -> None:
    """A deadline in the past means no waiting at all."""
    budget = RetryBudget(capacity=1)
    drain(budget)
    await asyncio.sleep(10)
    assert not await budget.wait(deadline=5)
    assert now() == 10


@virtual_time
async def test_waiters_are_served_in_order_and_each_at_its_own_deadline() -> None:
    """Tokens go to waiters first come, first served; a waiter's deadline ends only its wait."""
    budget = RetryBudget(ratio=1, capacity=5)
    drain(budget)
    results: dict[str, tuple[bool, float]] = {}

    async def wait(name: str, deadline: float) -> None:
        results[name] = (await budget.wait(deadline), now())

    tasks = [
        asyncio.create_task(wait(name, deadline))
        for name, deadline in [("a", 50), ("b", 3), ("c", 50), ("d", 50)]
    ]
    await asyncio.sleep(5)
    budget.on_request()
    budget.on_request()
    await asyncio.gather(*tasks)
    assert results == {
        "b": (False, 3),
        "a": (True, 5),
        "c": (True, 5),
        "d": (False, 50),
    }


@virtual_time
async def test_try_spend_does_not_jump_the_queue() -> None:
    """While records wait, try_spend refuses even if a token has just arrived for them."""
    budget = RetryBudget(ratio=0.5, capacity=2)
    drain(budget)
    waiter = asyncio.create_task(budget.wait(deadline=10))
    await settle()
    budget.on_request()
    budget.on_request()
    assert not budget.try_spend()
    assert await waiter


@virtual_time
async def test_cancelled_waiter_does_not_hold_up_the_queue() -> None:
    """A waiter cancelled while waiting is skipped; the next one gets the token."""
    budget = RetryBudget(ratio=1, capacity=2)
    drain(budget)
    first = asyncio.create_task(budget.wait(deadline=10))
    second = asyncio.create_task(budget.wait(deadline=10))
    await settle()
    first.cancel()
    await settle()
    budget.on_request()
    assert await second
    assert first.cancelled()


@virtual_time
async def test_waiter_cancelled_after_it_got_a_token_gives_it_back() -> None:
    """A token granted to a waiter cancelled before it could run goes to the next waiter."""
    budget = RetryBudget(ratio=1, capacity=3)
    drain(budget)
    victim: asyncio.Task[bool] | None = None

    async def first() -> bool:
        got = await budget.wait(deadline=10)
        if victim is not None:
            # first and the victim got tokens in the same moment; first runs first.
            victim.cancel()
        return got

    x = asyncio.create_task(first())
    victim = asyncio.create_task(budget.wait(deadline=10))
    after = asyncio.create_task(budget.wait(deadline=10))
    await settle()
    budget.on_request()
    budget.on_request()
    assert await x
    assert await after
    assert victim.cancelled()
    assert budget.retries == 3 + 2
    assert budget.tokens == 0


@virtual_time
async def test_per_second_trickle_serves_waiters_when_no_first_attempts_remain() -> None:
    """With per_second, a token grows back over time, so the end of a batch still retries."""
    budget = RetryBudget(ratio=0.1, capacity=2, per_second=0.5)
    drain(budget)
    assert await budget.wait(deadline=100)
    assert now() == pytest.approx(2.0)
    await asyncio.sleep(100)
    assert budget.tokens == 2


def test_budget_works_outside_an_event_loop() -> None:
    """Deposits and try_spend need no running loop."""
    budget = RetryBudget(ratio=1, capacity=2, per_second=1)
    drain(budget)
    budget.on_request()
    assert budget.try_spend()


def test_repr_shows_the_state() -> None:
    """repr shows tokens, ratio, counts and waiters."""
    budget = RetryBudget(ratio=0.1)
    budget.on_request()
    budget.try_spend()
    assert repr(budget) == (
        "<RetryBudget tokens=9.00/10, ratio=0.1, requests=1, retries=1, denied=0, waiting=0>"
    )
