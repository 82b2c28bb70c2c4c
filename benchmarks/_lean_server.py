"""A lean loopback stand-in for Flow Service's re-trigger endpoint: a benchmark fixture only.

Every ``POST`` is answered ``200`` with the same small ``{"id": ..., "etag": ...}`` body on a
keep-alive connection, as fast as an asyncio ``Protocol`` on uvloop can parse HTTP/1.1 heads.
Nothing is stored per request but counters, so the server neither slows down nor grows with the
number of requests, and it is never the bottleneck of a client benchmark the way the faithful
simulator (``bulkretry simulate --accept-any``, an aiohttp web app) can be.

Any other ``GET`` (bulkretry's pre-flight) is answered with a listing of no runs.
``GET /_stats`` answers ``{"requests", "posts", "connections", "first", "last", "distinct"?}``
where ``first`` and ``last`` are ``time.monotonic()`` arrival times of the first and last POST
(the same clock in every process on Linux); ``GET /_stats?reset=1`` also resets the counters. With
``--count-distinct`` the distinct request paths are counted too (a set of hashes, so use it for
correctness checks, not for memory measurements of the client).

Usage: ``python benchmarks/_lean_server.py [--port 0] [--ready-file PATH] [--count-distinct]``;
it prints its base URL on stdout and runs until SIGINT/SIGTERM. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time

BODY = (
    b'{"id":"3fb0418e-1804-45d6-8d56-dd51f05c0baf",'
    b'"etag":"\\"1100c53e-0000-0200-0000-627138980000\\""}'
)
OK = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"x-request-id: lean-0000\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
LISTING = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"items":[]}'
)


class Counters:
    def __init__(self, count_distinct: bool) -> None:
        self.requests = 0
        self.posts = 0
        self.connections = 0
        self.first: float | None = None
        self.last: float | None = None
        self.distinct: set[int] | None = set() if count_distinct else None

    def reset(self) -> None:
        self.__init__(self.distinct is not None)  # type: ignore[misc]

    def as_json(self) -> bytes:
        out: dict[str, object] = {
            "requests": self.requests,
            "posts": self.posts,
            "connections": self.connections,
            "first": self.first,
            "last": self.last,
        }
        if self.distinct is not None:
            out["distinct"] = len(self.distinct)
        return json.dumps(out).encode()


class Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies skipped by Content-Length."""

    __slots__ = ("_buf", "_counters", "_transport")

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._counters.connections += 1

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        close = False
        counters = self._counters
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            need = end + 4
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                need += int(head[i + 17 : j if j >= 0 else len(head)])
            if len(buf) < need:
                break
            counters.requests += 1
            if head.startswith(b"post "):
                now = time.monotonic()
                if counters.first is None:
                    counters.first = now
                counters.last = now
                counters.posts += 1
                if counters.distinct is not None:
                    counters.distinct.add(hash(head[5 : head.find(b" ", 5)]))
                out.append(OK)
            elif head.startswith(b"get /_stats"):
                body = counters.as_json()
                if b"reset=1" in head[: head.find(b"\r\n")]:
                    counters.reset()
                out.append(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
            elif head.startswith(b"get "):
                out.append(LISTING)  # a listing of no runs: bulkretry's pre-flight passes
            else:
                out.append(NOT_FOUND)
            if b"\r\nconnection: close" in head:
                close = True
            buf = buf[need:]
        self._buf = buf
        assert self._transport is not None
        if out:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            self._transport.close()


def announce(ready_file: str, url: str) -> None:
    """Write the URL to ``ready_file`` at once (a rename), for the benchmark waiting on it."""
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(url + "\n")
    os.replace(tmp, ready_file)


async def serve(host: str, port: int, ready_file: str | None, count_distinct: bool) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters(count_distinct)
    server = await loop.create_server(lambda: Http(counters), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    url = f"http://{host}:{bound}"
    print(url, flush=True)
    if ready_file:
        announce(ready_file, url)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    parser.add_argument("--count-distinct", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true")
    ns = parser.parse_args()
    if ns.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    factory = None
    if not ns.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(ns.host, ns.port, ns.ready_file, ns.count_distinct))
    return 0


if __name__ == "__main__":
    sys.exit(main())
