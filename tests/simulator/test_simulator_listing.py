"""The simulator's run listing: property filters, ordering, counts and pages linked by tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

FAILED = "metrics.statusSummary.status==failed"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(seed=3, flows=3, runs_per_flow=7, other_runs_per_flow=4)
    async with Simulator(config) as s:
        yield s


async def get(
    session: aiohttp.ClientSession, sim: Simulator, params: Sequence[tuple[str, str]] = ()
) -> tuple[int, Any]:
    async with session.get(f"{sim.base_url}/runs", params=params, headers=sim.headers()) as resp:
        return resp.status, await resp.json()


async def walk(
    session: aiohttp.ClientSession, sim: Simulator, params: Sequence[tuple[str, str]]
) -> tuple[list[str], list[Any]]:
    """Follow _links.next from the first page to the last; return IDs and every page's body."""
    status, body = await get(session, sim, params)
    pages = [body]
    while "next" in body["_links"]:
        href = body["_links"]["next"]["href"]
        # The spec writes links relative to the service base: join by concatenation.
        async with session.get(sim.base_url + href, headers=sim.headers()) as resp:
            assert resp.status == 200
            body = await resp.json()
        pages.append(body)
    assert status == 200
    return [run["id"] for page in pages for run in page["items"]], pages


def field(sim: Simulator, run_id: str, *path: str) -> Any:
    value: Any = sim.run(run_id)
    for name in path:
        value = value[name]
    return value


async def test_pages_link_on_until_an_empty_links(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Pages of a filtered list link on via _links.next and end with an empty _links."""
    flow = sim.flow_ids()[1]
    params = [("property", f"flowId=={flow}"), ("property", FAILED), ("limit", "3")]
    ids, pages = await walk(session, sim, params)
    expected = {r for r in sim.failed_run_ids() if field(sim, r, "flowId") == flow}
    assert len(ids) == len(set(ids)) == 7
    assert set(ids) == expected
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert pages[-1]["_links"] == {}
    href = pages[0]["_links"]["next"]["href"]
    assert href.startswith("/runs?continuationToken=")
    assert f"property=flowId=={flow}" in href
    assert "limit=3" in href


async def test_links_stay_relative_to_a_service_base_with_a_path(
    session: aiohttp.ClientSession,
) -> None:
    """With a base path, links are still written relative to the service base, not the host."""
    config = SimulatorConfig(base_path="/data/foundation/flowservice", flows=1, runs_per_flow=5)
    async with Simulator(config) as sim:
        assert sim.base_url.endswith("/data/foundation/flowservice")
        ids, pages = await walk(session, sim, [("property", FAILED), ("limit", "2")])
    assert pages[0]["_links"]["next"]["href"].startswith("/runs?")
    assert sorted(ids) == sorted(sim.failed_run_ids())


@pytest.mark.parametrize("spelling", ["failed", "Failed", "FAILED"])
async def test_status_filter_ignores_letter_case(
    session: aiohttp.ClientSession, sim: Simulator, spelling: str
) -> None:
    """The status value matches whatever its letter case."""
    params = [("property", f"metrics.statusSummary.status=={spelling}"), ("limit", "1000")]
    _, body = await get(session, sim, params)
    assert sorted(r["id"] for r in body["items"]) == sorted(sim.failed_run_ids())


async def test_time_window_filters_are_anded(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """startedAtUTC > A and < B, with the status filter, keep exactly the runs in between."""
    starts = sorted(
        field(sim, r, "metrics", "durationSummary", "startedAtUTC") for r in sim.run_ids()
    )
    low, high = starts[5], starts[-5]
    params = [
        ("property", FAILED),
        ("property", f"metrics.durationSummary.startedAtUTC>{low}"),
        ("property", f"metrics.durationSummary.startedAtUTC<{high}"),
        ("limit", "4"),
    ]
    ids, pages = await walk(session, sim, params)
    expected = {
        r
        for r in sim.failed_run_ids()
        if low < field(sim, r, "metrics", "durationSummary", "startedAtUTC") < high
    }
    assert 0 < len(expected) < len(sim.failed_run_ids())
    assert set(ids) == expected
    assert len(ids) == len(expected)
    assert len(pages) > 1


async def test_comma_separated_properties_are_anded_too(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Several conditions in one property parameter are ANDed like repeated ones."""
    flow = sim.flow_ids()[0]
    _, joined = await get(session, sim, [("property", f"flowId=={flow},{FAILED}")])
    _, repeated = await get(session, sim, [("property", f"flowId=={flow}"), ("property", FAILED)])
    assert joined == repeated
    assert len(joined["items"]) == 7


async def test_count_answers_the_number_of_matches(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """count=true answers {"count": N} for the filters given."""
    _, failed = await get(session, sim, [("property", FAILED), ("count", "true")])
    _, everything = await get(session, sim, [("count", "true")])
    assert failed == {"count": 21}
    assert everything == {"count": 33}


@pytest.mark.parametrize(("orderby", "descending"), [("createdAt", False), ("-createdAt", True)])
async def test_orderby_sorts_ascending_or_descending(
    session: aiohttp.ClientSession, sim: Simulator, orderby: str, descending: bool
) -> None:
    """orderby=createdAt sorts oldest first, -createdAt newest first, across pages."""
    ids, _ = await walk(session, sim, [("orderby", orderby), ("limit", "5")])
    created = [field(sim, r, "createdAt") for r in ids]
    assert len(ids) == 33
    assert created == sorted(created, reverse=descending)


async def test_limit_is_capped_at_the_maximum(session: aiohttp.ClientSession) -> None:
    """A limit above the maximum gets the maximum; no limit gets the default."""
    config = SimulatorConfig(list_default_limit=4, list_max_limit=6)
    async with Simulator(config) as sim:
        _, capped = await get(session, sim, [("limit", "5000")])
        _, default = await get(session, sim)
    assert len(capped["items"]) == 6
    assert len(default["items"]) == 4


@pytest.mark.parametrize(
    "params",
    [
        [("limit", "0")],
        [("limit", "ten")],
        [("property", "flowId~~x")],
        [("property", "nosuchfield==1")],
        [("property", "metrics.durationSummary.startedAtUTC>yesterday")],
        [("orderby", "-nosuchfield")],
        [("continuationToken", "not-a-token")],
    ],
)
async def test_bad_queries_are_refused_in_flow_service_format(
    session: aiohttp.ClientSession, sim: Simulator, params: list[tuple[str, str]]
) -> None:
    """Unreadable limits, filters, orderings and tokens get 400 in Flow Service's format."""
    status, body = await get(session, sim, params)
    assert status == 400
    assert body["type"].startswith("https://ns.adobe.com/aep/errors/FLOW-")
    assert body["report"]["detailed-message"]


async def test_retriggered_run_shows_up_as_a_new_run_of_the_same_flow(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """After a re-trigger, the flow lists a new run in progress."""
    run_id = sim.failed_run_ids()[0]
    flow = field(sim, run_id, "flowId")
    async with session.post(
        f"{sim.base_url}/runs/{run_id}/action?op=re-trigger", headers=sim.headers()
    ) as resp:
        new_id = (await resp.json())["id"]
    params = [
        ("property", f"flowId=={flow}"),
        ("property", "metrics.statusSummary.status==inProgress"),
    ]
    _, body = await get(session, sim, params)
    assert new_id in [r["id"] for r in body["items"]]
    _, newest = await get(session, sim, [("orderby", "-createdAt"), ("limit", "1")])
    assert newest["items"][0]["id"] == new_id


async def test_pages_hold_up_while_new_runs_are_added(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Runs added between two pages neither repeat nor skip items of the listing."""
    params = [("orderby", "-createdAt"), ("limit", "10")]
    _, first = await get(session, sim, params)
    for run_id in sim.failed_run_ids()[:3]:
        async with session.post(
            f"{sim.base_url}/runs/{run_id}/action?op=re-trigger", headers=sim.headers()
        ) as resp:
            assert resp.status == 200
    seen = [r["id"] for r in first["items"]]
    body = first
    while "next" in body["_links"]:
        async with session.get(
            sim.base_url + body["_links"]["next"]["href"], headers=sim.headers()
        ) as resp:
            body = await resp.json()
        seen += [r["id"] for r in body["items"]]
    assert len(seen) == len(set(seen)) == 33


async def test_listing_checks_the_gateway_headers(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Listing without a token is refused like any other call."""
    async with session.get(f"{sim.base_url}/runs") as resp:
        assert resp.status == 403
        assert (await resp.json())["error_code"] == "403010"
