"""The client's pooled connections against servers that close them without saying so.

A server may close a keep-alive connection after an answer without ``Connection: close``. A
request written into such a connection fails just like one that was processed and whose answer
was lost, so bulkretry must never write there; and a request that did reach a server must still
count as sent. The servers are raw sockets on loopback, so that each test decides when a FIN
(or a stray answer) leaves the server.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from conftest import virtual_time

from bulkretry._config import Settings
from bulkretry._exceptions import TransportError
from bulkretry._http.client import FlowServiceClient, make_session

pytestmark = pytest.mark.e2e

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
TOKEN = "pool-test-token"
_BODY = orjson.dumps({"id": NEW, "etag": '"1a00c53e"'})
#: A valid re-trigger answer, keep-alive by default (HTTP/1.1 without ``Connection: close``).
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_BODY),
    _BODY,
)
#: What some servers send on an idle connection before closing it.
STRAY_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"


@dataclass
class RawServer:
    """A loopback HTTP/1.1 server on raw sockets that counts what it read, and where.

    ``answers(n)`` says whether to answer the n-th request of a connection; a request left
    unanswered is followed by a close (a reset with ``reset``), or by nothing with ``hang``.
    ``close_after_answer`` closes each connection at once after its answer.
    """

    answers: Callable[[int], bool] = lambda n: True
    close_after_answer: bool = False
    reset: bool = False
    hang: bool = False
    base_url: str = ""
    requests: int = 0
    connections: int = 0
    #: Requests that arrived on a connection after the server had sent its FIN on it.
    late: int = 0
    idle: set[socket.socket] = field(default_factory=set)
    finished: set[socket.socket] = field(default_factory=set)
    #: Set once a first whole request was read.
    reading: asyncio.Event = field(default_factory=asyncio.Event)

    def close_idle(self) -> None:
        """Send a FIN on every connection that answered and waits for its next request.

        The FIN reaches the client's socket at once, but the client's event loop has not read
        it yet: the exact state of a connection the server closed while it sat in the pool.
        Only the sending side is shut, so that a request written into it anyway is seen (late).
        """
        for conn in self.idle:
            conn.shutdown(socket.SHUT_WR)
            self.finished.add(conn)
        self.idle.clear()

    def say_to_idle(self, data: bytes) -> None:
        """Write ``data`` on every idle connection, as a server closing it with a 408 does."""
        for conn in self.idle:
            conn.send(data)

    async def converse(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.connections += 1
        served = 0
        pending = b""
        with conn:
            while True:
                request, pending = await read_request(conn, pending)
                self.idle.discard(conn)
                if request is None:
                    return
                if conn in self.finished:
                    self.late += 1
                    return
                self.requests += 1
                self.reading.set()
                served += 1
                if not self.answers(served):
                    if self.hang:
                        await loop.create_future()
                    if self.reset:
                        # Linger 0: close() sends a RST rather than a FIN.
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    return
                await loop.sock_sendall(conn, OK)
                if self.close_after_answer:
                    return
                self.idle.add(conn)


async def read_request(conn: socket.socket, pending: bytes) -> tuple[bytes | None, bytes]:
    """Read one request (head and Content-Length body); None at a close before a whole one."""
    loop = asyncio.get_running_loop()
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(conn, 65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await loop.sock_recv(conn, 65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head, rest[length:]


@asynccontextmanager
async def raw_server(**behaviour: Any) -> AsyncIterator[RawServer]:
    """Serve on a free loopback port until the block ends."""
    loop = asyncio.get_running_loop()
    server = RawServer(**behaviour)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.setblocking(False)
    host, port = listener.getsockname()
    server.base_url = f"http://{host}:{port}"
    tasks: set[asyncio.Task[None]] = set()

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            task = loop.create_task(server.converse(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = loop.create_task(accept())
    try:
        yield server
    finally:
        for task in [acceptor, *tasks]:
            task.cancel()
        await asyncio.gather(acceptor, *tasks, return_exceptions=True)
        listener.close()


@asynccontextmanager
async def client_for(
    server: RawServer, *, concurrency: int = 16, timeout: float = 10.0
) -> AsyncIterator[FlowServiceClient]:
    """A FlowServiceClient on bulkretry's own session, as the engine makes them."""
    settings = Settings(base_url=server.base_url, concurrency=concurrency)
    async with make_session(settings) as session:
        yield flow_client(session, server, timeout=timeout)


def flow_client(session: Any, server: RawServer, *, timeout: float = 10.0) -> FlowServiceClient:
    return FlowServiceClient(
        session,
        base_url=server.base_url,
        op="re-trigger",
        api_key="pool-key",
        org_id="POOL0000000000000000@AdobeOrg",
        sandbox="prod",
        timeout=timeout,
    )


async def drive(
    client: FlowServiceClient,
    requests: int,
    workers: int,
    before_each: Callable[[], None] | None = None,
) -> Counter[object]:
    """Send ``requests`` re-triggers from ``workers`` at once; count statuses and errors."""
    outcomes: Counter[object] = Counter()
    todo = iter(range(requests))

    async def work() -> None:
        for _ in todo:
            if before_each is not None:
                before_each()
            try:
                answer = await client.retrigger(RUN, TOKEN)
            except TransportError as exc:
                outcomes[(exc.kind, "sent" if exc.sent else "not sent")] += 1
            else:
                outcomes[answer.status] += 1

    await asyncio.gather(*(work() for _ in range(workers)))
    return outcomes


@pytest.mark.parametrize("workers", [1, 16])
async def test_a_pooled_connection_the_server_closed_while_idle_is_never_written_to(
    workers: int,
) -> None:
    """A keep-alive connection closed by the server while idle is skipped, never made in_doubt."""
    async with raw_server() as server, client_for(server) as client:
        outcomes = await drive(client, 300, workers, before_each=server.close_idle)
    assert outcomes == Counter({200: 300})
    assert server.requests == 300
    assert server.late == 0
    # The loop had not read those FINs yet: aiohttp alone would have written into them.
    assert client.closed_connections_skipped > 0


@pytest.mark.parametrize("workers", [1, 16])
async def test_a_server_that_closes_after_each_answer_never_makes_a_request_ambiguous(
    workers: int,
) -> None:
    """Answers followed at once by an unannounced close give 200s, never a sent TransportError."""
    async with raw_server(close_after_answer=True) as server, client_for(server) as client:
        outcomes = await drive(client, 300, workers)
    assert outcomes == Counter({200: 300})
    assert server.requests == 300
    assert server.connections == 300


async def test_an_answer_sent_on_an_idle_connection_is_never_taken_for_the_next_one() -> None:
    """A 408 the server wrote while the connection was idle is not the next request's answer."""
    async with raw_server() as server, client_for(server) as client:
        first = await client.retrigger(RUN, TOKEN)
        server.say_to_idle(STRAY_408)
        # Whether or not the loop has read the stray answer by now, the connection is spoilt.
        await asyncio.sleep(0)
        second = await client.retrigger(RUN, TOKEN)
    assert (first.status, second.status) == (200, 200)
    assert second.body == {"id": NEW, "etag": '"1a00c53e"'}
    assert server.requests == 2
    assert server.connections == 2
    assert client.closed_connections_skipped == 1


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
async def test_a_request_the_server_read_then_dropped_unanswered_is_still_sent(
    reused: bool, reset: bool
) -> None:
    """A server that read the request and closed without answering leaves it ambiguous."""
    last = 2 if reused else 1
    async with (
        raw_server(answers=lambda n: n < last, reset=reset) as server,
        client_for(server) as client,
    ):
        if reused:
            assert (await client.retrigger(RUN, TOKEN)).status == 200
        with pytest.raises(TransportError) as caught:
            await client.retrigger(RUN, TOKEN)
    assert caught.value.sent
    assert caught.value.kind == "network"
    assert server.requests == last
    # The healthy pooled connection was reused, and the guard did not hide its failure.
    assert server.connections == 1
    assert client.closed_connections_skipped == 0


@virtual_time
async def test_a_timeout_before_a_connection_was_free_is_not_sent() -> None:
    """A request that timed out waiting for a pooled slot was never written: not ambiguous."""
    # No answer ever: the first request holds the only connection until its own timeout.
    async with raw_server(answers=lambda n: False, hang=True) as server:
        settings = Settings(base_url=server.base_url, concurrency=1)
        async with make_session(settings) as session:
            patient = flow_client(session, server, timeout=60.0)
            hasty = flow_client(session, server, timeout=5.0)
            holding = asyncio.ensure_future(patient.retrigger(RUN, TOKEN))
            await server.reading.wait()
            with pytest.raises(TransportError) as waited:
                await hasty.retrigger(RUN, TOKEN)
            with pytest.raises(TransportError) as written:
                await holding
    assert (waited.value.kind, waited.value.sent) == ("timeout", False)
    assert "before a connection" in str(waited.value)
    assert (written.value.kind, written.value.sent) == ("timeout", True)
    assert server.requests == 1
