"""The Follower: new runs followed to their end in few look-ups, on the loop's virtual clock."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from conftest import virtual_time

from bulkretry._config import Credentials, Settings
from bulkretry._engine.follow import Ended, Follower
from bulkretry._engine.follow_plan import Listing, Sizes, Watch, plan
from bulkretry._engine.governor import Governor
from bulkretry._http.auth import StaticToken
from bulkretry._http.client import FlowServiceClient
from bulkretry._http.lookups import RunView, run_url
from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

START = 1_750_000_000.0
TOKEN = "sim-access-token"


def settings_for(base_url: str, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "credentials": Credentials(
            access_token=TOKEN, api_key="sim-api-key", org_id="SIMORG0000000000000000@AdobeOrg"
        ),
        "rate": 1000.0,
        "burst": 50,
        "backoff_base": 0.5,
        "backoff_cap": 2.0,
    }
    values.update(more)
    return Settings(**values)


def follower_on(
    session: aiohttp.ClientSession, base_url: str, *, page_size: int = 100, **more: Any
) -> Follower:
    settings = settings_for(base_url, **more)
    assert settings.credentials is not None
    client = FlowServiceClient(
        session,
        base_url=base_url,
        op="re-trigger",
        api_key=settings.credentials.api_key,
        org_id=settings.credentials.org_id,
        sandbox=settings.credentials.sandbox,
        timeout=30.0,
    )
    return Follower(
        client=client,
        tokens=StaticToken(TOKEN),
        governor=Governor(settings),
        settings=settings,
        rng=random.Random(3),
        page_size=page_size,
    )


@asynccontextmanager
async def simulator(**more: Any) -> AsyncIterator[tuple[Simulator, aiohttp.ClientSession]]:
    """A simulator in this loop whose clocks are the loop's: run durations pass virtually."""
    loop = asyncio.get_running_loop()
    values: dict[str, Any] = {"flows": 4, "runs_per_flow": 5, "run_duration": 60.0}
    values.update(more)
    config = SimulatorConfig(clock=loop.time, wall_clock=lambda: START + loop.time(), **values)
    async with Simulator(config) as sim, aiohttp.ClientSession() as session:
        yield sim, session


async def retrigger(
    sim: Simulator, session: aiohttp.ClientSession, ids: Sequence[str]
) -> dict[str, str]:
    """Re-trigger ``ids``; return each one's new run ID."""
    new: dict[str, str] = {}
    for run_id in ids:
        url = f"{sim.base_url}/runs/{run_id}/action?op=re-trigger"
        async with session.post(url, headers=sim.headers()) as resp:
            assert resp.status == 200
            new[run_id] = (await resp.json())["id"]
    return new


def now_ms() -> int:
    return int((START + asyncio.get_running_loop().time()) * 1000)


async def follow_all(follower: Follower, futures: list[asyncio.Future[Ended]]) -> list[Ended]:
    follower.close()
    await follower.run()
    return list(await asyncio.gather(*futures))


@virtual_time
async def test_runs_end_as_their_fates_say_in_fewer_lookups_than_runs() -> None:
    """20 runs over 4 flows: one listing per look, far fewer requests than runs."""
    async with simulator(fate_shares={"fails-once": 0.4}) as (sim, session):
        ids = sim.failed_run_ids()
        since = now_ms() - 1
        new = await retrigger(sim, session, ids)
        follower = follower_on(session, sim.base_url)
        futures = [follower.add(new[run_id], since_ms=since) for run_id in ids]
        ended = await follow_all(follower, futures)
        lookups = sim.lookup_count
    expected = ["failed" if sim.fate(run_id) == "fails-once" else "success" for run_id in ids]
    assert [e.final_status for e in ended] == expected
    assert "failed" in expected
    assert "success" in expected
    failed = next(e for e in ended if e.final_status == "failed")
    assert failed.view is not None
    assert failed.view.errors
    # First look at 30 s (still running), the next at 60 s, when they have all ended.
    assert lookups == follower.stats.requests == 2
    assert (follower.stats.listings, follower.stats.gets) == (2, 0)
    assert 60 <= asyncio.get_running_loop().time() < 61


@virtual_time
async def test_a_single_run_is_looked_up_by_its_id() -> None:
    """One run is one GET /runs/{id} per look, no listing."""
    async with simulator() as (sim, session):
        [old] = sim.failed_run_ids()[:1]
        new = await retrigger(sim, session, [old])
        follower = follower_on(session, sim.base_url)
        [ended] = await follow_all(follower, [follower.add(new[old], since_ms=now_ms() - 1000)])
        counts = sim.endpoint_counts()
    assert ended.final_status == "success"
    assert (counts["get-run"], counts.get("list-runs", 0)) == (2, 0)


@virtual_time
async def test_a_listing_is_read_to_its_last_page() -> None:
    """With 5 runs a page, 20 runs take 4 pages a look, and every run is seen."""
    async with simulator(run_duration=0.0) as (sim, session):
        ids = sim.failed_run_ids()
        since = now_ms() - 1
        new = await retrigger(sim, session, ids)
        follower = follower_on(session, sim.base_url, page_size=5)
        futures = [follower.add(new[r], since_ms=since, first_look=0) for r in ids]
        ended = await follow_all(follower, futures)
    assert {e.final_status for e in ended} == {"success"}
    assert (follower.stats.listings, follower.stats.pages) == (1, 4)
    assert follower.stats.requests == 4


@virtual_time
async def test_a_run_still_going_at_the_follow_timeout_is_unknown() -> None:
    """Past --follow-timeout the run is unknown, its last status kept in the view."""
    async with simulator(run_duration=10_000.0) as (sim, session):
        [old] = sim.failed_run_ids()[:1]
        new = await retrigger(sim, session, [old])
        follower = follower_on(session, sim.base_url, follow_timeout=300.0, poll=30.0)
        [ended] = await follow_all(follower, [follower.add(new[old], since_ms=now_ms() - 1)])
    assert ended.final_status == "unknown"
    assert ended.why is not None
    assert "--follow-timeout 300" in ended.why
    assert ended.view is not None
    assert ended.view.status_raw == "inProgress"
    followed = ended.followed([new[old]])
    assert (followed.final_status, followed.final_status_raw) == ("unknown", "inProgress")
    assert follower.stats.timed_out == 1
    assert 300 <= asyncio.get_running_loop().time() < 301


@virtual_time
async def test_a_run_that_vanished_is_unknown() -> None:
    """A run the listing does not show is got alone; a 404 then says it is gone."""
    async with simulator() as (sim, session):
        ghost = str(uuid.UUID(int=random.Random(1).getrandbits(128)))
        follower = follower_on(session, sim.base_url)
        [ended] = await follow_all(
            follower, [follower.add(ghost, since_ms=now_ms() - 1, first_look=0)]
        )
        counts = sim.endpoint_counts()
    assert ended.final_status == "unknown"
    assert ended.why is not None
    assert "vanished" in ended.why
    assert (counts["get-run"], follower.stats.vanished) == (1, 1)


@virtual_time
async def test_a_wrong_flow_hint_costs_one_get_and_is_then_exact() -> None:
    """A run missing from its hinted flow's listing is got alone; its real flow is learnt."""
    async with simulator(run_duration=0.0) as (sim, session):
        ids = sim.failed_run_ids()
        since = now_ms() - 1
        new = await retrigger(sim, session, ids)
        wrong = str(uuid.UUID(int=7))
        follower = follower_on(session, sim.base_url)
        # Most runs are listed with the sandbox; one is hinted to a flow it is not in.
        futures = [follower.add(new[r], since_ms=since, first_look=0) for r in ids[1:]]
        futures.append(follower.add(new[ids[0]], flow_id=wrong, since_ms=since, first_look=0))
        ended = await follow_all(follower, futures)
    assert {e.final_status for e in ended} == {"success"}
    assert ended[-1].view is not None
    assert ended[-1].view.flow_id != wrong


@virtual_time
async def test_a_429_on_a_lookup_slows_the_throttle_shared_with_retriggers() -> None:
    """Look-ups take their answers to the batch's governor: a 429 counts there."""
    async with simulator(run_duration=0.0) as (sim, session):
        [old] = sim.failed_run_ids()[:1]
        new = await retrigger(sim, session, [old])
        follower = follower_on(session, sim.base_url)
        sim.script(None, [429])
        [ended] = await follow_all(
            follower, [follower.add(new[old], since_ms=now_ms() - 1, first_look=0)]
        )
    assert ended.final_status == "success"
    assert follower.stats.throttled == 1
    assert follower.stats.retries == 1
    assert follower._looker._gov.throttle.throttled_count == 1


@virtual_time
async def test_refused_credentials_stop_following_and_every_run_is_unknown() -> None:
    """A 403 on a look-up stops following: halt_reason says so, every run ends unknown."""
    async with simulator() as (sim, session):
        ids = sim.failed_run_ids()[:3]
        new = await retrigger(sim, session, ids)
        follower = follower_on(session, sim.base_url)
        sim.script(None, [403])
        futures = [follower.add(new[r], since_ms=now_ms() - 1, first_look=0) for r in ids]
        ended = await follow_all(follower, futures)
    assert {e.final_status for e in ended} == {"unknown"}
    assert follower.halt_reason is not None
    assert "403" in follower.halt_reason


@virtual_time
async def test_runs_added_while_following_wait_a_poll_and_share_listings() -> None:
    """As run --follow adds them: first look a poll after each, one listing serves many."""
    async with simulator(flows=2, runs_per_flow=20, run_duration=5.0) as (sim, session):
        ids = sim.failed_run_ids()
        follower = follower_on(session, sim.base_url, poll=30.0)
        task = asyncio.create_task(follower.run())
        futures = []
        for run_id in ids:  # one re-trigger a second
            since = now_ms() - 1
            new = await retrigger(sim, session, [run_id])
            futures.append(follower.add(new[run_id], since_ms=since))
            await asyncio.sleep(1.0)
        follower.close()
        await task
        ended = await asyncio.gather(*futures)
        lookups = sim.lookup_count
    assert {e.final_status for e in ended} == {"success"}
    assert lookups <= len(ids) // 4


@pytest.mark.parametrize(
    ("status", "final"),
    [
        ("success", "success"),
        ("SUCCESS", "success"),
        ("completed", "success"),
        ("COMPLETED", "success"),
        ("failed", "failed"),
        ("Failed", "failed"),
        ("PARTIAL_SUCCESS", "partial"),
        ("partial_failure", "partial"),
        ("inProgress", "unknown"),
        ("IN_PROGRESS", "unknown"),
        ("QUEUED", "unknown"),
        ("SCHEDULED", "unknown"),
        ("something-new", "unknown"),
        (None, "unknown"),
    ],
)
@virtual_time
async def test_every_status_value_ends_as_the_parser_says(status: str | None, final: str) -> None:
    """Done values end the run (any case); others are not done, and time out unknown."""
    base = "https://flow.example.test/data/foundation/flowservice"
    run_id = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
    summary: dict[str, Any] = {} if status is None else {"status": status}
    if final in ("failed", "partial"):
        summary["errors"] = [{"code": "CONNECTOR-2001", "message": "source is down"}]
    item = {"id": run_id, "flowId": "f1", "createdAt": 1, "metrics": {"statusSummary": summary}}
    with aioresponses() as http:
        http.get(str(run_url(base, run_id)), payload={"items": [item]}, repeat=True)
        async with aiohttp.ClientSession() as session:
            follower = follower_on(session, base, follow_timeout=100.0)
            [ended] = await follow_all(follower, [follower.add(run_id, first_look=0)])
    assert ended.final_status == final
    assert ended.view is not None
    assert ended.view.status_raw == status
    if final in ("failed", "partial"):
        assert ended.followed([run_id]).final_error == (("CONNECTOR-2001", "source is down"),)


def watch(run_id: str, flow: str | None, since: int | None) -> Watch:
    # Called from async tests only: a future needs the running loop.
    return Watch(run_id, flow, since, 0.0, 0.0, asyncio.get_running_loop().create_future())


async def test_plan_lists_the_sandbox_when_one_page_covers_every_flow() -> None:
    """Ten runs over five flows: one sandbox page, not five flow listings."""
    due = [watch(f"r{n}", f"f{n % 5}", 1000 + n) for n in range(10)]
    chosen = plan(due, due, Sizes(), page_size=100)
    assert (chosen.listings, chosen.gets, chosen.cost) == ((Listing(None, 1000),), (), 1)


async def test_plan_gets_a_lone_run_and_runs_without_a_creation_time() -> None:
    """One run, or runs with no lower bound of their creation: GET each."""
    lone = [watch("r1", "f1", 1000)]
    assert plan(lone, lone, Sizes(), page_size=100).gets == tuple(lone)
    blind = [watch(f"r{n}", None, None) for n in range(3)]
    assert plan(blind, blind, Sizes(), page_size=100).cost == 3


async def test_plan_lists_per_flow_once_the_sandbox_is_known_to_be_busy() -> None:
    """A sandbox listing that held 5000 runs is dearer than two flows' listings."""
    sizes = Sizes()
    busy = [RunView(id=f"x{n}", flow_id=f"other{n % 50}", created_at=2000 + n) for n in range(5000)]
    sizes.saw(Listing(None, 999), busy)
    due = [watch(f"r{n}", f"f{n % 2}", 1000 + n) for n in range(10)]
    chosen = plan(due, due, sizes, page_size=100)
    assert {listing.flow_id for listing in chosen.listings} == {"f0", "f1"}
    assert chosen.cost == 2


@virtual_time
async def test_a_thousand_runs_over_fifty_flows_cost_under_half_a_lookup_each() -> None:
    """Re-triggered at 20/s and followed as they come: far under 0.5 requests per run."""
    config = {"flows": 50, "runs_per_flow": 20, "run_duration": 5.0, "record_requests": False}
    async with simulator(run_duration_jitter=10.0, **config) as (sim, session):
        ids = sim.failed_run_ids()
        follower = follower_on(session, sim.base_url)
        task = asyncio.create_task(follower.run())
        futures = []
        for run_id in ids:
            since = now_ms() - 2000
            new = await retrigger(sim, session, [run_id])
            futures.append(follower.add(new[run_id], since_ms=since))
            await asyncio.sleep(0.05)
        follower.close()
        await task
        ended = await asyncio.gather(*futures)
        lookups = sim.lookup_count
    assert {e.final_status for e in ended} == {"success"}
    assert lookups == follower.stats.requests
    assert lookups / len(ids) <= 0.05


async def test_a_stop_after_max_retriggers_ends_following_too() -> None:
    """At --max-retriggers the batch stops sending and goes on following; a signal then (a
    second stop) ends following: every line written, runs still going unknown."""
    from bulkretry._engine.engine import Engine
    from bulkretry._io.source import InputRecord
    from bulkretry._model import RunResult
    from bulkretry._simulator import Simulator, SimulatorConfig

    config = SimulatorConfig(seed=3, flows=1, runs_per_flow=3, run_duration=3600.0)
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        engine = Engine(settings_for(sim.base_url, follow=True, max_retriggers=1, poll=0.05))
        lines: list[RunResult] = []
        two_written = asyncio.Event()

        async def emit(result: RunResult) -> None:
            lines.append(result)
            if len(lines) == 2:
                two_written.set()

        async def batches() -> AsyncIterator[list[InputRecord]]:
            yield [InputRecord("in", n, run_id, run_id) for n, run_id in enumerate(ids, 1)]

        task = asyncio.ensure_future(engine.run(batches(), emit))
        await asyncio.wait_for(two_written.wait(), 10)  # the two never sent: not_attempted
        assert engine.halt_reason is not None
        await asyncio.sleep(0.2)
        assert not task.done()  # the re-triggered run is still followed
        engine.stop()  # a signal
        async with asyncio.timeout(10):
            await task
    assert len(lines) == 3
    finals = sorted(str(line.followed.final_status) for line in lines if line.followed)
    assert finals == ["None", "None", "unknown"]


@pytest.mark.parametrize("follow", [False, True])
async def test_the_last_second_is_eased_only_when_nothing_is_followed_after_it(
    follow: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The throttle hears of the input's end (Throttle.ending) so that a batch's last second
    may go a little slower; with --follow rounds and look-ups go on long after it, and an ease
    would slow them all: it does not hear of it."""
    from bulkretry._engine.engine import Engine
    from bulkretry._io.source import InputRecord
    from bulkretry._model import RunResult
    from bulkretry._pace.throttle import Throttle
    from bulkretry._simulator import Simulator, SimulatorConfig

    told: list[int] = []
    monkeypatch.setattr(Throttle, "ending", lambda self, left: told.append(left))
    config = SimulatorConfig(seed=3, flows=1, runs_per_flow=3, run_duration=0.05)
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        engine = Engine(settings_for(sim.base_url, follow=follow, poll=0.05))
        lines: list[RunResult] = []

        async def emit(result: RunResult) -> None:
            lines.append(result)

        async def batches() -> AsyncIterator[list[InputRecord]]:
            yield [InputRecord("in", n, run_id, run_id) for n, run_id in enumerate(ids, 1)]

        async with asyncio.timeout(10):
            await engine.run(batches(), emit)
    assert len(lines) == 3
    assert len(told) == (0 if follow else 1)
