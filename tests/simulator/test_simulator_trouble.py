"""Trouble on demand: IMS tokens that expire, quotas, scripted answers, faults, and hooks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sim_helpers import retrigger

from bulkretry._simulator import (
    Fault,
    ManualClock,
    RecordedRequest,
    Simulator,
    SimulatorConfig,
    TokenBucketQuota,
)

pytestmark = pytest.mark.e2e

FORM = {
    "grant_type": "client_credentials",
    "client_id": "sim-client-id",
    "client_secret": "sim-client-secret",
    "scope": "openid,AdobeID,read_organizations,additional_info.projectedProductContext",
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_000.0)


async def token(session: aiohttp.ClientSession, sim: Simulator, **changes: str) -> tuple[int, Any]:
    async with session.post(sim.ims_url, data={**FORM, **changes}) as resp:
        return resp.status, await resp.json()


async def test_issued_token_works_until_it_expires(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A token from the IMS endpoint is good on the API until its lifetime has passed."""
    config = SimulatorConfig(clock=clock, token_lifetime=60, allow_repeat_retrigger=True)
    async with Simulator(config) as sim:
        status, body = await token(session, sim)
        assert status == 200
        assert (body["token_type"], body["expires_in"]) == ("bearer", 60)
        headers = sim.headers(body["access_token"])
        assert (await retrigger(session, sim, headers=headers))[0] == 200
        clock.advance(59.9)
        assert (await retrigger(session, sim, headers=headers))[0] == 200
        clock.advance(0.1)
        status, text, _ = await retrigger(session, sim, headers=headers)
        assert (status, '"401013"' in text) == (401, True)
        assert (await retrigger(session, sim))[0] == 200
    assert sim.token_requests == 1


async def test_each_token_request_gets_a_new_token(session: aiohttp.ClientSession) -> None:
    """Token requests are counted and each answers a different token."""
    async with Simulator() as sim:
        tokens = {(await token(session, sim))[1]["access_token"] for _ in range(3)}
    assert len(tokens) == 3
    assert sim.token_requests == 3


@pytest.mark.parametrize(
    ("changes", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_id": "someone"}, 400, "invalid_client"),
        ({"client_secret": "guess"}, 401, "invalid_client"),
        ({"scope": "openid,admin_everything"}, 400, "invalid_scope"),
        ({"scope": ""}, 400, "invalid_scope"),
    ],
)
async def test_token_endpoint_refuses_like_ims(
    session: aiohttp.ClientSession, changes: dict[str, str], status: int, error: str
) -> None:
    """Bad grants, clients, secrets and scopes get IMS's error bodies."""
    async with Simulator() as sim:
        got, body = await token(session, sim, **changes)
    assert (got, body["error"]) == (status, error)
    assert body["error_description"]


async def test_script_forces_answers_in_order_then_serves_normally(
    session: aiohttp.ClientSession,
) -> None:
    """A script's statuses come out in order with Adobe's bodies; then the run is served."""
    async with Simulator(SimulatorConfig(scripted_retry_after=7)) as sim:
        run_id = sim.failed_run_ids()[0]
        sim.script(run_id, [503, 429, 504])
        answers = [await retrigger(session, sim, run_id) for _ in range(4)]
    assert [a[0] for a in answers] == [503, 429, 504, 200]
    assert "FLOW-1103-503" in answers[0][1]
    assert ('"429050"' in answers[1][1], answers[1][2]["Retry-After"]) == (True, "7")
    assert "FLOW-1104-504" in answers[2][1]
    assert sim.retrigger_counts() == {run_id: 1}


async def test_script_for_one_run_leaves_others_alone(session: aiohttp.ClientSession) -> None:
    """A run's script applies to that run only; a script for None applies to any request."""
    async with Simulator() as sim:
        one, two = sim.failed_run_ids()[:2]
        sim.script(one, [500])
        sim.script(None, [502])
        assert (await retrigger(session, sim, two))[0] == 502
        assert (await retrigger(session, sim, two))[0] == 200
        assert (await retrigger(session, sim, one))[0] == 500


def test_script_refuses_unknown_words() -> None:
    """A misspelt fault in a script is refused at once."""
    with pytest.raises(ValueError):
        Simulator().script(None, ["resett"])  # type: ignore[list-item]


@pytest.mark.parametrize("fault", ["in-doubt-500", "in-doubt-502", "in-doubt-504"])
async def test_in_doubt_error_still_retriggers(session: aiohttp.ClientSession, fault: Any) -> None:
    """An in-doubt answer is an error, yet the run was re-triggered: a retry is refused."""
    async with Simulator() as sim:
        run_id = sim.failed_run_ids()[0]
        sim.script(run_id, [fault])
        status, text, _ = await retrigger(session, sim, run_id)
        retry, retry_text, _ = await retrigger(session, sim, run_id)
    assert status == int(fault[-3:])
    assert "FLOW-110" in text
    assert (retry, "FLOW-1409-400" in retry_text) == (400, True)
    assert sim.retrigger_counts() == {run_id: 1}
    assert sim.retriggers[0].answer_lost
    assert sim.requests[0].performed


async def test_in_doubt_reset_loses_the_answer_of_a_performed_retrigger(
    session: aiohttp.ClientSession,
) -> None:
    """An in-doubt reset closes the connection unanswered after re-triggering the run."""
    async with Simulator() as sim:
        run_id = sim.failed_run_ids()[0]
        sim.script(run_id, ["in-doubt-reset"])
        with pytest.raises(aiohttp.ClientConnectionError):
            await retrigger(session, sim, run_id)
    assert sim.retrigger_counts() == {run_id: 1}
    assert (sim.requests[0].outcome, sim.stats["reset"]) == ("reset", 1)


async def test_in_doubt_rate_performs_every_retrigger_and_loses_every_answer(
    session: aiohttp.ClientSession,
) -> None:
    """With in_doubt_rate=1 no answer is a success, yet every run is re-triggered."""
    async with Simulator(SimulatorConfig(in_doubt_rate=1.0, seed=5)) as sim:
        runs = sim.failed_run_ids()[:8]
        for run_id in runs:
            try:
                status, _, _ = await retrigger(session, sim, run_id)
            except aiohttp.ClientConnectionError:
                continue
            assert status in (500, 502, 504)
    assert sim.retrigger_counts() == dict.fromkeys(runs, 1)


async def test_reset_closes_the_connection_without_doing_anything(
    session: aiohttp.ClientSession,
) -> None:
    """A reset answers nothing and re-triggers nothing."""
    async with Simulator() as sim:
        sim.script(None, ["reset"])
        with pytest.raises(aiohttp.ClientConnectionError):
            await retrigger(session, sim)
        assert (await retrigger(session, sim))[0] == 200
    assert sim.stats == {"reset": 1, 200: 1}


async def test_hang_never_answers_until_the_client_gives_up(
    session: aiohttp.ClientSession,
) -> None:
    """A hung request is never answered; the client's timeout ends it."""
    async with Simulator() as sim:
        sim.script(None, ["hang"])
        with pytest.raises(TimeoutError):
            async with session.post(
                f"{sim.base_url}/runs/{sim.failed_run_ids()[0]}/action?op=re-trigger",
                headers=sim.headers(),
                timeout=aiohttp.ClientTimeout(total=0.1),
            ):
                pass
    assert sim.stats["hang"] == 1
    assert sim.retrigger_counts() == {}


async def test_malformed_answers_are_200s_after_the_work_is_done(
    session: aiohttp.ClientSession,
) -> None:
    """HTML, truncated JSON and JSON without an ID all come with 200, the runs re-triggered."""
    async with Simulator() as sim:
        runs = sim.failed_run_ids()[:3]
        kinds: list[Fault] = ["html", "truncated", "no-id"]
        for run_id, kind in zip(runs, kinds, strict=True):
            sim.script(run_id, [kind])
        html, truncated, no_id = [await retrigger(session, sim, r) for r in runs]
    assert (html[0], html[2]["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert truncated[0] == 200
    assert not truncated[1].endswith("}")
    assert no_id[0] == 200
    assert '"etag"' in no_id[1]
    assert '"id"' not in no_id[1]
    assert sim.retrigger_counts() == dict.fromkeys(runs, 1)


async def test_error_rate_answers_server_errors_in_flow_service_format(
    session: aiohttp.ClientSession,
) -> None:
    """With error_rate=1 every answer is a 5xx whose body is a Flow Service error."""
    async with Simulator(SimulatorConfig(error_rate=1.0)) as sim:
        answers = [await retrigger(session, sim) for _ in range(12)]
    assert {a[0] for a in answers} <= {500, 502, 503, 504}
    assert all('"https://ns.adobe.com/aep/errors/FLOW-' in a[1] for a in answers)
    assert sim.retrigger_counts() == {}


async def test_faults_repeat_exactly_for_the_same_seed(session: aiohttp.ClientSession) -> None:
    """The same seed draws the same faults in the same order."""
    outcomes = []
    for _ in range(2):
        config = SimulatorConfig(
            seed=11,
            error_rate=0.4,
            malformed_rate=0.2,
            allow_repeat_retrigger=True,
            wall_clock=ManualClock(),
        )
        async with Simulator(config) as sim:
            outcomes.append([(await retrigger(session, sim))[0:2] for _ in range(15)])
    assert outcomes[0] == outcomes[1]
    statuses = [status for status, _ in outcomes[0]]
    assert len(set(statuses)) > 1


async def test_faults_spare_listing_unless_asked(session: aiohttp.ClientSession) -> None:
    """Random faults hit re-triggers only, unless trouble_on_listing is set."""
    for on_listing, expected in ((False, 200), (True, 503)):
        config = SimulatorConfig(
            error_rate=1.0, error_statuses=(503,), trouble_on_listing=on_listing
        )
        async with (
            Simulator(config) as sim,
            session.get(f"{sim.base_url}/runs", headers=sim.headers()) as resp,
        ):
            assert resp.status == expected


async def test_hook_sees_every_request_and_can_force_an_answer(
    session: aiohttp.ClientSession,
) -> None:
    """on_request is called with each request's index and may force its answer."""
    seen: list[int] = []

    def hook(request: RecordedRequest) -> Any:
        seen.append(request.index)
        return "reset" if request.index == 3 else None

    config = SimulatorConfig(on_request=hook, allow_repeat_retrigger=True)
    async with Simulator(config) as sim:
        await token(session, sim)
        assert (await retrigger(session, sim))[0] == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await retrigger(session, sim)
        assert (await retrigger(session, sim))[0] == 200
    assert seen == [1, 2, 3, 4]
    assert [r.outcome for r in sim.requests] == ["answered", "answered", "reset", "answered"]


async def test_latency_is_added_to_answers(session: aiohttp.ClientSession) -> None:
    """Configured latency delays the answer by at least that long."""
    async with Simulator(SimulatorConfig(latency=0.05)) as sim:
        started = time.perf_counter()
        await retrigger(session, sim)
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.05


async def test_control_endpoints_report_stats_and_change_the_quota(
    session: aiohttp.ClientSession,
) -> None:
    """/_sim/stats reports counts and duplicates; /_sim/quota changes the quota."""
    async with Simulator(SimulatorConfig(allow_repeat_retrigger=True)) as sim:
        await retrigger(session, sim)
        await retrigger(session, sim)
        async with session.post(f"{sim.origin}/_sim/quota", json={"rate": 5, "burst": 2}) as resp:
            assert (await resp.json()) == {"quota": {"rate": 5.0, "burst": 2}}
        async with session.get(f"{sim.origin}/_sim/stats") as resp:
            stats = await resp.json()
        async with session.post(f"{sim.origin}/_sim/quota", json={"rate": -1}) as resp:
            assert resp.status == 400
    assert sim.quota == TokenBucketQuota(rate=5, burst=2)
    assert stats["retriggers"] == 2
    assert stats["duplicate_retriggers"] == 1
    assert stats["answers"] == {"200": 2}


async def test_stats_say_when_the_first_and_the_latest_request_came() -> None:
    """/_sim/stats gives the wall-clock times of the first and the latest API request (none
    before any), from which a benchmark reads a client's start-up and its tail."""
    wall = [1_800_000_000.0]
    config = SimulatorConfig(allow_repeat_retrigger=True, wall_clock=lambda: wall[0])
    async with Simulator(config) as sim, aiohttp.ClientSession() as session:
        async with session.get(f"{sim.origin}/_sim/stats") as resp:
            before = await resp.json()
        for at in (1_800_000_100.0, 1_800_000_101.5, 1_800_000_103.25):
            wall[0] = at
            await retrigger(session, sim)
        wall[0] = 1_800_000_200.0  # (asking for the stats is no API request)
        async with session.get(f"{sim.origin}/_sim/stats") as resp:
            after = await resp.json()
    assert (before["first_request_at"], before["last_request_at"]) == (None, None)
    assert (after["first_request_at"], after["last_request_at"]) == (
        1_800_000_100.0,
        1_800_000_103.25,
    )
