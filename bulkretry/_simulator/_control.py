"""Control endpoints under ``/_sim/`` for a simulator running in another process.

``GET /_sim/stats`` answers what the simulator saw, each client's share of the quota included;
``POST /_sim/quota`` with ``{"rate": R, "burst": B}``, ``{"requests": N, "window": S}`` or
``null`` changes the quota, so a benchmark can halve it mid-run. Other shapes are named:
``{"shape": "leaky-bucket", "rate": R}``, ``{"shape": "sliding-window", "requests": N,
"window": S, "count_rejected": true}``. These paths are not Flow Service's and are never
throttled.
"""

from __future__ import annotations

from dataclasses import asdict

import orjson
from aiohttp import web

from ._app import Engine
from ._quota import (
    LeakyBucketQuota,
    Quota,
    SlidingWindowQuota,
    TokenBucketQuota,
    WindowQuota,
    shape_of,
)

CONTROL_PREFIX = "/_sim"


def quota_to_json(quota: Quota | None) -> dict[str, object] | None:
    """Describe a quota as the control endpoint reads and writes it."""
    if quota is None:
        return None
    if isinstance(quota, TokenBucketQuota):
        return {"rate": quota.rate, "burst": quota.burst}
    if isinstance(quota, WindowQuota):
        return {"requests": quota.requests, "window": quota.window}
    shape = shape_of(quota)
    if isinstance(quota, LeakyBucketQuota):
        return {"shape": shape, "rate": quota.rate}
    return {
        "shape": shape,
        "requests": quota.requests,
        "window": quota.window,
        "count_rejected": quota.count_rejected,
    }


def quota_from_json(raw: object) -> Quota | None:
    """Read a quota written as `quota_to_json` writes it; raise ValueError if it is not one."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("a quota is an object or null")
    shape = raw.get("shape", "token-bucket" if "rate" in raw else "fixed-window")
    try:
        if shape == "token-bucket" and "rate" in raw:
            return TokenBucketQuota(rate=float(raw["rate"]), burst=int(raw.get("burst", 1)))
        if shape == "leaky-bucket" and "rate" in raw:
            return LeakyBucketQuota(rate=float(raw["rate"]))
        if shape == "fixed-window" and "requests" in raw:
            return WindowQuota(requests=int(raw["requests"]), window=float(raw.get("window", 1.0)))
        if shape == "sliding-window" and "requests" in raw:
            return SlidingWindowQuota(
                requests=int(raw["requests"]),
                window=float(raw.get("window", 1.0)),
                count_rejected=bool(raw.get("count_rejected", True)),
            )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a quota: {exc}") from None
    raise ValueError(
        "a quota has rate (and burst) or requests (and window), and a shape among "
        "token-bucket, leaky-bucket, fixed-window and sliding-window"
    )


def snapshot(engine: Engine) -> dict[str, object]:
    """Summarize what the simulator saw, as ``GET /_sim/stats`` answers it."""
    engine.flow.settle()
    counts = engine.counts
    return {
        "requests": engine.count,
        "first_request_at": engine.first_at,
        "last_request_at": engine.last_at,
        "token_requests": engine.issuer.requests,
        "answers": {str(k): v for k, v in sorted(engine.stats.items(), key=str)},
        "retriggers": sum(counts.values()),
        "retriggered_runs": len(counts),
        "duplicate_retriggers": sum(c - 1 for c in counts.values() if c > 1),
        "quota": quota_to_json(engine.limiter.quota if engine.limiter is not None else None),
        "endpoints": dict(sorted(engine.endpoints.items())),
        "clients": {key: asdict(tally) for key, tally in sorted(engine.clients.items())},
        "new_runs": {k: v for k, v in sorted(engine.flow.lifecycle.counts.items()) if v},
    }


def add_control_routes(app: web.Application, engine: Engine) -> None:
    """Serve ``/_sim/stats``, ``/_sim/retrigger-counts`` and ``/_sim/quota`` for `engine`."""

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(snapshot(engine)), content_type="application/json")

    async def counts(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(engine.counts), content_type="application/json")

    async def quota(request: web.Request) -> web.Response:
        try:
            engine.set_quota(quota_from_json(orjson.loads(await request.read())))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        limiter = engine.limiter
        body = orjson.dumps({"quota": quota_to_json(None if limiter is None else limiter.quota)})
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(f"{CONTROL_PREFIX}/stats", stats)
    app.router.add_get(f"{CONTROL_PREFIX}/retrigger-counts", counts)
    app.router.add_post(f"{CONTROL_PREFIX}/quota", quota)
