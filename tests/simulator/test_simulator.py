"""The simulator's re-trigger endpoint, its gateway checks, its seeded state and its public API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest

import bulkretry._simulator as simulator
from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(flows=2, runs_per_flow=3, other_runs_per_flow=3)) as s:
        yield s


async def retrigger(
    session: aiohttp.ClientSession,
    sim: Simulator,
    run_id: str,
    *,
    op: str | None = "re-trigger",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, object], Mapping[str, str]]:
    params = {} if op is None else {"op": op}
    async with session.post(
        f"{sim.base_url}/runs/{run_id}/action",
        params=params,
        headers=sim.headers() if headers is None else headers,
    ) as resp:
        return resp.status, await resp.json(), resp.headers


def without(headers: Mapping[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (lambda h: without(h, "Authorization"), 403, "403010"),
        (lambda h: {**h, "Authorization": "Basic c2ltOnNpbQ=="}, 403, "403010"),
        (lambda h: {**h, "Authorization": "Bearer "}, 403, "403010"),
        (lambda h: {**h, "Authorization": "Bearer not-a-token"}, 401, "401013"),
        (lambda h: without(h, "x-api-key"), 403, "403000"),
        (lambda h: {**h, "x-api-key": "someone-else"}, 403, "403003"),
        (lambda h: without(h, "x-gw-ims-org-id"), 400, "400003"),
    ],
    ids=[
        "no-token",
        "basic-auth",
        "empty-bearer",
        "bad-token",
        "no-api-key",
        "bad-api-key",
        "no-org",
    ],
)
async def test_gateway_refuses_bad_headers_with_adobe_codes(
    session: aiohttp.ClientSession, sim: Simulator, change: object, status: int, code: str
) -> None:
    """A missing or wrong gateway header gets Adobe's status and error_code, nothing else."""
    assert callable(change)
    run_id = sim.failed_run_ids()[0]
    got, body, headers = await retrigger(session, sim, run_id, headers=change(sim.headers()))
    assert (got, body["error_code"]) == (status, code)
    assert isinstance(body["message"], str)
    assert headers["x-request-id"]
    assert sim.retrigger_counts() == {}


@pytest.mark.parametrize(
    ("dropped", "code"),
    [
        (("Authorization", "x-api-key", "x-gw-ims-org-id"), "403010"),
        (("x-api-key", "x-gw-ims-org-id"), "403000"),
    ],
)
async def test_gateway_checks_headers_in_adobe_order(
    session: aiohttp.ClientSession, sim: Simulator, dropped: tuple[str, ...], code: str
) -> None:
    """With several headers wrong, the first in token, API key, org order is reported."""
    headers = {k: v for k, v in sim.headers().items() if k not in dropped}
    _, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], headers=headers)
    assert body["error_code"] == code


async def test_bad_token_is_reported_before_missing_api_key(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """An invalid token wins over a missing API key."""
    headers = without({**sim.headers(), "Authorization": "Bearer nope"}, "x-api-key")
    status, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], headers=headers)
    assert (status, body["error_code"]) == (401, "401013")


async def test_wrong_org_is_refused(session: aiohttp.ClientSession, sim: Simulator) -> None:
    """An org the token does not belong to is refused by the gateway."""
    headers = {**sim.headers(), "x-gw-ims-org-id": "OTHER@AdobeOrg"}
    status, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], headers=headers)
    assert (status, body["error_code"]) == (403, "403025")


async def test_missing_sandbox_is_refused_in_flow_service_format(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Without x-sandbox-name Flow Service answers 400 in its own error format."""
    headers = without(sim.headers(), "x-sandbox-name")
    status, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], headers=headers)
    assert status == 400
    assert body["type"] == "https://ns.adobe.com/aep/errors/FLOW-1100-400"


async def test_unknown_sandbox_is_forbidden(session: aiohttp.ClientSession, sim: Simulator) -> None:
    """A sandbox other than the configured one is forbidden."""
    headers = {**sim.headers(), "x-sandbox-name": "dev"}
    status, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], headers=headers)
    assert (status, body["status"]) == (403, 403)


async def test_optional_sandbox_header_serves_the_default_sandbox(
    session: aiohttp.ClientSession,
) -> None:
    """With sandbox_header="optional", a request without the header is served."""
    async with Simulator(SimulatorConfig(sandbox_header="optional")) as sim:
        headers = without(sim.headers(), "x-sandbox-name")
        status, _, _ = await retrigger(session, sim, sim.failed_run_ids()[0], headers=headers)
    assert status == 200


@pytest.mark.parametrize(
    "op", ["re-trigger", "RE_TRIGGER", "Re-Trigger", "re_trigger", "RE-TRIGGER"]
)
async def test_op_is_accepted_in_any_case_and_spelling(
    session: aiohttp.ClientSession, sim: Simulator, op: str
) -> None:
    """Both the documented and the specified op are accepted, whatever their letter case."""
    status, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], op=op)
    assert status == 200, body


@pytest.mark.parametrize("op", ["enable", "retrigger", "", None])
async def test_unsupported_op_is_refused_with_1434(
    session: aiohttp.ClientSession, sim: Simulator, op: str | None
) -> None:
    """Any other op, or none, is refused with FLOW-1434-400 and re-triggers nothing."""
    status, body, _ = await retrigger(session, sim, sim.failed_run_ids()[0], op=op)
    assert (status, body["type"]) == (400, "https://ns.adobe.com/aep/errors/FLOW-1434-400")
    assert sim.retrigger_counts() == {}


async def test_unknown_run_is_not_found_in_flow_service_format(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """An unknown run ID gets 404 FLOW-1101-404 with the request's ID in the report."""
    status, body, headers = await retrigger(session, sim, UNKNOWN_RUN)
    assert status == 404
    assert body["type"] == "https://ns.adobe.com/aep/errors/FLOW-1101-404"
    assert (body["title"], body["status"]) == ("Not Found", 404)
    report = body["report"]
    assert isinstance(report, dict)
    assert report["request-id"] == headers["x-request-id"]
    assert UNKNOWN_RUN in report["detailed-message"]


async def test_run_that_did_not_fail_cannot_be_retriggered(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """A successful or running run is refused with FLOW-1409-400."""
    for status_name in ("success", "inProgress"):
        run_id = sim.run_ids(status_name)[0]
        status, body, _ = await retrigger(session, sim, run_id)
        assert (status, body["type"]) == (400, "https://ns.adobe.com/aep/errors/FLOW-1409-400")
    assert sim.retrigger_counts() == {}


async def test_second_retrigger_of_a_run_is_refused(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """A run already re-triggered is refused with FLOW-1409-400 and counted once."""
    run_id = sim.failed_run_ids()[0]
    first, _, _ = await retrigger(session, sim, run_id)
    second, body, _ = await retrigger(session, sim, run_id)
    assert (first, second) == (200, 400)
    assert body["type"] == "https://ns.adobe.com/aep/errors/FLOW-1409-400"
    assert sim.retrigger_counts() == {run_id: 1}


async def test_allow_repeat_retrigger_counts_duplicates(session: aiohttp.ClientSession) -> None:
    """With allow_repeat_retrigger, a run can be re-triggered again and each time is counted."""
    async with Simulator(SimulatorConfig(allow_repeat_retrigger=True)) as sim:
        run_id = sim.failed_run_ids()[0]
        answers = [await retrigger(session, sim, run_id) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert len({a[1]["id"] for a in answers}) == 3
    assert sim.retrigger_counts() == {run_id: 3}
    assert [r.run_id for r in sim.retriggers] == [run_id] * 3


async def test_docs_shape_answers_new_id_and_quoted_etag(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """By default the answer is {"id","etag"}; the new run exists in the same flow, in progress."""
    run_id = sim.failed_run_ids()[0]
    status, body, _ = await retrigger(session, sim, run_id)
    assert status == 200
    assert set(body) == {"id", "etag"}
    new_id, etag = body["id"], body["etag"]
    assert isinstance(new_id, str)
    assert isinstance(etag, str)
    assert str(uuid.UUID(new_id)) == new_id != run_id
    assert etag.startswith('"')
    assert etag.endswith('"')
    new, old = sim.run(new_id), sim.run(run_id)
    assert new is not None
    assert old is not None
    assert new["flowId"] == old["flowId"]
    metrics = new["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["statusSummary"] == {"status": "inProgress"}


async def test_spec_shape_answers_a_whole_run_with_etag_field(
    session: aiohttp.ClientSession,
) -> None:
    """With response_shape="spec", the answer is the new run, its etag under "eTag"."""
    async with Simulator(SimulatorConfig(response_shape="spec")) as sim:
        run_id = sim.failed_run_ids()[0]
        status, body, _ = await retrigger(session, sim, run_id)
        old = sim.run(run_id)
    assert status == 200
    assert old is not None
    assert body["flowId"] == old["flowId"]
    assert isinstance(body["eTag"], str)
    assert "etag" not in body
    metrics = body["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["statusSummary"] == {"status": "inProgress"}
    assert body["id"] != run_id


async def test_every_answer_carries_a_distinct_request_id(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Successes, Flow Service errors and gateway errors all carry x-request-id."""
    run_id = sim.failed_run_ids()[0]
    ids = [
        (await retrigger(session, sim, run_id))[2]["x-request-id"],
        (await retrigger(session, sim, run_id))[2]["x-request-id"],
        (await retrigger(session, sim, run_id, headers={}))[2]["x-request-id"],
    ]
    assert len(set(ids)) == 3
    assert [r.request_id for r in sim.requests] == ids


async def test_requests_are_recorded_with_headers_and_outcome(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """Each request is recorded: method, path, query, headers, status, and whether work was done."""
    run_id = sim.failed_run_ids()[0]
    await retrigger(session, sim, run_id, op="RE_TRIGGER")
    await retrigger(session, sim, UNKNOWN_RUN)
    first, second = sim.requests
    assert (first.index, first.method, first.path) == (1, "POST", f"/runs/{run_id}/action")
    assert first.query["op"] == "RE_TRIGGER"
    assert first.headers["x-api-key"] == sim.config.api_key
    assert first.headers["Authorization"] == f"Bearer {sim.config.access_token}"
    assert (first.status, first.outcome, first.performed, first.run_id) == (
        200,
        "answered",
        True,
        run_id,
    )
    assert (second.status, second.performed) == (404, False)
    assert sim.stats == {200: 1, 404: 1}


async def test_get_run_answers_it_in_a_one_item_list(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """GET /runs/{RUN_ID} answers {"items": [run]} as the spec says, or 404."""
    run_id = sim.failed_run_ids()[0]
    async with session.get(f"{sim.base_url}/runs/{run_id}", headers=sim.headers()) as resp:
        body = await resp.json()
    assert body == {"items": [sim.run(run_id)]}
    run = body["items"][0]
    assert run["metrics"]["statusSummary"]["status"] == "failed"
    assert run["metrics"]["statusSummary"]["errors"][0]["code"]
    assert run["metrics"]["durationSummary"]["completedAtUTC"] >= run["createdAt"]
    async with session.get(f"{sim.base_url}/runs/{UNKNOWN_RUN}", headers=sim.headers()) as resp:
        assert resp.status == 404


async def test_get_flow_answers_a_known_flow_and_404_for_any_other(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    """GET /flows/{FLOW_ID}: {"items": [flow]} for a flow it serves, else FLOW-1101-404."""
    flow = sim.flow_ids()[0]
    async with session.get(f"{sim.base_url}/flows/{flow}", headers=sim.headers()) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [item["id"] for item in body["items"]] == [flow]
    unknown = "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d"
    async with session.get(f"{sim.base_url}/flows/{unknown}", headers=sim.headers()) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["type"] == "https://ns.adobe.com/aep/errors/FLOW-1101-404"
    assert unknown in body["report"]["detailed-message"]
    assert sim.endpoint_counts()["get-flow"] == 2


def test_seeded_state_is_deterministic() -> None:
    """The same seed gives the same flows and runs; another seed gives others."""
    config = SimulatorConfig(seed=7, flows=4, runs_per_flow=5)
    one, two = Simulator(config), Simulator(config)
    other = Simulator(SimulatorConfig(seed=8, flows=4, runs_per_flow=5))
    assert one.failed_run_ids() == two.failed_run_ids() != other.failed_run_ids()
    assert one.flow_ids() == two.flow_ids()
    assert one.run_ids() == two.run_ids()


def test_seeded_runs_are_lower_case_uuids_with_some_not_failed() -> None:
    """Seeding makes flows x runs_per_flow failed runs, as lower-case UUIDs, among others."""
    sim = Simulator(SimulatorConfig(flows=3, runs_per_flow=4, other_runs_per_flow=3))
    failed = sim.failed_run_ids()
    assert len(failed) == len(set(failed)) == 12
    assert all(str(uuid.UUID(r)) == r for r in failed)
    assert len(sim.run_ids()) == 21
    assert sim.run_ids("success")
    assert sim.run_ids("inProgress")
    assert failed == sim.run_ids("failed")


async def test_loaded_run_ids_are_failed_runs_in_given_order(
    session: aiohttp.ClientSession,
) -> None:
    """Run IDs given in the config are served as failed runs, in the order given."""
    given = tuple(str(uuid.UUID(int=i, version=4)) for i in range(1, 6))
    async with Simulator(SimulatorConfig(run_ids=given)) as sim:
        assert sim.failed_run_ids() == list(given)
        status, _, _ = await retrigger(session, sim, given[3])
        missing, _, _ = await retrigger(session, sim, UNKNOWN_RUN)
    assert (status, missing) == (200, 404)


async def test_accept_any_accepts_every_uuid_every_time(session: aiohttp.ClientSession) -> None:
    """In accept-any mode any UUID is re-triggered each time, and only counts are kept."""
    config = SimulatorConfig(accept_any=True, record_requests=False)
    async with Simulator(config) as sim:
        answers = [(await retrigger(session, sim, UNKNOWN_RUN))[0] for _ in range(3)]
        bad, _, _ = await retrigger(session, sim, "not-a-uuid")
    assert answers == [200, 200, 200]
    assert bad == 404
    assert sim.retrigger_counts() == {UNKNOWN_RUN: 3}
    assert (sim.requests, sim.retriggers, sim.request_count) == ([], [], 4)


async def test_accept_any_still_checks_headers(session: aiohttp.ClientSession) -> None:
    """Accept-any mode keeps the gateway checks."""
    async with Simulator(SimulatorConfig(accept_any=True)) as sim:
        status, _, _ = await retrigger(session, sim, UNKNOWN_RUN, headers={})
    assert status == 403


@pytest.mark.parametrize(
    "bad",
    [
        {"error_rate": 0.7, "reset_rate": 0.7},
        {"hang_rate": -0.1},
        {"response_shape": "nope"},
        {"retry_after": "later"},
        {"port": 70000},
        {"base_path": "flowservice/"},
        {"list_default_limit": 0},
    ],
)
def test_config_refuses_nonsense(bad: dict[str, object]) -> None:
    """A configuration that cannot work is refused when it is built."""
    with pytest.raises(ValueError):
        SimulatorConfig(**bad)  # type: ignore[arg-type]


def test_exported_members_are_complete_and_sorted() -> None:
    """__all__ lists every public name of the package, sorted."""
    public = {
        name
        for name, value in vars(simulator).items()
        if not name.startswith("_") and not isinstance(value, type(simulator))
    } - {"annotations"}
    assert set(simulator.__all__) == public
    # Sorted as ruff's RUF022 sorts: constants, then classes, then the rest.
    assert simulator.__all__ == sorted(
        simulator.__all__, key=lambda n: (not n.isupper(), not n[:1].isupper(), n)
    )


def test_repr_shows_state() -> None:
    """The simulator's repr shows where it listens and what it holds."""
    sim = Simulator(SimulatorConfig(flows=1, runs_per_flow=2, other_runs_per_flow=0))
    assert "not listening" in repr(sim)
    assert "runs=2" in repr(sim)
