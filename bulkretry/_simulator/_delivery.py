"""The wire: an answer sent as it is, spoiled, replaced by an error, reset, or never sent.

`Visit` carries one request through the engine's steps; `Delivery.serve` does its work and
delivers the answer as the forced answer (a script's, the hook's or a fault's) says.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from . import _answers as A
from ._config import SimulatorConfig
from ._ims import IMS_PATH
from ._records import ClientCounts, RecordedRequest
from ._trouble import SPOILED, Answer, retry_after_value

HANG_POLL = 0.25
"""How often a hung request looks whether its client has gone, in seconds."""

_LINGER_RESET = struct.pack("ii", 1, 0)

Work = Callable[[], tuple[web.Response, dict[str, object] | None]]
"""Flow Service's work for one request: its answer, and the payload a malformed one spoils."""


@dataclass(slots=True)
class Visit:
    """One request on its way through the engine, and what was decided for it so far."""

    index: int
    rid: str
    rec: RecordedRequest | None = None
    forced: Answer | None = None
    early: web.Response | None = None
    tally: ClientCounts | None = None
    headers: dict[str, str] | None = None
    """Headers every answer to this request carries, such as RateLimit-*."""


class Delivery:
    """Deliver answers, or fail to, and count them by status."""

    __slots__ = ("_config", "closing", "stats")

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self.stats: Counter[int | str] = Counter()
        self.closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"Delivery(stats={dict(self.stats)!r})"

    async def serve(self, request: web.Request, visit: Visit, work: Work) -> web.StreamResponse:
        """Do `work` unless the forced answer says not to, and deliver what it says."""
        forced, rid = visit.forced, visit.rid
        if forced is None or forced == "ok" or forced == 200:
            return self.sent(work()[0], visit)
        if isinstance(forced, int):
            return self.sent(self.canned(forced, request, rid), visit)
        if forced == "reset":
            return self.reset(request, visit.rec)
        if forced == "hang":
            return await self.hang(request, visit.rec)
        response, payload = work()
        if forced in SPOILED:
            if response.status == 200 and payload is not None:
                response = A.malformed(forced, payload, rid)
            return self.sent(response, visit)
        # In doubt: the work is done, and its answer lost.
        if forced == "in-doubt-reset":
            return self.reset(request, visit.rec)
        if forced == "in-doubt-hang":
            return await self.hang(request, visit.rec)
        return self.sent(self.canned(int(forced.rsplit("-", 1)[1]), request, rid), visit)

    def canned(self, status: int, request: web.Request, rid: str) -> web.Response:
        """Answer a bare status with the body its endpoint would send with it."""
        headers = None
        if status == 429:
            cfg = self._config
            value = retry_after_value(cfg.retry_after, cfg.scripted_retry_after, cfg.wall_clock())
            headers = None if value is None else {"Retry-After": value}
        if request.path == IMS_PATH:
            body = {"error": "server_error", "error_description": "Simulated error."}
            return A.json_answer(status, body, rid, headers)
        return A.canned_error(status, rid, headers)

    def sent(self, response: web.Response, visit: Visit) -> web.Response:
        """Count `response` and note it in the request's record; add the visit's headers."""
        self.stats[response.status] += 1
        if visit.headers:
            response.headers.update(visit.headers)
        rec = visit.rec
        if rec is not None:
            rec.status = response.status
            rec.outcome = "answered"
        return response

    def reset(self, request: web.Request, rec: RecordedRequest | None) -> web.Response:
        """Close the connection with a TCP reset, answering nothing."""
        self.stats["reset"] += 1
        if rec is not None:
            rec.outcome = "reset"
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 makes close() send RST: the client sees a reset, not a clean close.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()
        # Nothing is written to an aborted transport; aiohttp drops this quietly.
        return web.Response(status=599)

    async def hang(self, request: web.Request, rec: RecordedRequest | None) -> web.Response:
        """Never answer: wait until the client gives up or the simulator stops, then reset."""
        self.stats["hang"] += 1
        if rec is not None:
            rec.outcome = "hang"
        while not self.closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            try:
                await asyncio.wait_for(self.closing.wait(), HANG_POLL)
            except TimeoutError:
                pass
        return self.reset(request, None)
