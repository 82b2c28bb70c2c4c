"""A loopback re-trigger endpoint behind a token-bucket quota, with a storm of 503s: a fixture.

The built-in simulator draws its 5xx at random; a *storm* is a spell in which every request is
answered ``503`` with ``Retry-After: 1``, the way a gateway answers while its backend restarts.
This server admits ``--quota-rate`` requests a second (burst ``--quota-burst``; a refused one
is answered 429 with the seconds until a token, rounded up), and answers 503 to everything from
``--storm-after`` seconds after the first request for ``--storm-for`` seconds. ``GET
/_sim/stats`` answers in the simulator's shape (``requests``, ``retriggers``,
``retriggered_runs``, ``answers``) plus ``storm_end``: the ``time.monotonic()`` at which the
storm ended (None before).

Usage: ``python benchmarks/_storm_server.py --quota-rate 200 --storm-after 5 --storm-for 3``;
it prints its base URL on stdout and runs until SIGTERM. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
import uuid
from collections import Counter

from aiohttp import web


class Storm:
    """The quota, the storm, and the counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.rate, self.burst = args.quota_rate, float(args.quota_burst)
        self.after, self.length = args.storm_after, args.storm_for
        self.tokens, self.stamp = self.burst, time.monotonic()
        self.first: float | None = None
        self.answers: Counter[str] = Counter()
        self.requests = 0
        self.done: set[str] = set()
        self.retriggers = 0

    def answer(self, run_id: str) -> web.Response:
        now = time.monotonic()
        self.requests += 1
        if self.first is None:
            self.first = now
        if self.after <= now - self.first < self.after + self.length:
            return self._count(503, {"Retry-After": "1"})
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            wait = math.ceil((1.0 - self.tokens) / self.rate)
            return self._count(429, {"Retry-After": str(wait)})
        self.tokens -= 1.0
        self.retriggers += 1
        self.done.add(run_id)
        body = {"id": str(uuid.uuid4()), "etag": '"0000-etag"'}
        return self._count(200, {}, body)

    def _count(
        self, status: int, headers: dict[str, str], body: dict[str, str] | None = None
    ) -> web.Response:
        self.answers[str(status)] += 1
        if body is None:
            body = {"error_code": f"{status}", "message": "try again later"}
        return web.json_response(body, status=status, headers=headers)

    def stats(self) -> dict[str, object]:
        end = None if self.first is None else self.first + self.after + self.length
        return {
            "requests": self.requests,
            "retriggers": self.retriggers,
            "retriggered_runs": len(self.done),
            "duplicate_retriggers": self.retriggers - len(self.done),
            "answers": dict(self.answers),
            "storm_end": end if end is not None and time.monotonic() >= end else None,
        }


async def serve(args: argparse.Namespace) -> None:
    storm = Storm(args)

    async def retrigger(request: web.Request) -> web.Response:
        return storm.answer(request.match_info["run_id"])

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(storm.stats()), content_type="application/json")

    app = web.Application()
    app.router.add_post("/runs/{run_id}/action", retrigger)
    app.router.add_get("/_sim/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota-rate", type=float, default=200.0)
    parser.add_argument("--quota-burst", type=int, default=20)
    parser.add_argument("--storm-after", type=float, default=5.0)
    parser.add_argument("--storm-for", type=float, default=3.0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
