"""Re-triggered runs' lives: in progress, then a success or a failure by fate, on the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from bulkretry._simulator import (
    DEFAULT_RUN_DURATION,
    Fate,
    ManualClock,
    Simulator,
    SimulatorConfig,
    TokenBucketQuota,
)

pytestmark = pytest.mark.e2e

NOT_ALLOWED = "https://ns.adobe.com/aep/errors/FLOW-1409-400"
START = 1_750_000_000.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


def life_sim(clock: ManualClock, **more: Any) -> Simulator:
    """A simulator whose runs start and end on `clock`, which is its wall clock too."""
    values: dict[str, Any] = {"flows": 2, "runs_per_flow": 3, "other_runs_per_flow": 3}
    values.update(more)
    return Simulator(SimulatorConfig(clock=clock, wall_clock=clock, **values))


async def retrigger(
    session: aiohttp.ClientSession, sim: Simulator, run_id: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        f"{sim.base_url}/runs/{run_id}/action?op=re-trigger", headers=sim.headers()
    ) as resp:
        return resp.status, await resp.json()


async def look_up(session: aiohttp.ClientSession, sim: Simulator, run_id: str) -> dict[str, Any]:
    async with session.get(f"{sim.base_url}/runs/{run_id}", headers=sim.headers()) as resp:
        assert resp.status == 200
        [run] = (await resp.json())["items"]
        return dict(run)


async def listing(
    session: aiohttp.ClientSession, sim: Simulator, params: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Follow _links.next to the end; return every run listed."""
    async with session.get(f"{sim.base_url}/runs", params=params, headers=sim.headers()) as resp:
        body = await resp.json()
    runs = list(body["items"])
    while "next" in body["_links"]:
        async with session.get(
            sim.base_url + body["_links"]["next"]["href"], headers=sim.headers()
        ) as resp:
            body = await resp.json()
        runs += body["items"]
    return runs


def status_of(run: dict[str, Any]) -> str:
    return str(run["metrics"]["statusSummary"]["status"])


def flow_of(sim: Simulator, run_id: str) -> object:
    run = sim.run(run_id)
    assert run is not None
    return run["flowId"]


async def test_new_run_is_in_progress_until_the_clock_ends_it(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Created now and in progress; ended exactly run_duration later, its times filled in."""
    async with life_sim(clock) as sim:
        status, body = await retrigger(session, sim, sim.failed_run_ids()[0])
        new_id = body["id"]
        born = await look_up(session, sim, new_id)
        clock.advance(DEFAULT_RUN_DURATION - 0.001)
        running = await look_up(session, sim, new_id)
        clock.advance(0.001)
        ended = await look_up(session, sim, new_id)
    assert status == 200
    assert born["createdAt"] == int(START * 1000)
    assert status_of(born) == status_of(running) == "inProgress"
    assert "completedAtUTC" not in running["metrics"]["durationSummary"]
    assert status_of(ended) == "success"
    completed = born["createdAt"] + int(DEFAULT_RUN_DURATION * 1000)
    assert ended["metrics"]["durationSummary"]["completedAtUTC"] == completed
    assert ended["updatedAt"] == completed
    assert ended["metrics"]["recordSummary"]["outputRecordCount"] > 0
    assert "errors" not in ended["metrics"]["statusSummary"]


@pytest.mark.parametrize("duration", [0.0, 30.0])
async def test_run_duration_is_configurable(
    session: aiohttp.ClientSession, clock: ManualClock, duration: float
) -> None:
    """run_duration sets how long runs last; 0 ends them by the next look-up."""
    async with life_sim(clock, run_duration=duration) as sim:
        _, body = await retrigger(session, sim, sim.failed_run_ids()[0])
        clock.advance(max(0.0, duration - 1))
        before = status_of(await look_up(session, sim, body["id"]))
        clock.advance(1)
        after = status_of(await look_up(session, sim, body["id"]))
    assert (before, after) == ("success" if duration == 0 else "inProgress", "success")


async def test_jitter_spreads_endings_within_its_bounds(session: aiohttp.ClientSession) -> None:
    """Each run lasts run_duration plus up to run_duration_jitter, drawn from the seed."""
    ends = []
    for _ in range(2):
        clock = ManualClock(start=START)
        config: dict[str, Any] = {"runs_per_flow": 10, "run_duration": 4, "run_duration_jitter": 2}
        async with life_sim(clock, **config) as sim:
            ids = [(await retrigger(session, sim, r))[1]["id"] for r in sim.failed_run_ids()]
            clock.advance(10)
            runs = [await look_up(session, sim, i) for i in ids]
        ends.append([r["metrics"]["durationSummary"]["completedAtUTC"] for r in runs])
    lasted = [(end - START * 1000) / 1000 for end in ends[0]]
    assert ends[0] == ends[1]
    assert all(4 <= d <= 6 for d in lasted)
    assert len(set(lasted)) > 1


async def test_fates_over_three_rounds_give_each_run_its_final_status(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """succeeds: one round; fails-once: fails, then succeeds; always-fails: fails every round."""
    failed = life_sim(clock).failed_run_ids()
    fates: dict[str, Fate] = {
        failed[0]: "succeeds",
        failed[1]: "fails-once",
        failed[2]: "fails-once",
        failed[3]: "always-fails",
    }
    async with life_sim(clock, fates=fates) as sim:
        history: dict[str, list[str]] = {root: [] for root in failed}
        latest = {root: root for root in failed}
        for _ in range(3):
            started = {}
            for root, run_id in latest.items():
                status, body = await retrigger(session, sim, run_id)
                assert status == 200, body
                started[root] = body["id"]
            clock.advance(DEFAULT_RUN_DURATION)
            for root, new_id in started.items():
                outcome = status_of(await look_up(session, sim, new_id))
                history[root].append(outcome)
                if outcome == "failed":
                    latest[root] = new_id
                else:
                    del latest[root]
    assert history == {
        failed[0]: ["success"],
        failed[1]: ["failed", "success"],
        failed[2]: ["failed", "success"],
        failed[3]: ["failed", "failed", "failed"],
        failed[4]: ["success"],
        failed[5]: ["success"],
    }
    assert [sim.fate(root) for root in failed] == [*fates.values(), "succeeds", "succeeds"]


async def test_failed_run_carries_an_error_in_its_status(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A run that fails shows errors [{code, message}] under statusSummary, as seeded ones do."""
    async with life_sim(clock, fate_shares={"always-fails": 1.0}) as sim:
        _, body = await retrigger(session, sim, sim.failed_run_ids()[0])
        clock.advance(DEFAULT_RUN_DURATION)
        run = await look_up(session, sim, body["id"])
    summary = run["metrics"]["statusSummary"]
    assert summary["status"] == "failed"
    [error] = summary["errors"]
    assert set(error) == {"code", "message"}
    assert error["code"].endswith("-500")
    assert error["message"]
    assert run["metrics"]["recordSummary"]["failedRecordCount"] > 0


async def test_fate_shares_are_drawn_per_run_whatever_the_order(clock: ManualClock) -> None:
    """Shares are drawn from the seed and the run ID: the same fates in any order, per seed."""
    config: dict[str, Any] = {"runs_per_flow": 50, "fate_shares": {"fails-once": 0.2}}
    one, two = life_sim(clock, **config), life_sim(clock, **config)
    failed = one.failed_run_ids()
    other = life_sim(clock, seed=1, run_ids=tuple(failed), **config)
    fates = [one.fate(r) for r in failed]
    assert [two.fate(r) for r in reversed(failed)] == fates[::-1]
    assert 10 <= fates.count("fails-once") <= 30
    assert set(fates) == {"succeeds", "fails-once"}
    assert [other.fate(r) for r in failed] != fates


async def test_run_in_progress_cannot_be_retriggered(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """In progress or succeeded: FLOW-1409-400; once it has failed it can be re-triggered."""
    async with life_sim(clock, fate_shares={"fails-once": 1.0}) as sim:
        _, first = await retrigger(session, sim, sim.failed_run_ids()[0])
        running = await retrigger(session, sim, first["id"])
        clock.advance(DEFAULT_RUN_DURATION)
        status, second = await retrigger(session, sim, first["id"])
        clock.advance(DEFAULT_RUN_DURATION)
        succeeded = await retrigger(session, sim, second["id"])
    assert running[0] == 400
    assert running[1]["type"] == NOT_ALLOWED
    assert "inProgress" in running[1]["report"]["detailed-message"]
    assert status == 200
    assert (succeeded[0], succeeded[1]["type"]) == (400, NOT_ALLOWED)
    assert sim.retrigger_counts() == {sim.failed_run_ids()[0]: 1, first["id"]: 1}


async def test_repeat_retrigger_still_lets_the_original_run_go_again(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """allow_repeat_retrigger: the original failed run can be re-triggered while its child runs."""
    async with life_sim(clock, allow_repeat_retrigger=True) as sim:
        original = sim.failed_run_ids()[0]
        answers = [await retrigger(session, sim, original) for _ in range(2)]
        child = await retrigger(session, sim, answers[0][1]["id"])
    assert [a[0] for a in answers] == [200, 200]
    assert child[0] == 400
    assert sim.retrigger_counts() == {original: 2}


async def test_listing_sees_new_runs_by_created_at_flow_and_status(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """createdAt>T lists the new runs; flowId and status narrow them, page after page."""
    config: dict[str, Any] = {"flows": 3, "runs_per_flow": 4}
    failed = life_sim(clock, **config).failed_run_ids()
    fates: dict[str, Fate] = dict.fromkeys(failed[::2], "always-fails")
    async with life_sim(clock, fates=fates, **config) as sim:
        before = int(clock() * 1000) - 1
        new = {r: (await retrigger(session, sim, r))[1]["id"] for r in failed}
        since = ("property", f"createdAt>{before}")
        running = await listing(session, sim, [since, ("limit", "5")])
        flow = sim.flow_ids()[1]
        of_flow = await listing(session, sim, [since, ("property", f"flowId=={flow}")])
        clock.advance(DEFAULT_RUN_DURATION)
        now_failed = await listing(
            session,
            sim,
            [since, ("property", "metrics.statusSummary.status==FAILED"), ("limit", "2")],
        )
        still_running = await listing(
            session, sim, [since, ("property", "metrics.statusSummary.status==inProgress")]
        )
        expected_flow = {new[r] for r in failed if flow_of(sim, r) == flow}
    assert {r["id"] for r in running} == set(new.values())
    assert {status_of(r) for r in running} == {"inProgress"}
    assert {r["id"] for r in of_flow} == expected_flow
    assert len(expected_flow) == 4
    assert {r["id"] for r in now_failed} == {new[r] for r in fates}
    assert still_running == []


async def test_in_progress_status_word_is_configurable(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """in_progress_status="IN_PROGRESS" is shown and filtered on; the filter ignores case."""
    async with life_sim(clock, in_progress_status="IN_PROGRESS") as sim:
        _, body = await retrigger(session, sim, sim.failed_run_ids()[0])
        shown = status_of(await look_up(session, sim, body["id"]))
        listed = await listing(
            session, sim, [("property", "metrics.statusSummary.status==in_progress")]
        )
    assert shown == "IN_PROGRESS"
    # Runs seeded in progress take the same word.
    assert {r["id"] for r in listed} == set(sim.run_ids("IN_PROGRESS"))
    assert body["id"] in {r["id"] for r in listed}
    assert len(listed) > 1


async def test_lookups_take_quota_suffer_faults_and_are_counted(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """GETs use the same quota, get faults with trouble_on_listing, and are counted."""
    quota = TokenBucketQuota(rate=1, burst=2)
    async with life_sim(clock, quota=quota) as sim:
        run_id = sim.failed_run_ids()[0]
        answers = []
        for path in (f"/runs/{run_id}", "/runs", f"/runs/{run_id}"):
            async with session.get(sim.base_url + path, headers=sim.headers()) as resp:
                answers.append(resp.status)
        counted = (sim.lookup_count, sim.endpoint_counts())
        recorded = [(r.method, r.status) for r in sim.requests]
    assert answers == [200, 200, 429]
    assert counted == (3, {"get-run": 2, "list-runs": 1})
    assert recorded == [("GET", 200), ("GET", 200), ("GET", 429)]
    config = {"error_rate": 1.0, "error_statuses": (503,), "trouble_on_listing": True}
    async with life_sim(clock, **config) as sim:
        url = f"{sim.base_url}/runs/{sim.failed_run_ids()[0]}"
        async with session.get(url, headers=sim.headers()) as resp:
            assert resp.status == 503


async def test_stats_count_new_runs_by_status_and_requests_by_endpoint(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """/_sim/stats tells how many new runs are in progress, succeeded and failed."""
    fates: dict[str, Fate] = {life_sim(clock).failed_run_ids()[0]: "always-fails"}
    async with life_sim(clock, fates=fates) as sim:
        for run_id in sim.failed_run_ids()[:3]:
            await retrigger(session, sim, run_id)
        running = sim.snapshot()["new_runs"]
        clock.advance(DEFAULT_RUN_DURATION)
        async with session.get(f"{sim.origin}/_sim/stats") as resp:
            stats = await resp.json()
    assert running == {"inProgress": 3}
    assert stats["new_runs"] == {"failed": 1, "success": 2}
    assert stats["endpoints"] == {"re-trigger": 3}


@pytest.mark.parametrize(
    "bad",
    [
        {"fates": {"x": "sometimes"}},
        {"fate_shares": {"fails-once": 0.7, "always-fails": 0.7}},
        {"fate_shares": {"fails-once": -0.1}},
        {"run_duration": -1.0},
        {"run_duration_jitter": -1.0},
        {"in_progress_status": "Failed"},
        {"throttle_rate": 1.5},
        {"rate_limit_headers": "all"},
    ],
)
def test_config_refuses_nonsense_lives_and_throttles(bad: dict[str, object]) -> None:
    """Unknown fates, shares beyond 1, negative durations and the like are refused at once."""
    with pytest.raises(ValueError):
        SimulatorConfig(**bad)  # type: ignore[arg-type]


def test_config_keeps_its_own_copy_of_the_fates() -> None:
    """Changing the dict given as fates later does not change the configuration."""
    fates: dict[str, Fate] = {"a": "always-fails"}
    config = SimulatorConfig(fates=fates)
    fates["b"] = "fails-once"
    assert dict(config.fates) == {"a": "always-fails"}
    assert SimulatorConfig() == SimulatorConfig(fates={}, fate_shares={})
    assert hash(config) == hash(SimulatorConfig(fates={"a": "succeeds"}))
