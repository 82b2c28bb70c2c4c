"""The pre-flight: a wrong base URL or refused credentials stop the batch at once, exit 2.

Against the simulator over a socket, a port nothing listens on, a name that does not resolve,
and a web server that is not Flow Service. Every input line still gets its record
(``not_attempted``), and no re-trigger is sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from helpers_resume import DEAD, bulkretry, id_lines, records, uuid
from test_hostile import web_server

from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

IDS = [uuid(i) for i in range(20)]


def ids_file(tmp_path: Path) -> Path:
    path = tmp_path / "ids.txt"
    path.write_bytes(id_lines(IDS))
    return path


def assert_all_not_attempted(out: Path) -> None:
    rows = records(out)
    assert sorted(r["line"] for r in rows) == list(range(1, len(IDS) + 1))
    assert {r["outcome"] for r in rows} == {"not_attempted"}


async def test_a_good_base_url_passes_with_one_get_before_the_first_re_trigger(
    tmp_path: Path,
) -> None:
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS))) as sim:
        done = await bulkretry(
            "run", str(ids_file(tmp_path)), "-o", str(tmp_path / "o"), base_url=sim.base_url
        )
        methods = [(r.method, r.path) for r in sim.requests if r.path.startswith("/runs")]
    assert done.code == 0, done.err
    assert methods[0] == ("GET", "/runs")
    assert [m for m, _ in methods].count("GET") == 1
    assert "look-up" not in done.err  # no lost answer to speak of


@pytest.mark.parametrize(
    "base_url", [DEAD, "https://no-such-host.invalid"], ids=["refused", "no-such-host"]
)
async def test_an_unreachable_base_url_is_exit_2_naming_it(tmp_path: Path, base_url: str) -> None:
    """Connection refused or a name that does not resolve is a typo, not an outage."""
    out = tmp_path / "o"
    # No proxy (the harness points one at a closed port): the name must be looked up for real.
    no_proxy = dict.fromkeys(("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"), "")
    done = await bulkretry(
        "run", str(ids_file(tmp_path)), "-o", str(out), base_url=base_url, env=no_proxy
    )
    assert done.code == 2, done.err
    assert "--base-url" in done.err
    assert "Traceback" not in done.err
    assert_all_not_attempted(out)


async def test_a_server_that_is_not_flow_service_is_exit_2(tmp_path: Path) -> None:
    """A 200 with an HTML page (a portal, a proxy's login page) is not Flow Service."""

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>welcome</html>", content_type="text/html")

    out = tmp_path / "o"
    async with web_server(html) as server:
        done = await bulkretry(
            "run", str(ids_file(tmp_path)), "-o", str(out), base_url=server.base_url
        )
        posts = [s for s in server.seen if s.method == "POST"]
    assert done.code == 2, done.err
    assert "does not look like Flow Service" in done.err
    assert posts == []
    assert_all_not_attempted(out)


async def test_refused_credentials_are_exit_2_before_any_re_trigger(tmp_path: Path) -> None:
    out = tmp_path / "o"
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS))) as sim:
        done = await bulkretry(
            "run",
            str(ids_file(tmp_path)),
            "-o",
            str(out),
            base_url=sim.base_url,
            env={"BULKRETRY_ACCESS_TOKEN": "not-the-token"},
        )
        retriggers = sum(sim.retrigger_counts().values())
    assert done.code == 2, done.err
    assert "API key" in done.err
    assert done.err.count("; check ") == 1  # said once, not twice in other words
    assert retriggers == 0
    assert_all_not_attempted(out)


async def test_a_refused_sandbox_says_what_to_check_once(tmp_path: Path) -> None:
    """The policy's reason names what to check already: the start-up does not say it again."""
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS))) as sim:
        done = await bulkretry(
            "run",
            str(ids_file(tmp_path)),
            "-o",
            str(tmp_path / "o"),
            base_url=sim.base_url,
            env={"BULKRETRY_SANDBOX": "not-a-sandbox"},
        )
    assert done.code == 2, done.err
    assert "sandbox" in done.err
    assert done.err.count("; check ") == 1, done.err


@pytest.mark.parametrize(
    ("flags", "gets"),
    [(("--no-preflight",), 0), (("--dry-run",), 0), (("--dry-run", "--preflight"), 1)],
    ids=["no-preflight", "dry-run", "dry-run-preflight"],
)
async def test_the_pre_flight_is_skipped_or_asked_for(
    tmp_path: Path, flags: tuple[str, ...], gets: int
) -> None:
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS))) as sim:
        done = await bulkretry(
            "run", str(ids_file(tmp_path)), "-o", str(tmp_path / "o"), *flags, base_url=sim.base_url
        )
        seen = [r.method for r in sim.requests if r.path == "/runs"]
    assert done.code == 0, done.err
    assert seen.count("GET") == gets
