"""Listing failed runs: filters, pages and links, retries, token renewal, streaming, output."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from bulkretry._config import Credentials, Settings
from bulkretry._exceptions import AuthenticationError, ConfigurationError, TransportError
from bulkretry._io.source import STDIN, RecordReader, RunIdValidator
from bulkretry._listing.lister import (
    FailedRunLister,
    ListedRun,
    ListingHalted,
    ListingStats,
    ListQuery,
    list_failed_runs,
)
from bulkretry._listing.query import resolve_next
from bulkretry._model import Answer
from bulkretry._policy import Action, Decision, decide_read
from bulkretry._simulator import ManualClock, RecordedRequest, Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

FAILED = "metrics.statusSummary.status==failed"
STARTED = "metrics.durationSummary.startedAtUTC"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(seed=3, flows=3, runs_per_flow=7, other_runs_per_flow=4)
    async with Simulator(config) as s:
        yield s


def settings_for(sim: Simulator | str, **overrides: Any) -> Settings:
    """Settings that reach ``sim`` with its static token, no real pacing and tiny backoffs."""
    base = sim if isinstance(sim, str) else sim.base_url
    values: dict[str, Any] = {
        "base_url": base,
        "credentials": Credentials(
            access_token="sim-access-token",
            api_key="sim-api-key",
            org_id="SIMORG0000000000000000@AdobeOrg",
        ),
        "rate": 10_000.0,
        "burst": 100,
        "max_attempts": 4,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


class Waits:
    """Stands in for asyncio.sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def collect(
    settings: Settings, query: ListQuery, **kwargs: Any
) -> tuple[list[list[str]], ListingStats]:
    """List, keeping each page's run IDs as handed out."""
    pages: list[list[str]] = []
    kwargs.setdefault("wait", Waits())
    # A plain session: loading the system's CA store for each test costs more than the test.
    async with aiohttp.ClientSession() as session:
        stats = await list_failed_runs(
            settings,
            query,
            lambda runs: pages.append([r.run_id for r in runs]),
            session=session,
            **kwargs,
        )
    return pages, stats


def run_field(sim: Simulator, run_id: str, *path: str) -> Any:
    value: Any = sim.run(run_id)
    for name in path:
        value = value[name]
    return value


def started(sim: Simulator, run_id: str) -> int:
    return int(run_field(sim, run_id, "metrics", "durationSummary", "startedAtUTC"))


def failed_of(sim: Simulator, flow: str) -> set[str]:
    return {r for r in sim.failed_run_ids() if run_field(sim, r, "flowId") == flow}


def listings(sim: Simulator) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.method == "GET" and r.path.endswith("/runs")]


# -- pages and filters over the simulator -------------------------------------------------------


async def test_several_pages_list_every_failed_run_of_the_flow_once(sim: Simulator) -> None:
    """A small page size gives several pages; together they hold each failed run once."""
    flow = sim.flow_ids()[1]
    pages, stats = await collect(settings_for(sim), ListQuery(flow_ids=(flow,), page_size=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    ids = [r for p in pages for r in p]
    assert len(ids) == len(set(ids)) == 7
    assert set(ids) == failed_of(sim, flow)
    assert (stats.pages, stats.runs, stats.requests, stats.retries) == (3, 7, 3, 0)


async def test_filters_go_as_repeated_property_parameters(sim: Simulator) -> None:
    """flowId, status and both ends of the window are separate, ANDed property parameters."""
    flow = sim.flow_ids()[0]
    query = ListQuery(flow_ids=(flow,), since_ms=1000, until_ms=2_000_000_000_000, page_size=5)
    await collect(settings_for(sim), query)
    first = listings(sim)[0]
    assert first.query.getall("property") == [
        f"flowId=={flow}",
        FAILED,
        f"{STARTED}>1000",
        f"{STARTED}<2000000000000",
    ]
    assert first.query.getall("limit") == ["5"]
    assert first.headers["Authorization"] == "Bearer sim-access-token"


async def test_an_upper_case_flow_id_lists_the_runs_of_its_flow(sim: Simulator) -> None:
    """Flow IDs are folded to lower case, as Flow Service writes each run's flowId."""
    flow = sim.flow_ids()[1]
    lister = FailedRunLister(settings_for(sim), ListQuery(flow_ids=(flow.upper(), flow)))
    assert lister.query.flow_ids == (flow,)
    pages, stats = await collect(settings_for(sim), ListQuery(flow_ids=(flow.upper(),)))
    assert {r for p in pages for r in p} == failed_of(sim, flow)
    assert stats.left_out == 0
    assert listings(sim)[0].query.getall("property")[0] == f"flowId=={flow}"


async def test_each_flow_is_listed_by_a_query_of_its_own(sim: Simulator) -> None:
    """Several flows: one listing each (filters are ANDed), the union of their failed runs."""
    flows = sim.flow_ids()[:2]
    pages, stats = await collect(settings_for(sim), ListQuery(flow_ids=tuple(flows), page_size=4))
    ids = [r for p in pages for r in p]
    assert set(ids) == failed_of(sim, flows[0]) | failed_of(sim, flows[1])
    assert len(ids) == 14
    queried = [
        [p for p in r.query.getall("property") if p.startswith("flowId")] for r in listings(sim)
    ]
    assert queried == [[f"flowId=={flows[0]}"]] * 2 + [[f"flowId=={flows[1]}"]] * 2
    assert stats.flows == 2


async def test_all_flows_lists_every_failed_run_of_the_sandbox(sim: Simulator) -> None:
    """Without a flow filter, every failed run of the sandbox is listed."""
    pages, _ = await collect(settings_for(sim), ListQuery(all_flows=True, page_size=8))
    ids = [r for p in pages for r in p]
    assert sorted(ids) == sorted(sim.failed_run_ids())
    assert all(
        not any(p.startswith("flowId") for p in r.query.getall("property")) for r in listings(sim)
    )


async def test_time_window_keeps_the_runs_started_strictly_inside_it(sim: Simulator) -> None:
    """since and until select exactly the failed runs started between them."""
    starts = sorted(started(sim, r) for r in sim.failed_run_ids())
    low, high = starts[4], starts[-4]
    query = ListQuery(all_flows=True, since_ms=low, until_ms=high, page_size=4)
    pages, _ = await collect(settings_for(sim), query)
    expected = {r for r in sim.failed_run_ids() if low < started(sim, r) < high}
    assert sorted(r for p in pages for r in p) == sorted(expected)
    assert len(expected) == len(starts) - 9  # starts[:5] and starts[-4:] are out


async def test_since_alone_keeps_the_later_runs(sim: Simulator) -> None:
    """since without until: runs started after it."""
    flow = sim.flow_ids()[2]
    starts = sorted(started(sim, r) for r in failed_of(sim, flow))
    pages, _ = await collect(
        settings_for(sim), ListQuery(flow_ids=(flow,), since_ms=starts[2], page_size=2)
    )
    assert {r for p in pages for r in p} == {
        r for r in failed_of(sim, flow) if started(sim, r) > starts[2]
    }


async def test_empty_result_is_one_empty_page(sim: Simulator) -> None:
    """No failed run in the window: one request, one empty page, no error."""
    query = ListQuery(all_flows=True, since_ms=4_000_000_000_000)
    pages, stats = await collect(settings_for(sim), query)
    assert pages == [[]]
    assert (stats.pages, stats.runs, stats.requests) == (1, 0, 1)


async def test_relative_links_resolve_against_a_base_url_with_a_path() -> None:
    """The simulator's links are relative to the service base; they are followed under it."""
    config = SimulatorConfig(base_path="/data/foundation/flowservice", flows=1, runs_per_flow=5)
    async with Simulator(config) as sim:
        pages, _ = await collect(settings_for(sim), ListQuery(all_flows=True, page_size=2))
    assert sorted(r for p in pages for r in p) == sorted(sim.failed_run_ids())
    assert [r.path for r in sim.requests] == ["/data/foundation/flowservice/runs"] * 3
    assert all(r.status == 200 for r in sim.requests)


# -- streaming ------------------------------------------------------------------------------------


async def test_each_page_is_handed_out_before_the_next_is_requested(sim: Simulator) -> None:
    """Streaming: the first IDs are out after one request; page k is out after k requests."""
    seen_at: list[int] = []

    def on_page(runs: list[ListedRun]) -> None:
        seen_at.append(len(listings(sim)))

    query = ListQuery(flow_ids=(sim.flow_ids()[0],), page_size=2)
    await list_failed_runs(settings_for(sim), query, on_page)
    assert seen_at == [1, 2, 3, 4]


async def test_an_error_raised_by_the_callback_ends_the_listing_at_once(sim: Simulator) -> None:
    """A consumer that stops (a closed pipe) stops the listing: no further page is asked for."""

    class Enough(Exception):
        pass

    def on_page(runs: list[ListedRun]) -> None:
        raise Enough

    with pytest.raises(Enough):
        await list_failed_runs(settings_for(sim), ListQuery(all_flows=True, page_size=2), on_page)
    assert len(listings(sim)) == 1


# -- trouble in the middle of pagination ---------------------------------------------------------


async def test_429_between_pages_waits_for_retry_after_and_resumes(sim: Simulator) -> None:
    """A 429 on page 2 is waited out (Retry-After 1 s), then the listing carries on."""
    sim.script(None, [200, 429])
    waits = Waits()
    flow = sim.flow_ids()[0]
    pages, stats = await collect(
        settings_for(sim), ListQuery(flow_ids=(flow,), page_size=3), wait=waits
    )
    assert {r for p in pages for r in p} == failed_of(sim, flow)
    assert [r.status for r in listings(sim)] == [200, 429, 200, 200]
    assert waits.delays
    assert waits.delays[0] >= 1.0
    assert (stats.throttled, stats.retries, stats.pages) == (1, 1, 3)
    # The continuation token is sent again, unchanged, after the 429.
    tokens = [r.query.get("continuationToken") for r in listings(sim)]
    assert tokens[1] is not None
    assert tokens[1] == tokens[2]


async def test_503_500_and_a_reset_between_pages_are_retried(sim: Simulator) -> None:
    """A GET is safe to repeat: 503, 500 and a dropped connection are all retried."""
    # aiohttp itself retries a GET once on a reused connection that was reset: reset twice.
    sim.script(None, [200, 503, 500, "reset", "reset"])
    flow = sim.flow_ids()[0]
    pages, stats = await collect(
        settings_for(sim, max_attempts=5), ListQuery(flow_ids=(flow,), page_size=3)
    )
    assert {r for p in pages for r in p} == failed_of(sim, flow)
    assert sim.stats["reset"] == 2
    assert stats.server_errors == 2
    assert stats.network_errors >= 1
    assert stats.retries == 2 + stats.network_errors


async def test_persistent_503_gives_up_after_max_attempts_keeping_what_was_listed(
    sim: Simulator,
) -> None:
    """After max_attempts the listing stops with one clear reason; page 1 stays handed out."""
    sim.script(None, [200, 503, 503, 503])
    pages: list[list[str]] = []
    query = ListQuery(flow_ids=(sim.flow_ids()[0],), page_size=3)
    with pytest.raises(ListingHalted) as caught:
        await list_failed_runs(
            settings_for(sim, max_attempts=3),
            query,
            lambda runs: pages.append([r.run_id for r in runs]),
            wait=Waits(),
        )
    assert len(pages) == 1
    assert len(pages[0]) == 3
    assert "page 2" in caught.value.reason
    assert "gave up after 3 attempts" in caught.value.reason
    assert caught.value.status == 503
    assert "\n" not in str(caught.value)


async def test_a_4xx_stops_at_once_naming_the_status(sim: Simulator) -> None:
    """A 400 is not retried: the listing stops with the API's message."""
    sim.script(None, [200, 400])
    with pytest.raises(ListingHalted) as caught:
        await collect(settings_for(sim), ListQuery(all_flows=True, page_size=3))
    assert caught.value.status == 400
    assert "HTTP 400" in caught.value.reason
    assert len(listings(sim)) == 2


async def test_wrong_api_key_stops_on_the_first_page(sim: Simulator) -> None:
    """A 403 from the gateway names the credentials and makes no second request."""
    bad = Credentials(access_token="sim-access-token", api_key="nope", org_id=sim.config.org_id)
    with pytest.raises(ListingHalted) as caught:
        await collect(settings_for(sim, credentials=bad), ListQuery(all_flows=True))
    assert "refused the credentials" in caught.value.reason
    assert caught.value.error_code == "403003"
    assert sim.request_count == 1


async def test_expired_oauth_token_mid_listing_is_renewed_once() -> None:
    """The token expires between pages: one 401 401013, one IMS request, and the listing ends."""
    clock = ManualClock()
    config = SimulatorConfig(seed=5, flows=1, runs_per_flow=6, token_lifetime=600, clock=clock)
    async with Simulator(config) as sim:
        credentials = Credentials(
            api_key=config.client_id,
            org_id=config.org_id,
            client_id=config.client_id,
            client_secret=config.client_secret,
            ims_url=sim.ims_url,
        )
        pages: list[list[str]] = []

        def on_page(runs: list[ListedRun]) -> None:
            pages.append([r.run_id for r in runs])
            clock.advance(3600)  # the simulator's clock: the token is now expired

        stats = await list_failed_runs(
            settings_for(sim, credentials=credentials),
            ListQuery(all_flows=True, page_size=4),
            on_page,
            wait=Waits(),
        )
        statuses = [r.status for r in listings(sim)]
    assert sorted(r for p in pages for r in p) == sorted(sim.failed_run_ids())
    assert statuses == [200, 401, 200]
    assert stats.token_renewals == 1
    assert stats.retries == 0
    assert sim.token_requests == 2


class ReusableToken:
    """A token provider whose renewal gives back a token the simulator still accepts."""

    def __init__(self) -> None:
        self.renewals = 0

    async def token(self) -> str:
        return "sim-access-token"

    async def renew(self, stale: str) -> str:
        self.renewals += 1
        return "sim-access-token"


def answer_401_at(*indexes: int) -> Callable[[RecordedRequest], int | None]:
    return lambda rec: 401 if rec.index in indexes else None


async def test_401013_from_the_hook_renews_and_asks_again() -> None:
    """One 401 401013 mid-listing: renew(stale) once, then the same page again."""
    config = SimulatorConfig(flows=1, runs_per_flow=6, on_request=answer_401_at(2))
    tokens = ReusableToken()
    async with Simulator(config) as sim:
        pages, stats = await collect(
            settings_for(sim), ListQuery(all_flows=True, page_size=4), tokens=tokens
        )
    assert sorted(r for p in pages for r in p) == sorted(sim.failed_run_ids())
    assert tokens.renewals == stats.token_renewals == 1


async def test_a_renewed_token_refused_again_stops_the_listing() -> None:
    """401013 right after a renewal: no endless renewing, one clear reason."""
    config = SimulatorConfig(flows=1, runs_per_flow=6, on_request=answer_401_at(2, 3))
    tokens = ReusableToken()
    async with Simulator(config) as sim:
        with pytest.raises(ListingHalted) as caught:
            await collect(settings_for(sim), ListQuery(all_flows=True, page_size=4), tokens=tokens)
    assert tokens.renewals == 1
    assert "renewed access token" in caught.value.reason
    assert caught.value.error_code == "401013"


async def test_a_static_token_refused_mid_listing_is_an_authentication_error() -> None:
    """A given token cannot be renewed: the listing stops with the provider's message."""
    config = SimulatorConfig(flows=1, runs_per_flow=6, on_request=answer_401_at(2))
    async with Simulator(config) as sim:
        with pytest.raises(AuthenticationError, match="401013"):
            await collect(settings_for(sim), ListQuery(all_flows=True, page_size=4))


# -- links, over a hand-written service -----------------------------------------------------------


def item(run_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "flowId": fields.get("flow", "f1"),
        "metrics": {
            "durationSummary": {"startedAtUTC": fields.get("started", 1_700_000_000_000)},
            "statusSummary": {"status": fields.get("status", "failed")},
        },
    }


class Pages:
    """A fake ``GET /runs``: answers the page named by ``continuationToken`` (None: first)."""

    def __init__(self, pages: dict[str | None, tuple[list[Any], Any]]) -> None:
        self.pages = pages
        self.requests: list[URL] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.url)
        items, links = self.pages[request.query.get("continuationToken")]
        if callable(links):
            links = links(str(request.url.origin()))
        return web.json_response({"items": items, "_links": links})


@asynccontextmanager
async def serve(pages: Pages, path: str = "/runs") -> AsyncIterator[str]:
    """Serve ``pages`` on a loopback port; yield the base URL."""
    app = web.Application()
    app.router.add_get(path, pages.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_absolute_link_on_the_same_host_is_followed() -> None:
    """An absolute next link to the base URL's own origin is followed as is."""
    pages = Pages(
        {
            None: (
                [item("a")],
                lambda origin: {"next": {"href": f"{origin}/runs?continuationToken=t2"}},
            ),
            "t2": ([item("b")], {}),
        }
    )
    async with serve(pages) as base:
        got, _ = await collect(settings_for(base), ListQuery(all_flows=True))
    assert got == [["a"], ["b"]]
    assert pages.requests[1].query["continuationToken"] == "t2"


async def test_next_link_to_another_host_is_refused_and_never_contacted() -> None:
    """The token never leaves for another origin: the listing stops before asking there."""
    elsewhere = Pages({"t2": ([item("stolen")], {})})
    async with serve(elsewhere) as other:
        pages = Pages(
            {None: ([item("a")], {"next": {"href": f"{other}/runs?continuationToken=t2"}})}
        )
        async with serve(pages) as base:
            got: list[list[str]] = []
            with pytest.raises(ListingHalted) as caught:
                await list_failed_runs(
                    settings_for(base),
                    ListQuery(all_flows=True),
                    lambda runs: got.append([r.run_id for r in runs]),
                )
    assert got == [["a"]]
    assert elsewhere.requests == []
    assert "never sent to another host" in caught.value.reason


async def test_a_continuation_token_seen_twice_stops_a_link_loop() -> None:
    """A server that links back to a page already read does not make the listing spin."""
    pages = Pages(
        {
            None: ([item("a")], {"next": {"href": "/runs?continuationToken=t2"}}),
            "t2": ([item("b")], {"next": {"href": "/runs?continuationToken=t2"}}),
        }
    )
    async with serve(pages) as base:
        with pytest.raises(ListingHalted, match="same continuation token twice"):
            await collect(settings_for(base), ListQuery(all_flows=True))
    assert len(pages.requests) == 2


async def test_runs_repeated_across_pages_are_listed_once() -> None:
    """Pages that shift while being read may repeat a run: it is handed out once."""
    pages = Pages(
        {
            None: ([item("a"), item("b")], {"next": {"href": "/runs?continuationToken=t2"}}),
            "t2": ([item("b"), item("c")], {"next": {"href": "/runs?continuationToken=t3"}}),
            "t3": ([item("a")], {}),
        }
    )
    async with serve(pages) as base:
        got, stats = await collect(settings_for(base), ListQuery(all_flows=True))
    assert got == [["a", "b"], ["c"], []]
    assert stats.duplicates == 2


async def test_runs_that_do_not_fit_the_filters_are_left_out() -> None:
    """A server that ignores a filter: runs not failed, of another flow or outside the window."""
    items = [
        item("ok", flow="f1", started=5000),
        item("done", status="success"),
        item("other-flow", flow="f2", started=5000),
        item("too-early", started=1000),
        item("bad id\n"),
        {"no": "id"},
        item("FAILED-caps", status="Failed", started=5000),
    ]
    pages = Pages({None: (items, {})})
    async with serve(pages) as base:
        got, stats = await collect(settings_for(base), ListQuery(flow_ids=("f1",), since_ms=2000))
    assert got == [["ok", "FAILED-caps"]]
    assert stats.left_out == 5


@pytest.mark.parametrize("links", [{}, None, {"self": {"href": "/runs"}}, {"next": {"href": ""}}])
async def test_a_page_without_a_next_link_ends_the_listing(links: Any) -> None:
    """An empty or missing _links, or one without next, is the last page."""
    pages = Pages({None: ([item("a")], links)})
    async with serve(pages) as base:
        got, _ = await collect(settings_for(base), ListQuery(all_flows=True))
    assert got == [["a"]]


async def test_an_unreadable_next_link_stops_rather_than_drops_pages() -> None:
    """A next link without an href is not taken for the end: the listing says it stopped."""
    pages = Pages({None: ([item("a")], {"next": {"rel": "next"}})})
    async with serve(pages) as base:
        with pytest.raises(ListingHalted, match="next-page link"):
            await collect(settings_for(base), ListQuery(all_flows=True))


async def test_html_answer_is_retried_then_given_up() -> None:
    """A 200 that is not a page of runs is retried like a 5xx, then stops naming the problem."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/runs", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        with pytest.raises(ListingHalted, match="HTML"):
            await collect(settings_for(base, max_attempts=2), ListQuery(all_flows=True))
    finally:
        await runner.cleanup()


# -- server text on stderr and in the output -------------------------------------------------------

#: What a hostile server writes to clear the screen and ring the bell.
HOSTILE = "\x1b[2J\x07"


def assert_safe(text: str | None) -> None:
    """Server text that reached a message is one printable line: no ESC, no BEL, no newline."""
    assert text is not None
    assert "\x1b" not in text
    assert "\x07" not in text
    assert text.isprintable(), repr(text)


@asynccontextmanager
async def answering(status: int, body: Any) -> AsyncIterator[str]:
    """Serve ``GET /runs`` with the same JSON answer to every request."""

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/runs", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


HOSTILE_ERROR = {"error_code": f"400{HOSTILE}", "message": f"no{HOSTILE}\nsuch filter"}


async def test_a_refused_listing_quotes_the_server_without_escape_or_bell() -> None:
    """A 400's code and message reach the halt reason (printed on stderr) as one safe line."""
    async with answering(400, HOSTILE_ERROR) as base:
        with pytest.raises(ListingHalted) as caught:
            await collect(settings_for(base), ListQuery(all_flows=True))
    assert_safe(str(caught.value))
    assert_safe(caught.value.error_code)
    assert "such filter" in caught.value.reason


async def test_retried_pages_log_the_server_text_without_escape_or_bell(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The retry log line and the give-up reason quote a 5xx body as one safe line."""
    caplog.set_level("INFO", logger="bulkretry")
    async with answering(500, HOSTILE_ERROR) as base:
        with pytest.raises(ListingHalted) as caught:
            await collect(settings_for(base, max_attempts=2), ListQuery(all_flows=True))
    assert_safe(str(caught.value))
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries
    for message in retries:
        assert_safe(message)


async def test_listed_runs_carry_the_server_text_without_escape_or_bell() -> None:
    """A run's flow ID, status and error texts are written out as one safe line each."""
    run = item("a", flow=f"f{HOSTILE}1")
    run["metrics"]["statusSummary"]["errors"] = [
        {"code": f"CONNECTOR-{HOSTILE}", "message": f"the source{HOSTILE}\nis gone"}
    ]
    async with answering(200, {"items": [run], "_links": {}}) as base:
        listed: list[ListedRun] = []
        await list_failed_runs(
            settings_for(base), ListQuery(all_flows=True), listed.extend, wait=Waits()
        )
    [got] = listed
    assert_safe(got.flow_id)
    [(code, message)] = got.errors
    assert_safe(code)
    assert_safe(message)
    assert b"\\u001b" not in got.to_json_line()


@pytest.mark.parametrize(
    "href",
    [
        f"javascript:{HOSTILE}",
        f"https://evil.example/{HOSTILE}runs",
        f"http://[{HOSTILE}",
        "https://evil.example/" + "x" * 5000,
    ],
)
def test_a_refused_next_link_is_quoted_without_escape_or_bell(href: str) -> None:
    """A link the lister will not follow is named in the stop reason as one short safe line."""
    with pytest.raises(ListingHalted) as caught:
        resolve_next(BASE, href)
    assert_safe(caught.value.reason)
    assert len(caught.value.reason) < 500


async def test_an_unreadable_next_link_is_quoted_without_escape_or_bell() -> None:
    """A next link that is not a string is named safely in the stop reason."""
    links = {"next": {"href": 5, "title": HOSTILE * 100}}
    async with answering(200, {"items": [], "_links": links}) as base:
        with pytest.raises(ListingHalted) as caught:
            await collect(settings_for(base), ListQuery(all_flows=True))
    assert_safe(str(caught.value))


# -- output ---------------------------------------------------------------------------------------


async def test_jsonl_lines_round_trip_into_the_record_reader(sim: Simulator) -> None:
    """--format jsonl lines are read back by `bulkretry run` as the same run IDs."""
    listed: list[ListedRun] = []
    flow = sim.flow_ids()[0]
    await list_failed_runs(
        settings_for(sim), ListQuery(flow_ids=(flow,), page_size=3), listed.extend
    )
    stream = io.BytesIO(b"".join(run.to_json_line() for run in listed))
    records = list(RecordReader([STDIN], RunIdValidator(), stdin=stream))
    assert [r.run_id for r in records] == [run.run_id for run in listed]
    assert all(r.error is None for r in records)
    first = listed[0].to_json()
    errors = run_field(sim, listed[0].run_id, "metrics", "statusSummary", "errors")
    assert first["flow_id"] == flow
    assert first["status"] == "failed"
    assert first["errors"] == errors
    assert isinstance(first["started_at"], str)
    assert first["started_at"].endswith("Z")


def test_times_are_written_in_iso_8601_utc_with_milliseconds() -> None:
    """started_at and completed_at: ISO-8601 UTC; absent ones are null."""
    run = ListedRun(run_id="r", started_at_ms=1_593_134_665_781)
    assert run.to_json()["started_at"] == "2020-06-26T01:24:25.781Z"
    assert run.to_json()["completed_at"] is None


# -- the decision, link resolution and the query, on their own ------------------------------------


def decide(outcome: Answer | TransportError, attempt: int = 1, **overrides: Any) -> Decision:
    """Decide on one page request with the listing's settings (the full table: test_policy)."""
    return decide_read(
        outcome,
        attempt=attempt,
        elapsed=0.0,
        settings=settings_for("http://127.0.0.1:1", **overrides),
        rng=random.Random(0),
        wall_now=1_700_000_000.0,
        wanted="a page of runs",
    )


PAGE: dict[str, Any] = {"items": [], "_links": {}}


@pytest.mark.parametrize(
    ("outcome", "action", "renew"),
    [
        (Answer(status=200, body=PAGE), Action.SUCCEED, False),
        (Answer(status=200, body=None, body_problem="the body is empty"), Action.RETRY, False),
        (Answer(status=302), Action.HALT, False),
        (Answer(status=401, body={"error_code": "401013"}), Action.HALT, True),
        (Answer(status=401, body={"error_code": "401000"}), Action.HALT, False),
        (Answer(status=403, body={"error_code": "403003"}), Action.HALT, False),
        (Answer(status=404), Action.HALT, False),
        (Answer(status=400), Action.HALT, False),
        (Answer(status=429), Action.RETRY, False),
        (Answer(status=500), Action.RETRY, False),
        (Answer(status=502), Action.RETRY, False),
        (Answer(status=503), Action.RETRY, False),
        (Answer(status=504), Action.RETRY, False),
        (Answer(status=501), Action.HALT, False),
        (TransportError("reset", kind="network", sent=True), Action.RETRY, False),
        (TransportError("slow", kind="timeout", sent=True), Action.RETRY, False),
        (TransportError("bad cert", kind="tls", sent=False), Action.HALT, False),
    ],
)
def test_decision_for_each_kind_of_answer(
    outcome: Answer | TransportError, action: Action, renew: bool
) -> None:
    """Every answer to a page request maps to succeed, retry, or halt (renewing on 401013)."""
    decision = decide(outcome)
    assert (decision.action, decision.token_expired) == (action, renew)


def test_429_waits_at_least_retry_after_and_slows_the_throttle() -> None:
    """Retry-After is a floor on the wait; a 429 is a throttling signal."""
    verdict = decide(Answer(status=429, retry_after="7"))
    assert verdict.delay >= 7.0
    assert verdict.throttled
    assert verdict.retry_after == 7.0


def test_503_without_retry_after_is_not_a_throttling_signal() -> None:
    """A bare 503 is retried after backoff without cutting the rate."""
    verdict = decide(Answer(status=503))
    assert not verdict.throttled
    assert verdict.delay <= 0.05


def test_retry_after_beyond_the_cap_stops() -> None:
    """An hour's Retry-After is not waited out blindly."""
    verdict = decide(Answer(status=429, retry_after="3600"), retry_after_cap=900.0)
    assert verdict.action is Action.HALT
    assert verdict.halt_reason is not None
    assert "3600 s" in verdict.halt_reason


def test_last_attempt_and_deadline_give_up() -> None:
    """At max_attempts, or when the wait would pass the deadline, the page is given up."""
    assert decide(Answer(status=500), attempt=4).action is Action.HALT
    late = decide(Answer(status=429, retry_after="30"), deadline=10.0)
    assert late.action is Action.HALT
    assert late.halt_reason is not None
    assert "deadline" in late.halt_reason


BASE = URL("https://platform.adobe.io/data/foundation/flowservice")
NEXT = "https://platform.adobe.io/data/foundation/flowservice/runs?continuationToken=abc"


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("/runs?continuationToken=abc", NEXT),
        ("/data/foundation/flowservice/runs?continuationToken=abc", NEXT),
        ("runs?continuationToken=abc", NEXT),
        ("?continuationToken=abc", NEXT),
        (NEXT, NEXT),
        (
            "https://PLATFORM.adobe.io:443/data/foundation/flowservice/runs?continuationToken=abc",
            NEXT,
        ),
        ("//platform.adobe.io/data/foundation/flowservice/runs?continuationToken=abc", NEXT),
        (
            "/runs?continuationToken=a%2Bb%3D%3D&property=flowId==x",
            "https://platform.adobe.io/data/foundation/flowservice/runs"
            "?continuationToken=a%2Bb%3D%3D&property=flowId==x",
        ),
    ],
)
def test_next_links_resolve_against_the_service_base(href: str, expected: str) -> None:
    """Links relative to the base, to the host, or absolute on the same origin all resolve."""
    assert str(resolve_next(BASE, href)) == expected


def test_resolved_link_keeps_the_token_byte_for_byte() -> None:
    """The continuation token is not decoded and re-encoded differently."""
    url = resolve_next(BASE, "/runs?continuationToken=a%2Bb%3D%3D")
    assert url.raw_query_string == "continuationToken=a%2Bb%3D%3D"
    assert url.query["continuationToken"] == "a+b=="


@pytest.mark.parametrize(
    "href",
    [
        "https://evil.example/runs?continuationToken=abc",
        "//evil.example/runs?continuationToken=abc",
        "https://platform.adobe.io:8443/runs?continuationToken=abc",
        "http://platform.adobe.io/data/foundation/flowservice/runs?continuationToken=abc",
        "https://user:pw@platform.adobe.io/runs?continuationToken=abc",
        "javascript:alert(1)",
    ],
)
def test_links_that_would_carry_the_token_elsewhere_are_refused(href: str) -> None:
    """Another host, port or scheme, or credentials in the link: refused."""
    with pytest.raises(ListingHalted):
        resolve_next(BASE, href)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "--all-flows"),
        ({"flow_ids": ("f",), "all_flows": True}, "cannot be used together"),
        ({"flow_ids": ("a,metrics.x==1",)}, "not valid"),
        ({"all_flows": True, "since_ms": 5, "until_ms": 5}, "earlier than --until"),
        ({"all_flows": True, "page_size": 0}, "at least 1"),
    ],
)
def test_query_refuses_what_cannot_be_listed(kwargs: dict[str, Any], message: str) -> None:
    """No flow and no --all-flows, both, a flow ID that would inject a filter, an empty window."""
    with pytest.raises(ConfigurationError, match=message):
        ListQuery(**kwargs)


def test_lister_repr_shows_progress() -> None:
    """The lister's repr shows where it is, for debugging a stuck listing."""
    lister = FailedRunLister(settings_for("http://127.0.0.1:1"), ListQuery(all_flows=True))
    text = repr(lister)
    assert "pages=0" in text
    assert "Throttle" in text
