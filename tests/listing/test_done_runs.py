"""What a listing leaves out: runs re-triggered already (results files, a state file) and runs
superseded by a newer successful run of their flow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from bulkretry._config import Credentials, Settings
from bulkretry._exceptions import InputError, ListingHalted, StateError
from bulkretry._ledger.ledger import BatchIdentity, Ledger
from bulkretry._listing.exclusions import FROM_RESULTS, FROM_STATE, DoneRuns
from bulkretry._listing.lister import ListingStats, ListQuery, list_failed_runs
from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

IDENT = BatchIdentity(
    base_url="https://platform.example.test/data/foundation/flowservice",
    org_id="ORG@AdobeOrg",
    sandbox="prod",
    op="re-trigger",
)
R1, R2, R3, R4, R5, R6, R7 = (f"{i}fb0418e-1804-45d6-8d56-dd51f05c0baf" for i in range(1, 8))


def results_line(run_id: str, outcome: str, **fields: Any) -> bytes:
    """One results line as ``bulkretry run`` writes it (the fields the evidence reads)."""
    line = {"run_id": run_id, "outcome": outcome, "new_run_id": None, "etag": None, **fields}
    return orjson.dumps(line) + b"\n"


def write(path: Path, *lines: bytes) -> str:
    path.write_bytes(b"".join(lines))
    return str(path)


def make_state(path: Path, states: dict[str, str]) -> str:
    """Create a closed ledger whose runs ended in the given states."""
    with Ledger.open(str(path), IDENT) as ledger:
        ledger.admit_many((run_id, "in.txt", i + 1) for i, run_id in enumerate(states))
        for run_id, state in states.items():
            done = state in ("retriggered", "already_retriggered")
            ledger.outcome(
                run_id,
                state,
                new_run_id="5fb0418e-0000-45d6-8d56-dd51f05c0baf" if done else None,
                etag=None,
                attempts=1,
                ambiguous=0,
                error=None,
                http_status=200 if done else 500,
                request_id=None,
            )
    return str(path)


# -- DoneRuns ------------------------------------------------------------------------------------


def test_results_lines_that_show_a_re_trigger_leave_their_run_out(tmp_path: Path) -> None:
    """retriggered, already_retriggered, and skipped standing for either: done; the rest not."""
    path = write(
        tmp_path / "results.jsonl",
        results_line(R1, "retriggered"),
        results_line(R2, "already_retriggered"),
        results_line(R3, "skipped", prior_outcome="retriggered"),
        results_line(R4, "failed"),
        results_line(R5, "in_doubt"),
        results_line(R6, "skipped"),
        R7.encode() + b"\n",
    )
    done = DoneRuns.load([path])
    assert [done.reason(r) for r in (R1, R2, R3)] == [FROM_RESULTS] * 3
    assert [done.reason(r) for r in (R4, R5, R6, R7)] == [None] * 4
    assert done.results_lines == 6


def test_the_best_evidence_wins_in_any_order_and_any_case(tmp_path: Path) -> None:
    """A later failed line does not undo a re-trigger; an upper-case ID is the same run."""
    first = write(tmp_path / "a.jsonl", results_line(R1.upper(), "retriggered"))
    second = write(tmp_path / "b.jsonl", results_line(R1, "failed"), results_line(R2, "failed"))
    done = DoneRuns.load([second, first])
    assert done.reason(R1) == FROM_RESULTS
    assert done.reason(R1.upper()) == FROM_RESULTS
    assert done.reason(R2) is None


def test_a_missing_results_file_is_an_input_error(tmp_path: Path) -> None:
    """--exclude of a file that is not there stops before any request (exit 2)."""
    with pytest.raises(InputError, match="not found"):
        DoneRuns.load([str(tmp_path / "nope.jsonl")])


def test_the_state_file_leaves_out_the_runs_it_records_re_triggered(tmp_path: Path) -> None:
    """retriggered and already_retriggered runs are done; failed and in_doubt ones are not."""
    path = make_state(
        tmp_path / "b.db",
        {R1: "retriggered", R2: "already_retriggered", R3: "failed", R4: "in_doubt"},
    )
    before = (tmp_path / "b.db").read_bytes()
    done = DoneRuns.load(state=path)
    assert [done.reason(r) for r in (R1, R2, R3, R4, R5)] == [FROM_STATE] * 2 + [None] * 3
    assert done.reason(R1.upper()) == FROM_STATE
    assert (done.state_runs, done.state_missing) == (2, False)
    # Read-only: not a byte of the state file written (SQLite may add its -shm beside it).
    assert (tmp_path / "b.db").read_bytes() == before


@pytest.mark.parametrize("content", [None, b""])
def test_a_state_file_not_created_yet_leaves_nothing_out(
    tmp_path: Path, content: bytes | None
) -> None:
    """In `list-failed --state b.db | run --state b.db` the batch creates the file later."""
    path = tmp_path / "b.db"
    if content is not None:
        path.write_bytes(content)
    done = DoneRuns.load(state=str(path))
    assert done.state_missing
    assert not done
    assert done.reason(R1) is None


def test_a_file_that_is_no_state_file_is_refused(tmp_path: Path) -> None:
    """A text file given as --state is a StateError, not an empty exclusion."""
    path = write(tmp_path / "notes.txt", b"hello\n")
    with pytest.raises(StateError):
        DoneRuns.load(state=path)


# -- over the simulator --------------------------------------------------------------------------


def settings_for(base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": base,
        "credentials": Credentials(
            access_token="sim-access-token",
            api_key="sim-api-key",
            org_id="SIMORG0000000000000000@AdobeOrg",
        ),
        "rate": 10_000.0,
        "burst": 100,
        "max_attempts": 3,
        "backoff_base": 0.01,
        "backoff_cap": 0.02,
    }
    values.update(overrides)
    return Settings(**values)


async def nowait(delay: float) -> None:
    """Stand in for asyncio.sleep: never sleep."""


async def collect(base: str, query: ListQuery, **kwargs: Any) -> tuple[list[str], ListingStats]:
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        stats = await list_failed_runs(
            settings_for(base),
            query,
            lambda runs: ids.extend(r.run_id for r in runs),
            session=session,
            wait=nowait,
            **kwargs,
        )
    return ids, stats


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(seed=4, flows=3, runs_per_flow=6, other_runs_per_flow=6)
    async with Simulator(config) as s:
        yield s


def field(sim: Simulator, run_id: str, *path: str) -> Any:
    value: Any = sim.run(run_id)
    for name in path:
        value = value[name]
    return value


def failed_of(sim: Simulator, flow: str) -> list[str]:
    return [r for r in sim.failed_run_ids() if field(sim, r, "flowId") == flow]


def newest_success(sim: Simulator, flow: str) -> int:
    return max(
        field(sim, r, "createdAt")
        for r in sim.run_ids("success")
        if field(sim, r, "flowId") == flow
    )


def lookups_of(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.method == "GET" and "orderby" in r.query]


async def test_done_runs_are_left_out_of_the_listing_and_counted(
    sim: Simulator, tmp_path: Path
) -> None:
    """Runs re-triggered per a results file and per the state file are not listed again."""
    flow = sim.flow_ids()[0]
    failed = failed_of(sim, flow)
    results = write(
        tmp_path / "r.jsonl",
        results_line(failed[0], "retriggered"),
        results_line(failed[1], "failed"),
    )
    state = make_state(tmp_path / "b.db", {failed[2]: "already_retriggered", failed[3]: "failed"})
    done = DoneRuns.load([results], state)
    ids, stats = await collect(sim.base_url, ListQuery(flow_ids=(flow,), page_size=2), done=done)
    assert sorted(ids) == sorted(set(failed) - {failed[0], failed[2]})
    assert stats.done == {FROM_RESULTS: 1, FROM_STATE: 1}
    assert stats.runs == len(failed) - 2
    assert "2 left out as re-triggered already (1 by results files, 1 by the state file)" in (
        stats.summary()
    )


async def test_superseded_failed_runs_are_left_out_with_one_look_up_per_flow(
    sim: Simulator,
) -> None:
    """A failed run created before its flow's newest success is left out; one GET per flow."""
    flows = sim.flow_ids()
    ids, stats = await collect(
        sim.base_url, ListQuery(flow_ids=tuple(flows), page_size=4), skip_superseded=True
    )
    expected = {
        run
        for flow in flows
        for run in failed_of(sim, flow)
        if field(sim, run, "createdAt") >= newest_success(sim, flow)
    }
    superseded = set(sim.failed_run_ids()) - expected
    # The seed gives both kinds, so that the test can tell them apart.
    assert expected
    assert superseded
    assert set(ids) == expected
    assert (stats.superseded, stats.lookups) == (len(superseded), len(flows))
    assert stats.requests == stats.pages + len(flows)
    lookups = lookups_of(sim)
    assert len(lookups) == len(flows)
    for rec in lookups:
        assert rec.query.getall("limit") == ["1"]
        assert rec.query.getall("orderby") == ["-createdAt"]
        assert "metrics.statusSummary.status==success" in rec.query.getall("property")
    assert f"{len(superseded)} left out as superseded" in stats.summary()


async def test_all_flows_looks_up_each_flow_that_has_failed_runs_once(sim: Simulator) -> None:
    """Without --flow-id, flows are found in the pages: one look-up each, however many pages."""
    _, stats = await collect(
        sim.base_url, ListQuery(all_flows=True, page_size=2), skip_superseded=True
    )
    assert stats.pages > len(sim.flow_ids())
    assert stats.lookups == len(sim.flow_ids())
    assert len(lookups_of(sim)) == len(sim.flow_ids())


async def test_without_skip_superseded_no_look_up_is_made(sim: Simulator) -> None:
    """The option is opt-in: incremental flows need every run."""
    ids, stats = await collect(sim.base_url, ListQuery(all_flows=True))
    assert sorted(ids) == sorted(sim.failed_run_ids())
    assert (stats.lookups, stats.superseded) == (0, 0)
    assert lookups_of(sim) == []
    assert "superseded" not in stats.summary()


async def test_a_refused_look_up_stops_the_listing_naming_it(sim: Simulator) -> None:
    """The look-up shares the pages' decisions: a 400 halts, saying it was the look-up."""
    sim.script(None, [200, 400])
    flow = sim.flow_ids()[0]
    with pytest.raises(ListingHalted, match="newest successful run of flow"):
        await collect(sim.base_url, ListQuery(flow_ids=(flow,)), skip_superseded=True)


async def test_a_server_ignoring_order_and_filters_cannot_over_exclude() -> None:
    """The newest success among what came back counts, and only of the flow asked for."""
    success_lookups: list[str] = []

    def run(run_id: str, status: str, created: int, flow: str = "f1") -> dict[str, Any]:
        return {
            "id": run_id,
            "flowId": flow,
            "createdAt": created,
            "metrics": {"statusSummary": {"status": status}},
        }

    async def handle(request: web.Request) -> web.Response:
        if any("==success" in p for p in request.query.getall("property")):
            success_lookups.append(str(request.url))
            items = [
                run("s1", "success", 200),
                run("s2", "Success", 300),
                run("x", "success", 999, flow="f2"),
                run("q", "inProgress", 998),
            ]
        else:
            items = [run("a", "failed", 100), run("b", "failed", 250), run("c", "failed", 400)]
        return web.json_response({"items": items, "_links": {}})

    app = web.Application()
    app.router.add_get("/runs", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ids, stats = await collect(base, ListQuery(flow_ids=("f1",)), skip_superseded=True)
    finally:
        await runner.cleanup()
    assert ids == ["c"]
    assert (stats.superseded, stats.lookups, len(success_lookups)) == (2, 1, 1)
