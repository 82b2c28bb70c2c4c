"""Several processes on one quota, each with its own Throttle: their shares converge.

Each process is a Throttle with its own workers, configured at twice its fair share, against one
token bucket they all draw from (as separate bulkretry processes with one API key do). Nothing
is shared between them but the server's answers. The clock is virtual: tests are instant.
"""

from __future__ import annotations

import asyncio

from conftest import virtual_time
from test_throttle import Outcome, TokenBucketQuota, now, simulate


async def started_after(
    delay: float, quota: TokenBucketQuota, rate: float, n: int, seed: int
) -> tuple[float, Outcome]:
    """One process that starts *delay* s late: 16 workers, answers in 2-4 ms (as on loopback),
    its own Throttle. When it started, and how it went."""
    await asyncio.sleep(delay)
    start = now()
    return start, await simulate(quota, rate, n, latency=0.002, jitter=0.002, seed=seed)


async def started_apart(delays: list[float], rate: float) -> tuple[float, float]:
    """Processes at *rate* each, started *delays* s late, 3000 successes in all on one
    quota, seeds 1-8: their mean goodput together, and the mean of slowest / fastest - 1,
    each timed from its own start."""
    goodputs, spreads = [], []
    for seed in range(1, 9):
        quota, total = TokenBucketQuota(200, 20), 3000
        start = now()
        share = total // len(delays)
        runs = await asyncio.gather(
            *(started_after(d, quota, rate, share, seed + i) for i, d in enumerate(delays))
        )
        took = [outcome.elapsed - began for began, outcome in runs]
        goodputs.append(total / quota.rate / (max(o.elapsed for _, o in runs) - start))
        spreads.append(max(took) / min(took) - 1)
    return sum(goodputs) / len(goodputs), sum(spreads) / len(spreads)


# Measured (3000 successes, 200/s with a burst of 20, 4 processes at 100/s each), by seed:
# together, and slowest / fastest - 1, with the climb growing with the rate to the power 2/3
# and a quarter of ``recovery`` when nothing is in flight [to its cube root, with all of it]
# (a climb of 600 requests, before either):
#   1 94.7% 0.06 [88.7% 0.32] (52.8% 1.62)   2 94.8% 0.05 [90.1% 0.35] (84.9% 0.54)
#   3 94.6% 0.08 [91.3% 0.37] (73.2% 0.57)   4 90.8% 0.14 [89.6% 0.35] (82.2% 0.40)
#   5 92.8% 0.28 [91.7% 0.57] (37.2% 2.24)   6 96.0% 0.22 [94.0% 0.13] (57.3% 1.45)
#   7 94.6% 0.15 [92.1% 0.17] (57.3% 1.61)   8 96.9% 0.07 [86.5% 0.38] (60.9% 1.06)
#   mean 94.4% 0.13 [90.5% 0.33] (63.2% 1.19); the power 2/3 alone, 92.4% 0.14. Single seeds
# have a long tail (with the cube root, one in 40 spread 1.22): the test takes the mean of 8.
# (Answers in 200-300 ms with 64 workers each, seeds 1-8: 78.3% and 0.36 [70.5% and 0.52],
# against 76.3% and 0.45 with a climb of 600 requests: a slow feedback loop is beyond what the
# climb's length mends.)
@virtual_time
async def test_four_processes_on_one_quota_converge_to_fair_shares() -> None:
    """Cut together by the quota's 429s, the slower climb back sooner: none is left far behind."""
    goodput, spread = await started_apart([0.0] * 4, 100)
    assert goodput >= 0.90
    assert spread <= 0.25


# Measured (as above, 2 processes at 200/s each, the second 0.3 s late), mean of seeds 1-8,
# together and slowest / fastest - 1 by each one's own time: with the climb growing with the
# rate to the power 2/3, 94.9% and 0.12; with CUBIC's cube root, 89.7% and 0.33 (seeds 3 and 4
# 0.65 and 0.66).
@virtual_time
async def test_two_processes_started_apart_converge_to_fair_shares() -> None:
    """The first takes the quota while the second starts; cut at the second's arrival, the
    first must give way fast enough that both finish about together."""
    goodput, spread = await started_apart([0.0, 0.3], 200)
    assert goodput >= 0.93
    assert spread <= 0.20


# Measured (as above, 4 processes at 100/s each, two of them 0.6 s late), mean of seeds 1-8:
# 92.8% and 0.14 with a quarter of ``recovery`` counted when nothing is in flight; 86.0% and
# 0.34 with the whole of it (seed 8: 62.9%, 1.03, one process cut to 12/s climbing for 4 s).
@virtual_time
async def test_four_processes_started_in_two_pairs_converge_to_fair_shares() -> None:
    """Cut deep by the 429s of those started first, a late process climbs back in seconds."""
    goodput, spread = await started_apart([0.0, 0.6, 0.0, 0.6], 100)
    assert goodput >= 0.90
    assert spread <= 0.25
