"""The seam for faking HTTP: the client is given its session, and the session its connector.

No network and no aioresponses: the session here reaches an in-process aiohttp application
through an :class:`aiohttp.UnixConnector` (a socket in a temporary directory), whatever host the
base URL names. Nothing of the client is patched, so these tests hold for any aiohttp release
the client supports, which aioresponses cannot promise (it breaks on aiohttp 3.14).
"""

from __future__ import annotations

import random
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bulkretry._config import Settings
from bulkretry._http.client import FlowServiceClient
from bulkretry._policy import Action, decide

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")

BASE = "https://platform.adobe.io/data/foundation/flowservice"
RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
TOKEN = "seam-token"
#: What a hostile server writes to clear the screen and ring the bell.
HOSTILE = "\x1b[2J\x07"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def fake_flow_service(handler: Handler) -> AsyncIterator[aiohttp.ClientSession]:
    """Yield a session whose every request reaches ``handler``, in process, off the network."""
    app = web.Application()
    app.router.add_post("/data/foundation/flowservice/runs/{run_id}/action", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # A short directory: a Unix socket's path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="br") as folder:
        path = str(Path(folder) / "flow.sock")
        await web.UnixSite(runner, path).start()
        try:
            connector = aiohttp.UnixConnector(path=path)
            async with aiohttp.ClientSession(connector=connector) as session:
                yield session
        finally:
            await runner.cleanup()


def client_on(session: aiohttp.ClientSession) -> FlowServiceClient:
    return FlowServiceClient(
        session,
        base_url=BASE,
        op="re-trigger",
        api_key="seam-key",
        org_id="ORG@AdobeOrg",
        sandbox="dev",
        timeout=5.0,
    )


async def test_retrigger_goes_through_the_session_it_is_given() -> None:
    """A session on a fake connector carries the real request and brings back the answer."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response(
            {"id": NEW, "etag": '"1a00"'}, headers={"x-request-id": "req-seam"}
        )

    async with fake_flow_service(handler) as session:
        answer = await client_on(session).retrigger(RUN, TOKEN)
    assert (answer.status, answer.body) == (200, {"id": NEW, "etag": '"1a00"'})
    assert answer.request_id == "req-seam"
    [request] = seen
    assert request.match_info["run_id"] == RUN
    assert request.query["op"] == "re-trigger"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-api-key"] == "seam-key"
    assert request.headers["x-sandbox-name"] == "dev"


async def test_a_hostile_answer_through_the_seam_is_quoted_without_escape_or_bell() -> None:
    """A 400 whose message, code and request ID carry ESC and BEL reaches the result safe."""

    async def handler(request: web.Request) -> web.Response:
        body = {
            "type": "https://ns.adobe.com/aep/errors/FLOW-1101-400",
            "report": {"detailed-message": f"bad{HOSTILE}run", "request-id": f"r{HOSTILE}1"},
        }
        return web.json_response(body, status=400)

    async with fake_flow_service(handler) as session:
        answer = await client_on(session).retrigger(RUN, TOKEN)
    decision = decide(
        answer,
        attempt=1,
        ambiguous_before=0,
        elapsed=0.0,
        settings=Settings(base_url=BASE),
        rng=random.Random(0),
        wall_now=0.0,
    )
    assert decision.action is Action.FAIL
    assert decision.error is not None
    for text in (decision.error.message, answer.request_id):
        assert text is not None
        assert "\x1b" not in text
        assert "\x07" not in text
        assert text.isprintable()
