"""One quota shared by several clients and counted per client; 429s whatever the rate; headers."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from sim_helpers import quota_sim

from bulkretry._simulator import (
    ClientCounts,
    LeakyBucketQuota,
    ManualClock,
    Quota,
    Simulator,
    SimulatorConfig,
    SlidingWindowQuota,
    TokenBucketQuota,
    WindowQuota,
)
from bulkretry._simulator._quota import Limiter, policy

pytestmark = pytest.mark.e2e


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000.0)


async def retrigger(
    session: aiohttp.ClientSession, sim: Simulator, client: str | None = None, **headers: str
) -> tuple[int, Mapping[str, str]]:
    """Re-trigger the first failed run as `client` (x-sim-client), with `headers` changed."""
    sent = sim.headers()
    if client is not None:
        sent["x-sim-client"] = client
    sent.update(headers)
    async with session.post(
        f"{sim.base_url}/runs/{sim.failed_run_ids()[0]}/action?op=re-trigger", headers=sent
    ) as resp:
        await resp.read()
        return resp.status, resp.headers


async def statuses(session: aiohttp.ClientSession, sim: Simulator, n: int) -> list[int]:
    return [(await retrigger(session, sim))[0] for _ in range(n)]


# -- several clients on one quota ----------------------------------------------------------------


async def test_one_quota_is_shared_and_counted_per_client(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Two clients share a burst of 4: counts per x-sim-client add up to what the quota did."""
    async with quota_sim(clock, TokenBucketQuota(rate=1, burst=4)) as sim:
        answers = [
            (await retrigger(session, sim, client))[0] for client in ["a", "b", "a", "b", "a", "b"]
        ]
        async with session.get(f"{sim.origin}/_sim/stats") as resp:
            stats = await resp.json()
    assert answers == [200, 200, 200, 200, 429, 429]
    assert sim.client_counts() == {
        "a": ClientCounts(admitted=2, rejected=1, retriggers=2),
        "b": ClientCounts(admitted=2, rejected=1, retriggers=2),
    }
    assert stats["clients"] == {
        "a": {"admitted": 2, "rejected": 1, "throttled": 0, "retriggers": 2},
        "b": {"admitted": 2, "rejected": 1, "throttled": 0, "retriggers": 2},
    }


async def test_clients_without_the_header_are_told_apart_by_api_key(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Extra API keys are accepted, and each is a client of the shared quota."""
    quota = WindowQuota(requests=3, window=10)
    async with quota_sim(clock, quota, extra_api_keys=("key-a", "key-b")) as sim:
        for key in ["key-a", "key-a", "key-b", "key-b"]:
            await retrigger(session, sim, **{"x-api-key": key})
        refused = (await retrigger(session, sim, **{"x-api-key": "key-c"}))[0]
    counts = sim.client_counts()
    assert refused == 403
    assert counts["key-a"] == ClientCounts(admitted=2, retriggers=2)
    assert counts["key-b"] == ClientCounts(admitted=1, rejected=1, retriggers=1)
    assert "key-c" not in counts


async def test_client_header_is_configurable(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """client_header names the header the counts are keyed by."""
    async with quota_sim(clock, None, client_header="x-worker") as sim:
        await retrigger(session, sim, "ignored", **{"x-worker": "w1"})
    assert set(sim.client_counts()) == {"w1"}
    assert sim.requests[0].client == "w1"


# -- 429 whatever the rate -----------------------------------------------------------------------


async def test_throttle_answers_429_whatever_the_rate(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """throttle_rate=1: every request gets 429 with Retry-After S, however slowly it comes."""
    async with quota_sim(clock, None, throttle_rate=1.0, throttle_retry_after=7) as sim:
        answers = []
        for _ in range(3):
            answers.append(await retrigger(session, sim, "slow"))
            clock.advance(3_600)
    assert [(status, headers["Retry-After"]) for status, headers in answers] == [(429, "7")] * 3
    assert sim.retrigger_counts() == {}
    assert sim.client_counts()["slow"] == ClientCounts(admitted=3, throttled=3)
    assert [r.fault for r in sim.requests] == ["throttle"] * 3


async def test_throttle_hits_its_share_repeatably_and_spares_other_faults(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A 30% throttle 429s about 30% of requests, the same ones for the same seed."""
    runs = []
    for _ in range(2):
        async with quota_sim(ManualClock(), None, throttle_rate=0.3, seed=4) as sim:
            runs.append(await statuses(session, sim, 200))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 429}
    assert 40 <= runs[0].count(429) <= 80


async def test_throttle_spares_lookups_unless_trouble_on_listing(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Look-ups are throttled only with trouble_on_listing, like other faults."""
    for on_listing, expected in ((False, 200), (True, 429)):
        config = SimulatorConfig(throttle_rate=1.0, trouble_on_listing=on_listing)
        async with (
            Simulator(config) as sim,
            session.get(f"{sim.base_url}/runs", headers=sim.headers()) as resp,
        ):
            assert resp.status == expected


# -- rate-limit headers --------------------------------------------------------------------------


async def test_rate_limit_headers_are_off_by_default(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Without the switch no answer tells the quota's state."""
    async with quota_sim(clock, TokenBucketQuota(rate=1, burst=1)) as sim:
        answers = [await retrigger(session, sim) for _ in range(2)]
    assert all(not any("ratelimit" in h.lower() for h in headers) for _, headers in answers)


async def test_ietf_rate_limit_headers_tell_limit_remaining_and_reset(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """RateLimit-Limit/Remaining/Reset on admitted and refused answers alike."""
    quota = WindowQuota(requests=2, window=10)
    clock.set(1_004.0)
    async with quota_sim(clock, quota, rate_limit_headers="ietf") as sim:
        answers = [await retrigger(session, sim) for _ in range(3)]
    seen = [
        (s, h["RateLimit-Limit"], h["RateLimit-Remaining"], h["RateLimit-Reset"])
        for s, h in answers
    ]
    assert seen == [(200, "2", "1", "6"), (200, "2", "0", "6"), (429, "2", "0", "6")]
    assert {h["RateLimit-Policy"] for _, h in answers} == {"2;w=10"}


@pytest.mark.parametrize(
    ("quota", "declared"),
    [
        (TokenBucketQuota(rate=200, burst=20), "20;w=0.1"),
        (LeakyBucketQuota(rate=200), "1;w=0.005"),
        (WindowQuota(requests=2000, window=10), "2000;w=10"),
        (SlidingWindowQuota(requests=200, window=1), "200;w=1"),
    ],
)
def test_the_policy_declares_each_shape_as_its_limit_per_window(quota: Any, declared: str) -> None:
    """RateLimit-Policy gives the limit the other headers count, and the seconds it takes."""
    assert policy(quota) == declared


async def test_x_rate_limit_headers_give_the_reset_as_an_epoch_time(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """X-RateLimit-Reset is when the bucket is full again, in epoch seconds."""
    quota = TokenBucketQuota(rate=2, burst=4)
    async with quota_sim(clock, quota, rate_limit_headers="x") as sim:
        _, headers = await retrigger(session, sim)
    assert headers["X-RateLimit-Limit"] == "4"
    assert headers["X-RateLimit-Remaining"] == "3"
    assert headers["X-RateLimit-Reset"] == str(math.ceil(clock() + 0.5))


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        (LeakyBucketQuota(rate=4), (1, 0, 0.25)),
        (SlidingWindowQuota(requests=3, window=10), (3, 2, 10.0)),
        (TokenBucketQuota(rate=2, burst=4), (4, 3, 0.5)),
        (WindowQuota(requests=5, window=10), (5, 4, 10.0)),
    ],
)
def test_every_shape_reports_its_state(quota: Quota, expected: tuple[int, int, float]) -> None:
    """After one request each shape tells its limit, what is left, and when it is all back."""
    limiter = Limiter(quota, 0.0)
    assert limiter.admit(100.0) is None
    limit, left, reset = limiter.status(100.0)
    assert (limit, left) == expected[:2]
    assert reset == pytest.approx(expected[2])
    assert repr(quota) in repr(limiter)
