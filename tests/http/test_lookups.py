"""The look-up layer: run status, pages and links, URLs, the client's GET, the pre-flight."""

from __future__ import annotations

import errno
import random
import re
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from yarl import URL

from bulkretry import BaseUrlError, ConfigurationError
from bulkretry._config import Credentials, Settings
from bulkretry._exceptions import AuthenticationError, BatchHalted, ListingHalted, TransportError
from bulkretry._http.auth import StaticToken
from bulkretry._http.client import FlowServiceClient
from bulkretry._http.links import resolve_next
from bulkretry._http.lookups import (
    RunView,
    classify_status,
    listing_params,
    listing_url,
    parse_run_page,
    parse_single,
    run_url,
)
from bulkretry._http.preflight import preflight
from bulkretry._http.translate import unreachable
from bulkretry._model import Answer
from bulkretry._retry import Decision
from bulkretry._simulator import Simulator, SimulatorConfig

BASE = "https://flow.test/data/foundation/flowservice"
ANY = re.compile(r"^https://flow\.test/.*$")
RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
FLOW = "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d"
HOSTILE = "\x1b[2J\x07"


def run_item(status: Any = "failed", **fields: Any) -> dict[str, Any]:
    """A run object shaped as Flow Service writes it."""
    item: dict[str, Any] = {
        "id": fields.pop("id", RUN),
        "flowId": FLOW,
        "createdAt": 1_700_000_000_000,
        "etag": '"1a00-0000"',
        "metrics": {"statusSummary": {"status": status}},
    }
    item.update(fields)
    return item


# -- status ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "final"),
    [
        ("success", "success"),
        ("SUCCESS", "success"),
        ("Success", "success"),
        ("completed", "success"),
        ("COMPLETED", "success"),
        (" Completed ", "success"),
        ("failed", "failed"),
        ("FAILED", "failed"),
        ("Failed", "failed"),
        ("PARTIAL_SUCCESS", "partial"),
        ("partial_success", "partial"),
        ("PARTIAL_FAILURE", "partial"),
        ("partialFailure", "partial"),
        ("Partial", "partial"),
        ("IN_PROGRESS", None),
        ("inProgress", None),
        ("in_progress", None),
        ("QUEUED", None),
        ("SCHEDULED", None),
        ("CANCELLED", None),
        ("failure", None),
        ("", None),
        (None, None),
    ],
)
def test_each_status_value_in_any_case_has_its_final(status: str | None, final: str | None) -> None:
    """success/completed, failed, any partial are done; everything else is not yet done."""
    assert classify_status(status) == final
    view = RunView.from_item(run_item(status))
    assert view is not None
    assert view.final == final
    assert view.done is (final is not None)


@pytest.mark.parametrize("status", [42, True, ["failed"], {"status": "failed"}])
def test_a_status_that_is_not_text_is_not_done(status: Any) -> None:
    """A number or an object where the status should be is neither shown nor taken as final."""
    view = RunView.from_item(run_item(status))
    assert view is not None
    assert (view.status_raw, view.final) == (None, None)


def test_a_run_is_read_whole() -> None:
    """ID, flow, creation time, etag and status come from their fields."""
    view = RunView.from_item(run_item("Failed"))
    assert view == RunView(
        id=RUN,
        flow_id=FLOW,
        created_at=1_700_000_000_000,
        etag='"1a00-0000"',
        status_raw="Failed",
        final="failed",
        errors=(),
    )


def test_a_run_with_only_an_id_has_every_other_field_empty() -> None:
    """Missing flow, time, etag, metrics: the run is still read, not done."""
    assert RunView.from_item({"id": RUN}) == RunView(id=RUN)


@pytest.mark.parametrize(
    "metrics", [None, "x", {"statusSummary": None}, {"statusSummary": "failed"}, {}]
)
def test_malformed_metrics_read_as_no_status(metrics: Any) -> None:
    """A metrics field of the wrong shape is no status, never an error."""
    view = RunView.from_item({"id": RUN, "metrics": metrics})
    assert view is not None
    assert (view.status_raw, view.final) == (None, None)


@pytest.mark.parametrize(
    "item",
    [None, "a-run", [RUN], {}, {"id": None}, {"id": 7}, {"id": ""}, {"id": "a b"}, {"id": "a\nb"}],
)
def test_an_item_without_a_clean_id_is_no_run(item: Any) -> None:
    """No ID, one that is not text, or one with spaces or controls: None."""
    assert RunView.from_item(item) is None


@pytest.mark.parametrize(
    ("fields", "etag"),
    [
        ({"etag": '"e1"'}, '"e1"'),
        ({"etag": None, "eTag": '"e2"'}, '"e2"'),
        ({"etag": '"e1"', "eTag": '"e2"'}, '"e1"'),
        ({"etag": 5, "eTag": '"e2"'}, '"e2"'),
        ({"etag": None}, None),
    ],
)
def test_etag_is_read_in_either_spelling(fields: dict[str, Any], etag: str | None) -> None:
    """``etag`` (the re-trigger page) and ``eTag`` (the spec) both count."""
    item = run_item("success", **fields)
    if "etag" not in fields:
        del item["etag"]
    view = RunView.from_item(item)
    assert view is not None
    assert view.etag == etag


@pytest.mark.parametrize(
    ("created", "expected"),
    [(1_700_000_000_000, 1_700_000_000_000), (1.7e12, 1_700_000_000_000), ("1700", None),
     (True, None), (None, None), (float("inf"), None)],
)  # fmt: skip
def test_created_at_is_epoch_milliseconds_or_none(created: Any, expected: int | None) -> None:
    """A number is taken; text, a boolean or infinity is not a time."""
    view = RunView.from_item(run_item("success", createdAt=created))
    assert view is not None
    assert view.created_at == expected


def test_a_failed_run_carries_its_errors_safely() -> None:
    """Codes and messages of the run and its activities, one safe line each, repeats once."""
    item = run_item("failed")
    item["metrics"]["statusSummary"]["errors"] = [
        {"code": f"CONNECTOR-1001{HOSTILE}-500", "message": f"copy\nfailed{HOSTILE}"},
        {"code": "CONNECTOR-1001-500", "message": "again"},
        {"nothing": "here"},
    ]
    item["activities"] = [
        {"statusSummary": {"errors": [{"code": "INGEST-1", "message": "promotion"}]}}
    ]
    view = RunView.from_item(item)
    assert view is not None
    assert view.errors[1:] == (("CONNECTOR-1001-500", "again"), ("INGEST-1", "promotion"))
    code, message = view.errors[0]
    for text in (code, message):
        assert text is not None
        assert text.isprintable()
        assert "\x1b" not in text
        assert "\x07" not in text
    assert message is not None
    assert message.startswith("copy failed")


def test_a_partial_run_carries_its_errors_and_a_success_none() -> None:
    """Errors are kept for runs that did not fully succeed, and only for them."""
    errors = [{"code": "X", "message": "y"}]
    partial = run_item("PARTIAL_SUCCESS")
    partial["metrics"]["statusSummary"]["errors"] = errors
    success = run_item("success")
    success["metrics"]["statusSummary"]["errors"] = errors
    assert RunView.from_item(partial).errors == (("X", "y"),)  # type: ignore[union-attr]
    assert RunView.from_item(success).errors == ()  # type: ignore[union-attr]


def test_hostile_status_and_etag_are_quoted_as_one_safe_line() -> None:
    """The server's status and etag reach the view printable, without ESC or BEL."""
    view = RunView.from_item(run_item(f"IN{HOSTILE}_PROGRESS", etag=f'"e{HOSTILE}"'))
    assert view is not None
    for text in (view.status_raw, view.etag):
        assert text is not None
        assert text.isprintable()
        assert "\x1b" not in text
    assert view.final is None


# -- pages and single look-ups ---------------------------------------------------------------------


def test_a_page_gives_its_runs_and_its_next_link() -> None:
    """Items become views, those without an ID are left out, the link is returned as written."""
    body = {
        "items": [run_item("failed"), {"id": None}, run_item("success", id="r2"), "junk"],
        "_links": {"next": {"href": "/runs?continuationToken=t2"}},
    }
    views, href = parse_run_page(body)
    assert [(v.id, v.final) for v in views] == [(RUN, "failed"), ("r2", "success")]
    assert href == "/runs?continuationToken=t2"


@pytest.mark.parametrize("links", [None, {}, {"next": None}, {"next": {"href": "  "}}, []])
def test_a_page_without_a_next_link_is_the_last(links: Any) -> None:
    """No links, an empty one or a blank href: the end, never the unfiltered /runs."""
    body: dict[str, Any] = {"items": []}
    if links is not None:
        body["_links"] = links
    assert parse_run_page(body) == ([], None)


def test_an_unreadable_next_link_stops_rather_than_ends() -> None:
    """A next link without an href is not taken for the end of the listing."""
    with pytest.raises(ListingHalted, match="next-page link"):
        parse_run_page({"items": [], "_links": {"next": {"rel": "next"}}})


@pytest.mark.parametrize("body", [None, [], "x", {}, {"items": None}, {"items": {"a": 1}}])
def test_a_body_that_is_not_a_page_is_refused_not_read_as_empty(body: Any) -> None:
    """An empty result would say "no such run": a body that is no page says so instead."""
    with pytest.raises(ListingHalted, match="not a page of runs"):
        parse_run_page(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"items": [run_item("success")]}, RUN),
        (run_item("success"), RUN),
        ({"items": []}, None),
        ({"items": [run_item("success"), run_item("failed", id="r2")]}, None),
        ({"items": [{"id": None}]}, None),
        (None, None),
        ([run_item("success")], None),
    ],
)
def test_a_single_look_up_gives_its_one_run(body: Any, expected: str | None) -> None:
    """``{"items": [run]}`` or the bare run; anything else holds no run."""
    view = parse_single(body)
    assert (view.id if view is not None else None) == expected


def test_followed_pages_stay_on_the_base_host() -> None:
    """A relative link and an absolute one on the same origin resolve under the base."""
    base = URL(BASE)
    _, href = parse_run_page(
        {"items": [], "_links": {"next": {"href": "/runs?continuationToken=a"}}}
    )
    assert href is not None
    assert str(resolve_next(base, href)) == f"{BASE}/runs?continuationToken=a"
    absolute = f"{BASE}/runs?continuationToken=b"
    assert str(resolve_next(base, absolute)) == absolute


@pytest.mark.parametrize(
    "href",
    [
        "https://evil.test/data/foundation/flowservice/runs?continuationToken=a",
        "//evil.test/runs?continuationToken=a",
        "http://flow.test/data/foundation/flowservice/runs?continuationToken=a",
        "https://user:pw@flow.test/data/foundation/flowservice/runs",
    ],
)
def test_a_next_link_to_another_host_is_refused(href: str) -> None:
    """The token never leaves with a request for another origin (or scheme, or credentials)."""
    _, got = parse_run_page({"items": [], "_links": {"next": {"href": href}}})
    assert got == href
    with pytest.raises(ListingHalted):
        resolve_next(URL(BASE), got)


# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_id", "path"),
    [(RUN, RUN), ("a/b", "a%2Fb"), ("..", "%2E%2E"), (".", "%2E"), ("a?b#c", "a%3Fb%23c")],
)
def test_run_url_keeps_the_run_id_in_its_segment(run_id: str, path: str) -> None:
    """A run ID cannot add a segment, a query or a fragment, nor climb the path."""
    assert str(run_url(BASE, run_id)) == f"{BASE}/runs/{path}"
    assert str(run_url(URL(BASE + "/"), run_id)) == f"{BASE}/runs/{path}"


def test_listing_url_writes_each_filter_as_a_property_parameter() -> None:
    """flowId, status and createdAt are ANDed property parameters; > is escaped, = is not."""
    url = listing_url(
        BASE, flow_id=FLOW, created_after_ms=1_700_000_000_000, status="failed", limit=50
    )
    assert str(url) == (
        f"{BASE}/runs?property=flowId=={FLOW}&property=metrics.statusSummary.status==failed"
        "&property=createdAt%3E1700000000000&limit=50"
    )
    assert url.query.getall("property") == [
        f"flowId=={FLOW}",
        "metrics.statusSummary.status==failed",
        "createdAt>1700000000000",
    ]


def test_listing_url_orders_and_limits() -> None:
    """The newest successful run of a flow is one ordered, limited listing."""
    url = listing_url(BASE, flow_id=FLOW, status="success", orderby="-createdAt", limit=1)
    assert url.query.getall("orderby") == ["-createdAt"]
    assert url.query.getall("limit") == ["1"]
    assert str(listing_url(BASE)) == f"{BASE}/runs"
    assert str(listing_url(BASE, limit=1)) == f"{BASE}/runs?limit=1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flow_id": "f1,metrics.statusSummary.status==success"},
        {"flow_id": "f1==x"},
        {"flow_id": ""},
        {"status": "failed,flowId==x"},
        {"status": "a b"},
        {"orderby": "createdAt&limit=1000"},
        {"limit": 0},
    ],
)
def test_a_value_that_would_change_the_filter_is_refused(kwargs: dict[str, Any]) -> None:
    """A flow ID or status from a server cannot add a filter of its own."""
    with pytest.raises(ValueError):
        listing_params(**kwargs)


def test_list_failed_query_uses_the_same_filters() -> None:
    """list-failed's pages and the look-ups write their filters through one function."""
    from bulkretry._listing.query import ListQuery

    query = ListQuery(flow_ids=(FLOW,), since_ms=1, until_ms=9, page_size=5)
    assert query.params(FLOW) == listing_params(
        flow_id=FLOW, status="failed", started_after_ms=1, started_before_ms=9, limit=5
    )


# -- the client's GET ------------------------------------------------------------------------------


def client_on(session: aiohttp.ClientSession, base: str = BASE) -> FlowServiceClient:
    return FlowServiceClient(
        session,
        base_url=base,
        op="re-trigger",
        api_key="key",
        org_id="ORG@AdobeOrg",
        sandbox="dev",
        timeout=5.0,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def http() -> Any:
    with aioresponses() as mocked:
        yield mocked


async def test_get_sends_the_batch_headers_and_parses_the_body(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A GET carries the token, API key, org and sandbox, asks for JSON, and is counted."""
    http.get(ANY, payload={"items": [run_item("success")]}, headers={"x-request-id": "rq1"})
    client = client_on(session)
    answer = await client.get(run_url(BASE, RUN), "tok")
    assert (answer.status, answer.body_problem, answer.request_id) == (200, None, "rq1")
    assert parse_single(answer.body) == RunView.from_item(run_item("success"))
    [(method, url)] = http.requests
    assert (method, str(url)) == ("GET", f"{BASE}/runs/{RUN}")
    headers = http.requests[(method, url)][0].kwargs["headers"]
    assert headers["Authorization"] == "Bearer tok"
    assert (headers["x-api-key"], headers["x-gw-ims-org-id"]) == ("key", "ORG@AdobeOrg")
    assert (headers["x-sandbox-name"], headers["Accept"]) == ("dev", "application/json")
    assert "Content-Type" not in headers
    assert (client.gets_sent, client.requests_sent) == (1, 0)


async def test_get_says_what_is_wrong_with_a_body_that_is_not_json(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """An HTML page and a body past the cap have no JSON, and say why."""
    http.get(ANY, body="<html>login</html>", content_type="text/html")
    http.get(ANY, body=b'{"items": []}' + b" " * 100)
    client = client_on(session)
    html = await client.get(listing_url(BASE, limit=1), "tok")
    assert (html.body, html.body_problem) == (None, "the body is HTML, not JSON")
    cut = await client.get(listing_url(BASE, limit=1), "tok", cap=20)
    assert cut.body is None
    assert cut.body_problem == "the body is larger than 20 bytes"


async def test_get_translates_a_failure_below_http(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A reset is a TransportError, as for a re-trigger."""
    http.get(ANY, exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(TransportError) as caught:
        await client_on(session).get(listing_url(BASE, limit=1), "tok")
    assert caught.value.kind == "network"


def sim_client(session: aiohttp.ClientSession, sim: Simulator) -> FlowServiceClient:
    """A client with the simulator's base URL and credentials."""
    headers = sim.headers()
    return FlowServiceClient(
        session,
        base_url=sim.base_url,
        op="re-trigger",
        api_key=headers["x-api-key"],
        org_id=headers["x-gw-ims-org-id"],
        sandbox=headers["x-sandbox-name"],
        timeout=5.0,
    )


def sim_token(sim: Simulator) -> str:
    return sim.headers()["Authorization"].removeprefix("Bearer ")


async def test_a_look_up_over_a_socket_reaches_the_simulator() -> None:
    """client.get and parse_single read a simulated run through a real loopback socket."""
    async with Simulator(SimulatorConfig(seed=5, flows=1, runs_per_flow=2)) as sim:
        run_id = sim.failed_run_ids()[0]
        async with aiohttp.ClientSession() as s:
            client = sim_client(s, sim)
            answer = await client.get(run_url(sim.base_url, run_id), sim_token(sim))
            flow = sim.flow_ids()[0]
            page = await client.get(
                listing_url(sim.base_url, flow_id=flow, status="failed", limit=1), sim_token(sim)
            )
    view = parse_single(answer.body)
    assert view is not None
    assert (view.id, view.final, view.flow_id) == (run_id, "failed", sim.flow_ids()[0])
    assert view.etag is not None
    assert view.errors
    views, href = parse_run_page(page.body)
    assert len(views) == 1
    assert views[0].final == "failed"
    assert href is not None
    assert "continuationToken=" in href


# -- the pre-flight --------------------------------------------------------------------------------


class Waits:
    """Stands in for asyncio.sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Renewable:
    """A token provider whose token can be renewed, counting renewals."""

    def __init__(self) -> None:
        self.current = "t1"
        self.renewals = 0

    async def token(self) -> str:
        return self.current

    async def renew(self, stale: str) -> str:
        self.renewals += 1
        self.current = "t2"
        return self.current


SETTINGS = Settings(
    base_url=BASE,
    credentials=Credentials(access_token="tok", api_key="key", org_id="ORG@AdobeOrg"),
    max_attempts=4,
    backoff_base=0.5,
    backoff_cap=2.0,
)


async def check(
    session: aiohttp.ClientSession,
    *,
    base: str = BASE,
    waits: Waits | None = None,
    tokens: Any = None,
    **kwargs: Any,
) -> Any:
    return await preflight(
        client_on(session, base),
        tokens or StaticToken("tok"),
        SETTINGS,
        wait=waits or Waits(),
        rng=random.Random(1),
        **kwargs,
    )


async def test_preflight_passes_on_a_json_object(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """One GET /runs?limit=1 answered 200 with an object passes, and is counted."""
    http.get(ANY, payload={"items": [], "_links": {}})
    result = await check(session)
    assert (result.requests, result.token_renewals) == (1, 0)
    [(method, url)] = http.requests
    assert (method, str(url)) == ("GET", f"{BASE}/runs?limit=1")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ({"status": 404, "payload": {"message": "no route"}}, "HTTP 404"),
        ({"status": 200, "body": "<html>portal</html>", "content_type": "text/html"}, "HTML"),
        ({"status": 200, "payload": [1, 2]}, "an array"),
        ({"status": 200, "body": "", "content_type": "application/json"}, "empty"),
        ({"status": 302, "headers": {"Location": "https://login.test/"}}, "HTTP 302"),
        ({"status": 405, "body": "nope"}, "HTTP 405"),
        ({"status": 400, "body": "<html>bad</html>", "content_type": "text/html"}, "HTTP 400"),
    ],
)
async def test_preflight_refuses_what_is_not_flow_service_at_once(
    http: aioresponses, session: aiohttp.ClientSession, answer: dict[str, Any], words: str
) -> None:
    """A 404, a redirect, HTML or a non-object JSON body: a base URL error, no retry."""
    http.get(ANY, **answer)
    waits = Waits()
    with pytest.raises(BaseUrlError) as caught:
        await check(session, waits=waits)
    message = str(caught.value)
    assert "--base-url" in message
    assert words in message
    assert caught.value.url == BASE
    assert isinstance(caught.value, ConfigurationError)
    assert waits.delays == []
    assert len(http.requests) == 1


@pytest.mark.parametrize(
    ("status", "code"), [(401, "401001"), (403, "403003"), (403, None), (400, "400003")]
)
async def test_preflight_refused_credentials_are_an_authentication_error(
    http: aioresponses, session: aiohttp.ClientSession, status: int, code: str | None
) -> None:
    """401, 403, and a 4xx in Adobe's format: the credentials, org or sandbox; no retry."""
    body = {"message": "refused"} | ({"error_code": code} if code else {})
    http.get(ANY, status=status, payload=body)
    with pytest.raises(AuthenticationError) as caught:
        await check(session)
    assert not isinstance(caught.value, BaseUrlError)
    assert (caught.value.status, caught.value.error_code) == (status, code)
    assert len(http.requests) == 1


async def test_preflight_renews_an_expired_token_once(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """401 401013: a new token, and the same request again with it."""
    http.get(ANY, status=401, payload={"error_code": "401013", "message": "expired"})
    http.get(ANY, payload={"items": []})
    tokens = Renewable()
    result = await check(session, tokens=tokens)
    assert (result.requests, result.token_renewals, tokens.renewals) == (2, 1, 1)
    calls = next(iter(http.requests.values()))
    assert [c.kwargs["headers"]["Authorization"] for c in calls] == ["Bearer t1", "Bearer t2"]


async def test_preflight_with_a_renewed_token_refused_again_stops(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A second 401013 is not renewed again: the credentials are refused."""
    for _ in range(2):
        http.get(ANY, status=401, payload={"error_code": "401013", "message": "expired"})
    with pytest.raises(AuthenticationError, match="renewed access token"):
        await check(session, tokens=Renewable())


async def test_preflight_retries_a_503_then_passes_without_sleeping(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """503 then 200: one backoff wait (through the injected wait), then a pass."""
    http.get(ANY, status=503)
    http.get(ANY, payload={"items": []})
    waits = Waits()
    result = await check(session, waits=waits)
    assert result.requests == 2
    assert len(waits.delays) == 1
    assert 0 <= waits.delays[0] <= 0.5


async def test_preflight_waits_out_a_429_retry_after_and_tells_the_throttle(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A 429's Retry-After is a floor on the wait; on_attempt hears it was throttled."""
    http.get(ANY, status=429, headers={"Retry-After": "3"}, payload={"error_code": "429050"})
    http.get(ANY, payload={"items": []})
    waits = Waits()
    heard: list[tuple[int | None, Decision]] = []
    slots: list[int] = []

    async def acquire() -> None:
        slots.append(1)

    def on_attempt(outcome: Answer | TransportError, decision: Decision) -> None:
        heard.append((outcome.status if isinstance(outcome, Answer) else None, decision))

    await check(session, waits=waits, acquire=acquire, on_attempt=on_attempt)
    assert waits.delays[0] >= 3
    assert [status for status, _ in heard] == [429, 200]
    assert heard[0][1].throttled
    assert len(slots) == 2


async def test_preflight_retries_a_reset_then_passes(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A connection reset is an outage, not a wrong URL: retried."""
    http.get(ANY, exception=aiohttp.ServerDisconnectedError())
    http.get(ANY, payload={"items": []})
    assert (await check(session)).requests == 2


async def test_preflight_gives_up_a_service_that_stays_down(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """503 on every attempt: halted after max_attempts, saying so."""
    for _ in range(SETTINGS.max_attempts):
        http.get(ANY, status=503)
    waits = Waits()
    with pytest.raises(BatchHalted, match="gave up after 4 attempts") as caught:
        await check(session, waits=waits)
    assert not isinstance(caught.value, ConfigurationError)
    assert len(waits.delays) == SETTINGS.max_attempts - 1


async def test_preflight_tls_failure_points_at_the_base_url_and_ca_bundle(
    http: aioresponses, session: aiohttp.ClientSession
) -> None:
    """A certificate that cannot be verified is a setting to fix, not an outage."""
    key: Any = ConnectionKey(
        host="flow.test",
        port=443,
        is_ssl=True,
        ssl=True,
        proxy=None,
        proxy_auth=None,
        proxy_headers_hash=None,
    )
    error = ssl.SSLCertVerificationError(1, "unable to get local issuer certificate")
    http.get(ANY, exception=aiohttp.ClientConnectorCertificateError(key, error))
    with pytest.raises(BaseUrlError, match="--ca-bundle"):
        await check(session)


def closed_port() -> int:
    """Return a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_preflight_to_a_refused_port_names_the_base_url_without_retrying() -> None:
    """Connection refused is a wrong URL: one attempt, one line naming --base-url."""
    base = f"http://127.0.0.1:{closed_port()}/flowservice"
    waits = Waits()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(BaseUrlError, match="refuses connections") as caught:
            await check(s, base=base, waits=waits)
    assert f"--base-url {base}" in str(caught.value)
    assert waits.delays == []


class NoSuchHost(AbstractResolver):
    """A resolver that knows no host, as DNS does for a typo; counts the look-ups."""

    def __init__(self) -> None:
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_preflight_to_an_unknown_host_makes_one_dns_look_up() -> None:
    """A host typo is not an outage: one look-up, a base URL error, no retries."""
    resolver = NoSuchHost()
    base = "https://platfrom.adobe.io/data/foundation/flowservice"
    waits = Waits()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as s:
        with pytest.raises(BaseUrlError, match=r"platfrom\.adobe\.io is not found") as caught:
            await check(s, base=base, waits=waits)
    assert "--base-url" in str(caught.value)
    assert (resolver.lookups, waits.delays) == (1, [])


async def test_preflight_passes_against_the_simulator() -> None:
    """Over a real socket, the simulator's GET /runs?limit=1 is a pass in one request."""
    async with Simulator(SimulatorConfig(seed=2, flows=1, runs_per_flow=1)) as sim:
        async with aiohttp.ClientSession() as s:
            client = sim_client(s, sim)
            result = await preflight(client, StaticToken(sim_token(sim)), SETTINGS, wait=Waits())
        gets = [r for r in sim.requests if r.method == "GET"]
    assert result.requests == 1
    assert [(r.path.endswith("/runs"), r.query.get("limit"), r.status) for r in gets] == [
        (True, "1", 200)
    ]


def test_only_a_missing_host_or_a_refusal_is_unreachable() -> None:
    """Timeouts, resets and an unreachable network are outages: worth another try."""
    key: Any = ConnectionKey(
        host="h.test",
        port=443,
        is_ssl=True,
        ssl=True,
        proxy=None,
        proxy_auth=None,
        proxy_headers_hash=None,
    )

    def caused_by(exc: BaseException) -> TransportError:
        error = TransportError("x", kind="network", sent=False)
        error.__cause__ = exc
        return error

    refused = aiohttp.ClientConnectorError(key, OSError(errno.ECONNREFUSED, "refused"))
    dns = aiohttp.ClientConnectorDNSError(key, OSError(-2, "Name or service not known"))
    assert unreachable(caused_by(refused)) == "h.test port 443 refuses connections"
    assert unreachable(caused_by(dns)) == "the host h.test is not found (DNS)"
    for outage in (
        aiohttp.ClientConnectorError(key, OSError(errno.ENETUNREACH, "unreachable")),
        aiohttp.ClientProxyConnectionError(key, OSError(errno.ECONNREFUSED, "refused")),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
    ):
        assert unreachable(caused_by(outage)) is None
    assert unreachable(TransportError("x", kind="network", sent=True)) is None
