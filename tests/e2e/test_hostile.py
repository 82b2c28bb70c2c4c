"""Hostile answers over a real loopback socket: every misbehaving server ends as a clear record.

Each server here is a small aiohttp.web app, or a raw asyncio server where aiohttp.web cannot
misbehave enough (drip bytes, reset mid-body, speak something that is not HTTP). The library
(`bulkretry.retrigger`) and the command line are driven against them; the servers record what
they were sent, so that the tests can say what never arrived.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

import bulkretry
from bulkretry import Credentials, Outcome, RunResult, Settings
from bulkretry._cli.main import main

pytestmark = pytest.mark.e2e

T = TypeVar("T")

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
TOKEN = "hostile-test-token-0123456789"
ENV = {
    "BULKRETRY_ACCESS_TOKEN": TOKEN,
    "BULKRETRY_API_KEY": "hostile-key",
    "BULKRETRY_ORG_ID": "HOSTILE0000000000000000@AdobeOrg",
    # These servers answer the re-trigger with hostility; the pre-flight has tests of its own
    # (tests/e2e/test_preflight.py), and here it would stop the batch before the answer tested.
    "BULKRETRY_PREFLIGHT": "0",
    # Nor do they answer look-ups: an unclear answer is held, as the answer is what is tested
    # (look-ups after lost answers: tests/e2e/test_check.py, tests/engine/test_resolve.py).
    "BULKRETRY_ON_AMBIGUOUS": "hold",
}
#: What every re-trigger request's path must look like with the default (UUID) pattern.
ACTION_PATH = re.compile(r"^/runs/[0-9a-f-]{36}/action$")
MIB = 1024 * 1024
#: The client's read cap (bulkretry._http.client.MAX_BODY_BYTES), as the README promises "~1 MiB".
CAP_PHRASE = "larger than 1048576 bytes"


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


# --- servers -------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as a server received it: the raw path (still percent-encoded) and query."""

    method: str
    path: str
    query: str
    headers: CIMultiDict[str]


@dataclass
class Server:
    """A running test server: where it listens and what it saw."""

    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    bytes_sent: int = 0
    #: The client went away while the server still had body to send.
    closed_early: bool = False

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Awaitable[None]]


@asynccontextmanager
async def web_server(handler: Handler) -> AsyncIterator[Server]:
    """Serve ``handler`` for every method and path on a free loopback port."""
    server = Server()

    async def record(request: web.Request) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        server.seen.append(Seen(request.method, path, query, CIMultiDict(request.headers)))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(conversation: Conversation) -> AsyncIterator[Server]:
    """Run ``conversation`` on each connection: bytes in, any bytes (or none) out."""
    server = Server()
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        server.connections += 1
        try:
            await conversation(reader, writer, server)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # Cancelled at teardown: end quietly (asyncio 3.11 logs a cancelled callback task).
            pass
        finally:
            tasks.discard(task)
            writer.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.wait_closed()
        # Let the closed transports run their connection_lost callbacks before the loop ends.
        await asyncio.sleep(0.01)


async def read_request(reader: asyncio.StreamReader, server: Server) -> bytes:
    """Read one HTTP/1.1 request (head and Content-Length body); record it; return the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    path, _, query = target.partition("?")
    server.seen.append(Seen(method, path, query, headers))
    return body


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), not a polite FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextmanager
def in_thread(factory: Callable[[], AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """Run an async server in its own thread and loop, for the CLI (which runs its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile-server", daemon=True)
    thread.start()
    manager = factory()
    try:
        value = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(10)
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def answer(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> Handler:
    """A handler giving the same canned answer every time."""
    data = body.encode() if isinstance(body, str) else body

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=data, headers=headers)

    return handle


def success_handler() -> Handler:
    """A well-behaved Flow Service: a new run ID and an etag for every re-trigger."""
    count = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal count
        count += 1
        body = {"id": uuid(0x70000000 + count), "etag": f'"etag-{count}"'}
        return web.json_response(body, headers={"x-request-id": f"req-{count}"})

    return handle


# --- helpers -------------------------------------------------------------------------------


def settings_for(server: Server, **overrides: Any) -> Settings:
    """Settings that reach ``server``: no real pacing, zero backoff, one attempt unless told."""
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "credentials": Credentials(
            access_token=TOKEN, api_key=ENV["BULKRETRY_API_KEY"], org_id=ENV["BULKRETRY_ORG_ID"]
        ),
        "rate": 1000.0,
        "burst": 10,
        "concurrency": 4,
        "max_attempts": 3,
        "timeout": 5.0,
        "backoff_base": 0.0,
        "backoff_cap": 0.0,
        "on_ambiguous": ENV["BULKRETRY_ON_AMBIGUOUS"],
    }
    values.update(overrides)
    return Settings(**values)


async def run_all(server: Server, ids: list[str], **overrides: Any) -> list[RunResult]:
    """Every result of a batch; a halt (raised after the last result) is in the results."""
    results: list[RunResult] = []
    async with asyncio.timeout(30):
        try:
            async for result in bulkretry.retrigger(ids, settings_for(server, **overrides)):
                results.append(result)
        except bulkretry.BatchHalted:
            pass
    return results


async def run_one(server: Server, **overrides: Any) -> RunResult:
    [result] = await run_all(server, [RUN], **overrides)
    return result


def assert_one_clear_line(message: str) -> None:
    """A message a person reads: one printable line of a sensible length."""
    assert message
    assert all(c.isprintable() for c in message), repr(message)
    assert len(message) < 800, len(message)


def cli(server: Server, tmp_path: Path, ids: list[str], *args: str) -> tuple[int, list[Any]]:
    """Run `bulkretry run` in process against ``server``; return the exit code and records."""
    source = tmp_path / "ids.txt"
    source.write_text("".join(i + "\n" for i in ids))
    out = tmp_path / "out.jsonl"
    argv = ["run", str(source), "-o", str(out), "--overwrite", "--base-url", server.base_url]
    argv += ["--rate", "1000", "--burst", "10", *args]
    code = main(argv, env=ENV)
    return code, [orjson.loads(line) for line in out.read_bytes().splitlines()]


# --- 2xx answers that are not a new run ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "phrase"),
    [
        pytest.param(200, b"<!DOCTYPE html><html><body>Welcome</body></html>", "HTML", id="html"),
        pytest.param(200, b"  <html>", "HTML", id="html-after-spaces"),
        pytest.param(200, b"", "empty", id="empty"),
        pytest.param(200, b" \r\n\t ", "empty", id="only-whitespace"),
        pytest.param(200, b'{"id": "3fb0418e-1804-', "not valid JSON", id="truncated-json"),
        pytest.param(200, b"\xff\xfe\x00\x01garbage", "not valid JSON", id="binary"),
        pytest.param(200, b'{"status": "ok"}', "no new run ID", id="no-id"),
        pytest.param(200, b'{"id": 5}', "no new run ID", id="id-a-number"),
        pytest.param(200, b'{"id": null}', "no new run ID", id="id-null"),
        pytest.param(200, b'{"id": ""}', "no new run ID", id="id-empty"),
        pytest.param(200, b'{"id": ["%s"]}' % NEW.encode(), "no new run ID", id="id-a-list"),
        pytest.param(200, b'{"id": {"id": "x"}}', "no new run ID", id="id-an-object"),
        pytest.param(200, b'{"items": []}', "no new run ID", id="items-empty"),
        pytest.param(200, b'{"items": [5]}', "no new run ID", id="items-not-objects"),
        pytest.param(200, b"null", "no new run ID", id="json-null"),
        pytest.param(200, b'["%s"]' % NEW.encode(), "no new run ID", id="json-list"),
        pytest.param(202, b'"%s"' % NEW.encode(), "no new run ID", id="json-string"),
        pytest.param(201, b"42", "no new run ID", id="json-number"),
        pytest.param(204, b"", "empty", id="204-no-content"),
    ],
)
async def test_2xx_without_a_new_run_id_is_in_doubt_as_bad_response_never_retried(
    status: int, body: bytes, phrase: str
) -> None:
    """A 2xx that names no new run may have re-triggered it: `in_doubt`, after one request."""
    async with web_server(answer(status, body, {"Content-Type": "application/json"})) as server:
        result = await run_one(server, on_ambiguous="retry")
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "bad_response"
    assert phrase in result.error.message
    assert result.error.message.startswith(f"HTTP {status} without a new run ID")
    assert_one_clear_line(result.error.message)
    assert (result.http_status, result.attempts, result.ambiguous_attempts) == (status, 1, 1)
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    ("body", "header", "etag"),
    [
        pytest.param({"id": NEW, "etag": None}, None, None, id="null-no-header"),
        pytest.param({"id": NEW, "etag": None}, '"h"', '"h"', id="null-falls-back-to-header"),
        pytest.param({"id": NEW}, '"h"', '"h"', id="absent-from-header"),
        pytest.param({"id": NEW, "etag": 7}, '"h"', '"h"', id="not-a-string-from-header"),
        pytest.param({"id": NEW, "eTag": '"b"'}, '"h"', '"b"', id="spec-eTag-wins"),
        pytest.param({"items": [{"id": NEW, "etag": '"i"'}]}, None, '"i"', id="items-shape"),
    ],
)
async def test_2xx_with_a_new_run_id_succeeds_with_the_etag_as_sent(
    body: dict[str, Any], header: str | None, etag: str | None
) -> None:
    """`etag` comes from the body (etag or eTag), else from the ETag header, else null."""
    headers = {"ETag": header} if header is not None else None
    async with web_server(answer(200, orjson.dumps(body), headers)) as server:
        result = await run_one(server)
    assert result.outcome is Outcome.RETRIGGERED
    assert (result.new_run_id, result.etag) == (NEW, etag)


# --- enormous bodies -----------------------------------------------------------------------


def enormous(framing: str, total: int = 50 * MIB) -> Conversation:
    """Answer 200 with a ``total``-byte body that is valid JSON with an ID, if read whole."""
    head = {
        "length": f"Content-Length: {total}\r\n",
        "chunked": "Transfer-Encoding: chunked\r\n",
        "close": "Connection: close\r\n",
    }[framing]
    prefix, suffix = b'{"id": "', b'"}'
    filler = b"a" * (64 * 1024)

    def pieces() -> Iterator[bytes]:
        yield prefix
        left = total - len(prefix) - len(suffix)
        while left > 0:
            yield filler[:left]
            left -= len(filler)
        yield suffix

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await read_request(reader, s)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{head}\r\n".encode())
        try:
            for piece in pieces():
                if framing == "chunked":
                    piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                writer.write(piece)
                await writer.drain()
                s.bytes_sent += len(piece)
            if framing == "chunked":
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            s.closed_early = True

    return talk


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_an_enormous_2xx_body_is_capped_and_in_doubt_as_bad_response(framing: str) -> None:
    """50 MB of body: the client reads about 1 MiB, hangs up, and reports bad_response."""
    async with raw_server(enormous(framing)) as server:
        result = await run_one(server)
        for _ in range(200):  # let the server's next write notice the hang-up
            if server.closed_early:
                break
            await asyncio.sleep(0.01)
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "bad_response"
    assert CAP_PHRASE in result.error.message
    assert result.attempts == 1
    assert server.closed_early
    # Loopback socket buffers hold a few MiB; the rest of the 50 MB was never sent.
    assert server.bytes_sent < 16 * MIB


def gzip_answer(*pieces: bytes, repeat: int = 1) -> Handler:
    """Answer 200 with ``pieces`` (the middle one ``repeat`` times) gzip-compressed.

    Its Content-Length is the compressed size.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    head, middle, tail = pieces if len(pieces) == 3 else (b"", pieces[0], b"")
    parts = [compressor.compress(head)]
    parts += [compressor.compress(middle) for _ in range(repeat)]
    compressed = b"".join([*parts, compressor.compress(tail), compressor.flush()])

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(status=200, body=compressed, headers=headers)

    return handle


async def test_a_small_gzip_body_is_read_as_usual() -> None:
    """A compressed answer (as a gateway may send) is decompressed and read."""
    body = orjson.dumps({"id": NEW, "etag": '"z"'})
    async with web_server(gzip_answer(body)) as server:
        result = await run_one(server)
    assert (result.outcome, result.new_run_id, result.etag) == (Outcome.RETRIGGERED, NEW, '"z"')


@pytest.mark.parametrize("mib", [20, 100])
async def test_a_gzip_bomb_is_capped_after_decompression(mib: int) -> None:
    """A small compressed body that inflates to a huge JSON ID is capped, never read whole.

    The Content-Length (the compressed size, 20-100 KiB) is under the cap; what counts is what
    it inflates to. Without the cap the record would be `retriggered` with a 20 MB run ID.
    (100 MiB also passes aiohttp's own 32 MiB limit on one inflated read.)
    """
    bomb = gzip_answer(b'{"id": "', b"a" * MIB, b'"}', repeat=mib)
    async with web_server(bomb) as server:
        result = await run_one(server)
    assert result.outcome is Outcome.IN_DOUBT
    assert result.new_run_id is None
    assert result.error is not None
    assert result.error.kind == "bad_response"
    assert CAP_PHRASE in result.error.message or "cannot be decompressed" in result.error.message
    assert (result.attempts, result.ambiguous_attempts) == (1, 1)


async def test_a_corrupt_gzip_body_is_a_bad_response_not_a_network_error() -> None:
    """Bytes that claim gzip but are not: the answer came, unreadable: bad_response."""
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with web_server(answer(200, b"\x1f\x8b\x08\x00garbage-garbage", headers)) as server:
        result = await run_one(server)
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "bad_response"
    assert "cannot be decompressed" in result.error.message
    assert_one_clear_line(result.error.message)


# --- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("where", ["same-host", "other-host"])
async def test_a_redirect_of_the_post_is_never_followed(status: int, where: str) -> None:
    """3xx: `failed`, kind http, one request, nothing at the redirect target."""
    async with web_server(success_handler()) as target:
        base = target.base_url if where == "other-host" else ""
        location = f"{base}/runs/{NEW}/action?op=re-trigger"
        html = f'<html><a href="{location}">Moved</a></html>'
        async with web_server(answer(status, html, {"Location": location})) as origin:
            result = await run_one(origin)
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.kind == "http"
    assert result.error.message == f"HTTP {status}: redirect to {location} not followed"
    assert (result.http_status, result.attempts) == (status, 1)
    assert len(origin.seen) == 1
    assert target.seen == []


async def test_a_redirect_location_cannot_write_escape_sequences_into_the_message() -> None:
    """A Location with control characters is shown as one printable line."""
    location = "http://evil.example/\x1b]0;owned\x07\x1b[2J"

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=302)
        # aiohttp.web refuses control characters in header values; bypass its check.
        response._headers["Location"] = location
        return response

    async with web_server(handle) as server:
        result = await run_one(server)
    assert result.error is not None
    assert_one_clear_line(result.error.message)
    assert "\x1b" not in result.error.message
    assert "evil.example" in result.error.message


def two_servers(origin_handler: Callable[[Server], Handler]) -> Any:
    """An async context manager for a target server and an origin whose handler knows it."""

    @asynccontextmanager
    async def both() -> AsyncIterator[tuple[Server, Server]]:
        async with AsyncExitStack() as stack:
            target = await stack.enter_async_context(web_server(success_handler()))
            origin = await stack.enter_async_context(web_server(origin_handler(target)))
            yield origin, target

    return both


def page_handler(body: Callable[[Server], dict[str, Any]] | None, status: int = 200) -> Any:
    def make(target: Server) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if body is None:
                location = f"{target.base_url}/runs?property=x"
                return web.Response(status=status, headers={"Location": location})
            return web.json_response(body(target))

        return handle

    return make


@pytest.mark.parametrize(
    "make_origin",
    [
        pytest.param(page_handler(None, 302), id="302-to-other-host"),
        pytest.param(page_handler(None, 307), id="307-to-other-host"),
        pytest.param(
            page_handler(
                lambda t: {
                    "items": [],
                    "_links": {"next": {"href": f"{t.base_url}/runs?continuationToken=x"}},
                }
            ),
            id="next-link-to-other-host",
        ),
    ],
)
def test_list_failed_never_carries_the_token_to_another_host(
    make_origin: Callable[[Server], Handler],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """list-failed's GETs: a redirect or next link elsewhere stops the listing (exit 3)."""
    out = tmp_path / "list.txt"
    with in_thread(two_servers(make_origin)) as (origin, target):
        code = main(
            ["list-failed", "--all-flows", "--base-url", origin.base_url, "-o", str(out), "-q"],
            env=ENV,
        )
    err = capsys.readouterr().err
    assert code == 3
    assert target.seen == []  # so the Authorization header never went there
    assert len(origin.seen) == 1
    assert origin.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


# --- 4xx answers with unexpected bodies ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(400, b"<html><h1>400 Bad Request</h1></html>", "request refused", id="html"),
        pytest.param(400, b"", "request refused", id="empty"),
        pytest.param(422, b'{"weird": {"nested": [1, 2]}}', "request refused", id="unknown-json"),
        pytest.param(409, b"[1, 2, 3]", "not allowed in the current state", id="409-json-list"),
        pytest.param(400, b"x" * (3 * MIB), "request refused", id="huge-3MB"),
        pytest.param(405, b"<html>Method Not Allowed</html>", "request refused", id="405-html"),
        pytest.param(410, b"Gone", "request refused", id="410-text"),
        pytest.param(
            400,
            orjson.dumps({"message": "first line\nsecond line\x1b[31m red\r\n\x00end"}),
            "first line second line [31m red end",
            id="message-with-control-chars",
        ),
        pytest.param(
            400, orjson.dumps({"message": "m" * 100_000}), "m" * 200, id="message-of-100k-chars"
        ),
        pytest.param(
            400, orjson.dumps({"title": 5, "message": ["x"]}), "request refused", id="odd"
        ),
        pytest.param(
            404,
            orjson.dumps(
                {
                    "type": "https://ns.adobe.com/aep/errors/FLOW-1101-404",
                    "title": "Run not found",
                }
            ),
            "Run not found",
            id="404-flow-service-format",
        ),
    ],
)
async def test_4xx_with_an_unexpected_body_fails_with_one_clear_sentence(
    status: int, body: bytes, expected: str
) -> None:
    """A 4xx is `failed`, kind http, with a short one-line message, after one request."""
    async with web_server(answer(status, body)) as server:
        result = await run_one(server)
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.kind == "http"
    assert result.error.message.startswith(f"HTTP {status}: ")
    assert expected in result.error.message
    assert_one_clear_line(result.error.message)
    assert len(result.error.message) <= 320
    assert (result.http_status, result.attempts) == (status, 1)


async def test_404_in_a_foreign_format_halts_the_batch() -> None:
    """404 HTML (not Flow Service): the base URL is wrong, so the batch stops at once."""
    async with web_server(answer(404, "<html>Not Found</html>")) as server:
        results = await run_all(server, [uuid(i) for i in range(5)], concurrency=1)
    assert {r.outcome for r in results} == {Outcome.NOT_ATTEMPTED}
    assert len(server.seen) == 1


# --- slow, silent, broken and garbled answers ----------------------------------------------


def drip(head: bytes, interval: float = 0.1) -> Conversation:
    """Send ``head`` at once, then one byte of body every ``interval`` seconds."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await read_request(reader, s)
        writer.write(head)
        for byte in orjson.dumps({"id": NEW}) * 100:
            await writer.drain()
            await asyncio.sleep(interval)
            writer.write(bytes([byte]))

    return talk


def drip_head(interval: float = 0.1) -> Conversation:
    """Send the status line and headers themselves one byte at a time."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await read_request(reader, s)
        for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: yes\r\n" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)

    return talk


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
    """Read the request, then never answer."""
    await read_request(reader, s)
    await asyncio.Event().wait()


async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
    """Accept the connection, never read, never answer."""
    await asyncio.Event().wait()


SLOW = {
    "drip-body": drip(b"HTTP/1.1 200 OK\r\nContent-Length: 1300\r\n\r\n"),
    "drip-chunked-body": drip(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "drip-status-and-headers": drip_head(),
    "reads-never-answers": silent,
    "accepts-never-reads": deaf,
}


@pytest.mark.parametrize("name", list(SLOW))
async def test_a_slow_or_silent_server_times_out_within_the_total_timeout(name: str) -> None:
    """--timeout is connect-to-last-byte: a drip (faster than the timeout) still ends it."""
    async with raw_server(SLOW[name]) as server:
        started = time.monotonic()
        result = await run_one(server, timeout=0.5, on_ambiguous="hold")
        elapsed = time.monotonic() - started
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "timeout"
    assert (result.attempts, result.ambiguous_attempts) == (1, 1)
    assert 0.4 < elapsed < 2.0


async def test_a_timeout_is_retried_as_ambiguous_then_in_doubt() -> None:
    """With --on-ambiguous retry, each timeout counts as ambiguous; the record ends in_doubt."""
    async with raw_server(silent) as server:
        result = await run_one(server, timeout=0.3, max_attempts=2, on_ambiguous="retry")
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "timeout"
    assert "gave up after 2 attempts" in result.error.message
    assert (result.attempts, result.ambiguous_attempts) == (2, 2)
    assert len(server.seen) == 2


async def half_body_then_reset(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
) -> None:
    await read_request(reader, s)
    body = orjson.dumps({"id": NEW, "etag": '"x"'})
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    writer.write(body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    reset(writer)


async def reset_before_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
) -> None:
    await read_request(reader, s)
    reset(writer)


async def close_before_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
) -> None:
    await read_request(reader, s)
    writer.close()


async def headers_then_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
) -> None:
    await read_request(reader, s)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
    await writer.drain()
    writer.close()


BROKEN = {
    "half-body-then-rst": (half_body_then_reset, "the connection broke while the answer was read"),
    "headers-then-fin": (headers_then_close, "the connection broke while the answer was read"),
    "rst-before-answering": (reset_before_answering, ""),
    "fin-before-answering": (close_before_answering, "closed the connection without answering"),
}


@pytest.mark.parametrize("name", list(BROKEN))
async def test_a_connection_broken_after_sending_is_a_network_error_and_ambiguous(
    name: str,
) -> None:
    """A reset or close after the request left: kind network, ambiguous (in_doubt on hold)."""
    conversation, phrase = BROKEN[name]
    async with raw_server(conversation) as server:
        result = await run_one(server, on_ambiguous="hold")
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "network"
    assert phrase in result.error.message
    assert_one_clear_line(result.error.message)
    assert (result.attempts, result.ambiguous_attempts) == (1, 1)
    assert len(server.seen) == 1


async def test_a_reset_mid_body_is_retried_and_a_later_success_counts() -> None:
    """Reset once, then answer: retriggered on attempt 2, with one ambiguous attempt noted."""
    calls = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await half_body_then_reset(reader, writer, s)
            return
        await read_request(reader, s)
        body = orjson.dumps({"id": NEW})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with raw_server(flaky) as server:
        result = await run_one(server, on_ambiguous="retry")
    assert (result.outcome, result.new_run_id) == (Outcome.RETRIGGERED, NEW)
    assert (result.attempts, result.ambiguous_attempts) == (2, 1)


def garbage(reply: bytes, *, close: bool = True) -> Conversation:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await read_request(reader, s)
        writer.write(reply)
        await writer.drain()
        if not close:
            await asyncio.Event().wait()

    return talk


GARBAGE = {
    "ssh-banner": garbage(b"SSH-2.0-OpenSSH_9.6\r\n"),
    "random-bytes": garbage(random.Random(7).randbytes(4096)),
    "random-bytes-kept-open": garbage(random.Random(8).randbytes(4096), close=False),
    "plain-text": garbage(b"hello, this is not HTTP\n"),
    "escape-sequences": garbage(b"\x1b]0;owned\x07\x1b[2J\x1b[31mHTTP/1.1 200 OK\r\n\r\n"),
    "bad-status-code": garbage(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"),
    "header-line-of-20k": garbage(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"),
    "header-without-colon": garbage(b"HTTP/1.1 200 OK\r\nnot a header\r\n\r\n"),
    "tls-alert": garbage(b"\x15\x03\x01\x00\x02\x02\x28"),
    "conflicting-content-length": garbage(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "bad-chunk-size": garbage(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("name", list(GARBAGE))
async def test_an_answer_that_is_not_http_is_an_ambiguous_network_error(name: str) -> None:
    """Bytes that are not HTTP: kind network, ambiguous, one printable line, no hang."""
    async with raw_server(GARBAGE[name]) as server:
        result = await run_one(server, on_ambiguous="hold", timeout=2.0)
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert result.error.kind == "network"
    assert_one_clear_line(result.error.message)
    assert (result.attempts, result.ambiguous_attempts) == (1, 1)


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_5xx_with_an_html_body_is_ambiguous(status: int) -> None:
    """500/502/504, whatever the body: maybe processed, so in_doubt, at once by default."""
    async with web_server(answer(status, "<html><h1>Bad Gateway</h1></html>")) as server:
        held = await run_one(server)
        retried = await run_one(server, max_attempts=2, on_ambiguous="retry")
    assert (held.outcome, held.attempts, held.ambiguous_attempts) == (Outcome.IN_DOUBT, 1, 1)
    assert (retried.outcome, retried.attempts, retried.ambiguous_attempts) == (
        Outcome.IN_DOUBT,
        2,
        2,
    )
    assert held.error is not None
    assert held.error.message == f"HTTP {status}: server error"


@pytest.mark.parametrize("status", [501, 505])
async def test_a_501_or_505_fails_at_once(status: int) -> None:
    """501/505: the server cannot do this at all; `failed` after one request."""
    async with web_server(answer(status, "<html></html>")) as server:
        result = await run_one(server)
    assert (result.outcome, result.attempts, result.ambiguous_attempts) == (Outcome.FAILED, 1, 0)


async def test_a_status_code_outside_the_known_classes_is_treated_as_a_server_error() -> None:
    """`HTTP/1.1 999`: no class of its own, handled as a 5xx (ambiguous, retried)."""
    async with raw_server(garbage(b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n")) as server:
        result = await run_one(server, on_ambiguous="hold")
    assert result.outcome is Outcome.IN_DOUBT
    assert result.error is not None
    assert (result.error.kind, result.http_status) == ("http", 999)


async def test_a_refused_connection_is_not_ambiguous_and_is_retried() -> None:
    """Nobody listening: not sent, so retried and `failed` (never in_doubt)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await run_one(Server(base_url=f"http://127.0.0.1:{port}"), max_attempts=2)
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.kind == "network"
    assert (result.attempts, result.ambiguous_attempts) == (2, 0)


@contextmanager
def hung_connects() -> Iterator[Server]:
    """A listener whose accept queue is full: a new connect hangs (Linux drops the SYN)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        yield Server(base_url=f"http://127.0.0.1:{port}")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full queue")
@pytest.mark.parametrize("on_ambiguous", ["hold", "retry"])
async def test_a_hung_connect_is_a_connect_timeout_never_ambiguous(on_ambiguous: str) -> None:
    """A connect that never completes sent nothing: kind timeout, not ambiguous, retried.

    With --timeout 0.5 the connect budget must run out before the total one, or the record
    would be held in_doubt for a request that never left.
    """
    with hung_connects() as server:
        result = await run_one(server, timeout=0.5, max_attempts=2, on_ambiguous=on_ambiguous)
    assert result.outcome is Outcome.FAILED
    assert result.error is not None
    assert result.error.kind == "timeout"
    assert "timed out connecting" in result.error.message
    assert (result.attempts, result.ambiguous_attempts) == (2, 0)


# --- Retry-After ---------------------------------------------------------------------------


def throttled_then_ok(status: int, retry_after: str) -> Handler:
    """Answer ``status`` with ``Retry-After: retry_after`` once, then succeed."""
    calls = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            response = web.Response(status=status, text='{"error_code": "429050"}')
            response._headers["Retry-After"] = retry_after  # unchecked, as a server could
            return response
        return web.json_response({"id": NEW})

    return handle


GARBAGE_RETRY_AFTER = [
    "soon",
    "-1",
    "1.5",
    "NaN",
    "",
    "   ",
    "0x10",
    "1e3",
    "\u00b9",  # a superscript one: str.isdigit() says yes, RFC 9110 says no
    "Fri, 32 Foo 2024 25:61:61 GMT",
    "Mon, 01 Jan 0000 00:00:00 GMT",
    "Wed, 21 Oct 2015 07:28:00 +9999",
    "Thu, 01 Jan 1970 00:00:00 GMT",  # long past: wait nothing
]


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("value", GARBAGE_RETRY_AFTER)
async def test_a_garbage_retry_after_is_ignored_and_the_backoff_used(
    status: int, value: str
) -> None:
    """An unreadable Retry-After is as if absent: retried after the usual backoff."""
    async with web_server(throttled_then_ok(status, value)) as server:
        started = time.monotonic()
        result = await run_one(server)
        elapsed = time.monotonic() - started
    assert (result.outcome, result.attempts, result.ambiguous_attempts) == (
        Outcome.RETRIGGERED,
        2,
        0,
    )
    assert elapsed < 3.0


HUGE_RETRY_AFTER = {
    "901": "901",
    "one-day": "86400",
    "20-digits": "9" * 20,
    "400-digits": "9" * 400,
    "year-9999": "Fri, 31 Dec 9999 23:59:59 GMT",
}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("name", list(HUGE_RETRY_AFTER))
async def test_a_huge_retry_after_halts_the_batch(status: int, name: str) -> None:
    """Retry-After past 900 s: the batch stops, nothing else sent; records not_attempted."""
    value = HUGE_RETRY_AFTER[name]
    async with web_server(throttled_then_ok(status, value)) as server:
        results = await run_all(server, [uuid(i) for i in range(4)], concurrency=1)
    assert [r.outcome for r in results] == [Outcome.NOT_ATTEMPTED] * 4
    assert len(server.seen) == 1


def test_cli_halt_on_a_huge_retry_after_says_how_long_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stop reason names the time asked for; exit 3."""
    with in_thread(lambda: web_server(throttled_then_ok(429, "86400"))) as server:
        code, records = cli(server, tmp_path, [uuid(i) for i in range(3)], "--concurrency", "1")
    err = capsys.readouterr().err
    assert code == 3
    assert [r["outcome"] for r in records] == ["not_attempted"] * 3
    assert "asked to wait 86400 s" in err
    assert "Traceback" not in err


# --- what the command line makes of it ----------------------------------------------------

CLI_CASES: dict[str, tuple[Callable[[], AbstractAsyncContextManager[Server]], str, str, int]] = {
    # name: (server, outcome, error kind, exit code)
    "html-200": (lambda: web_server(answer(200, "<html></html>")), "in_doubt", "bad_response", 1),
    "no-id-200": (lambda: web_server(answer(200, "{}")), "in_doubt", "bad_response", 1),
    "enormous-200": (lambda: raw_server(enormous("length")), "in_doubt", "bad_response", 1),
    "redirect": (
        lambda: web_server(answer(302, "", {"Location": "http://127.0.0.1:9/x"})),
        "failed",
        "http",
        1,
    ),
    "html-400": (lambda: web_server(answer(400, "<html></html>")), "failed", "http", 1),
    "escapes-400": (
        lambda: web_server(answer(400, orjson.dumps({"message": "a\nbulkretry: forged\x1b[2J"}))),
        "failed",
        "http",
        1,
    ),
    "drip": (lambda: raw_server(SLOW["drip-body"]), "in_doubt", "timeout", 1),
    "silent": (lambda: raw_server(silent), "in_doubt", "timeout", 1),
    "reset": (lambda: raw_server(half_body_then_reset), "in_doubt", "network", 1),
    "garbage": (lambda: raw_server(GARBAGE["ssh-banner"]), "in_doubt", "network", 1),
    "html-404": (lambda: web_server(answer(404, "<html></html>")), "not_attempted", "", 3),
    "escapes-403": (
        lambda: web_server(answer(403, orjson.dumps({"message": "x\nbulkretry: forged\x1b[2J"}))),
        "not_attempted",
        "",
        3,
    ),
    "html-401": (lambda: web_server(answer(401, "<html></html>")), "not_attempted", "", 3),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_records_and_exit_code_for_each_hostile_answer(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bulkretry run` writes one record per ID and the documented exit code; no traceback."""
    factory, outcome, kind, exit_code = CLI_CASES[name]
    with in_thread(factory) as server:
        code, records = cli(
            server, tmp_path, [RUN], "--timeout", "0.5", "--on-ambiguous", "hold", "-v"
        )
    err = capsys.readouterr().err
    assert code == exit_code
    assert len(records) == 1
    assert records[0]["outcome"] == outcome
    if kind:
        assert records[0]["error"]["kind"] == kind
    assert "Traceback" not in err
    assert TOKEN not in err
    # Whatever the server sent, stderr holds only printable lines of bulkretry's own.
    assert all(line.isprintable() for line in err.splitlines()), err
    assert all(line.startswith("bulkretry: ") for line in err.splitlines()), err
    assert not any(line.startswith("bulkretry: forged") for line in err.splitlines()), err


def strings_in(value: Any) -> list[str]:
    """Return every string a decoded JSON value holds, keys too."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_in(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


@pytest.mark.parametrize(("status", "exit_code"), [(400, 1), (403, 3)])
def test_cli_lets_no_escape_or_bell_a_server_wrote_reach_stderr_or_the_results(
    status: int, exit_code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ESC and BEL in a refusal's message, code and request ID come out as spaces, everywhere."""
    hostile = "\x1b[2J\x07"
    body = orjson.dumps(
        {
            "error_code": f"E{hostile}1",
            "message": f"clear{hostile}the screen",
            "report": {"request-id": f"req{hostile}1"},
        }
    )
    with in_thread(lambda: web_server(answer(status, body))) as server:
        code, records = cli(server, tmp_path, [RUN], "-v")
    err = capsys.readouterr().err
    assert code == exit_code
    for text in [err, *strings_in(records)]:
        assert "\x1b" not in text, repr(text)
        assert "\x07" not in text, repr(text)
    assert "the screen" in err


# --- stdout closed early -------------------------------------------------------------------


@pytest.mark.slow
def test_stdout_closed_early_on_a_real_run_ends_quietly(tmp_path: Path) -> None:
    """`bulkretry run ids | head -1` against a live server: one line, nothing on stderr."""

    async def slowish(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.005)
        return web.json_response({"id": NEW})

    ids = tmp_path / "ids.txt"
    ids.write_text("".join(uuid(i) + "\n" for i in range(5000)))
    with in_thread(lambda: web_server(slowish)) as server:
        command = (
            f"{sys.executable} -m bulkretry run {ids} --base-url {server.base_url} "
            '--rate 5000 --burst 50 --concurrency 16 | head -1; echo "rc=${PIPESTATUS[0]}" >&2'
        )
        proc = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            env={**os.environ, **ENV},
            timeout=60,
            check=False,
        )
    assert len(proc.stdout.splitlines()) == 1
    assert orjson.loads(proc.stdout)["outcome"] == "retriggered"
    assert len(server.seen) < 5000  # the batch stopped; it did not run to the end
    # One line on stderr (no traceback, no "Unclosed…"): the runs re-triggered after the reader
    # left, whose lines nobody will read; exit 3, as for any batch stopped early.
    lines = proc.stderr.decode().splitlines()
    assert lines[-1] == "rc=3"
    assert len(lines) <= 2
    if len(lines) == 2:
        assert "runs were re-triggered but not written to the output" in lines[0]
