"""The simulator's aiohttp application: gateway checks, quota, trouble, then Flow Service itself.

Every API request goes through the same steps, in this order:
record it and call the hook; wait out the latency; check the gateway headers (token, API key,
org); take its share of the quota, counted for its client; check the sandbox; pick the answer a
hook, script, throttle or fault forces, if any; serve it (`_delivery`) by doing Flow Service's
work (`_flow`). Look-ups (``GET``) take the same steps; they suffer throttles and faults only
with ``trouble_on_listing``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque

from aiohttp import web

from . import _answers as A
from ._config import SimulatorConfig
from ._delivery import Delivery, Visit
from ._flow import FlowService
from ._ims import IMS_PATH, TokenIssuer
from ._quota import Limiter, Quota, policy, rate_limit_headers
from ._records import ClientCounts, RecordedRequest, Retrigger
from ._state import RunStore
from ._trouble import Answer, retry_after_value

RETRIGGER, GET_RUN, LIST_RUNS, TOKEN = "re-trigger", "get-run", "list-runs", "token"
GET_FLOW = "get-flow"
"""The endpoints, as `Engine.endpoints` counts requests to them."""


class Engine:
    """Hold the simulator's state while it runs, and answer its HTTP requests."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._clock = config.clock
        self._wall = config.wall_clock
        seed = config.seed
        self._latency_rng = random.Random(f"{seed}:latency")
        self.faults = config.fault_picker(random.Random(f"{seed}:faults"))
        self.throttle = config.throttle(random.Random(f"{seed}:throttle"))
        # Request IDs read as UUIDs: a seeded prefix, then the request's index.
        prefix = f"{random.Random(f'{seed}:rid').getrandbits(80):020x}"
        self._rid_prefix = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:]}-"
        self.issuer = TokenIssuer(
            client_id=config.client_id,
            client_secret=config.client_secret,
            scopes=config.scopes,
            lifetime=config.token_lifetime,
            static_token=config.access_token,
            clock=self._clock,
            wall_clock=self._wall,
            rng=random.Random(f"{seed}:ims"),
        )
        self.flow = FlowService(config)
        self.delivery = Delivery(config)
        self.limiter: Limiter | None = None
        if config.quota is not None:
            self.limiter = Limiter(config.quota, self._clock())
        self.scripts: dict[str | None, deque[Answer]] = {}
        self.requests: list[RecordedRequest] = []
        self.clients: dict[str, ClientCounts] = {}
        self.endpoints: Counter[str] = Counter()
        self.count = 0
        #: Wall-clock times (epoch seconds) of the first and the latest API request, if any:
        #: a benchmark reads a client's start-up from the first (and, with its exit, its tail
        #: from the latest).
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._api_keys = frozenset({config.api_key, config.client_id, *config.extra_api_keys})
        self._slow = config.latency > 0 or config.jitter > 0

    def __repr__(self) -> str:
        return (
            f"Engine(requests={self.count}, retriggered={sum(self.counts.values())}, "
            f"runs={len(self.store)}, limiter={self.limiter!r}, stats={dict(self.stats)!r})"
        )

    @property
    def store(self) -> RunStore:
        """Return the flows and runs."""
        return self.flow.store

    @property
    def counts(self) -> dict[str, int]:
        """Return how many times each run was re-triggered."""
        return self.flow.counts

    @property
    def retriggers(self) -> list[Retrigger]:
        """Return every re-trigger performed, oldest first."""
        return self.flow.retriggers

    @property
    def stats(self) -> Counter[int | str]:
        """Count answers by status, plus resets and hangs."""
        return self.delivery.stats

    @property
    def closing(self) -> asyncio.Event:
        """Return the event that ends hung requests when the simulator stops."""
        return self.delivery.closing

    def application(self) -> web.Application:
        """Build the aiohttp application that serves this engine."""
        app = web.Application()
        base = self.config.base_path
        app.router.add_post(f"{base}/runs/{{run_id}}/action", self.handle_action)
        app.router.add_get(f"{base}/runs", self.handle_list)
        app.router.add_get(f"{base}/runs/{{run_id}}", self.handle_get)
        app.router.add_get(f"{base}/flows/{{flow_id}}", self.handle_flow)
        app.router.add_post(IMS_PATH, self.handle_token)
        return app

    def set_quota(self, quota: Quota | None) -> None:
        """Change the quota from now on; a quota of the same shape keeps what it has used."""
        now = self._clock()
        if quota is None:
            self.limiter = None
        elif self.limiter is None:
            self.limiter = Limiter(quota, now)
        else:
            self.limiter = self.limiter.replace(quota, now)

    # -- handlers ----------------------------------------------------------------------------

    async def handle_action(self, request: web.Request) -> web.StreamResponse:
        """Serve ``POST /runs/{RUN_ID}/action?op=…``."""
        run_id = request.match_info["run_id"]
        visit = await self._gate(request, run_id, RETRIGGER, troubled=True)
        if visit.early is not None:
            return self.delivery.sent(visit.early, visit)
        op = request.query.get("op", "")
        if op.lower().replace("_", "-") != "re-trigger":
            refusal = A.flow_error_for(A.UNSUPPORTED_OP, visit.rid, op=op)
            return await self.delivery.serve(request, visit, lambda: (refusal, None))
        forced = visit.forced
        lost = isinstance(forced, str) and forced.startswith("in-doubt-")
        return await self.delivery.serve(
            request, visit, lambda: self.flow.retrigger(run_id, visit, lost=lost)
        )

    async def handle_list(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /runs`` with filters, ordering, pages and counts."""
        visit = await self._gate(request, None, LIST_RUNS, troubled=self.config.trouble_on_listing)
        if visit.early is not None:
            return self.delivery.sent(visit.early, visit)
        return await self.delivery.serve(
            request, visit, lambda: self.flow.list_runs(request.query, visit.rid)
        )

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /runs/{RUN_ID}``: the run as the spec shows it, in a one-item list."""
        run_id = request.match_info["run_id"]
        visit = await self._gate(request, run_id, GET_RUN, troubled=self.config.trouble_on_listing)
        if visit.early is not None:
            return self.delivery.sent(visit.early, visit)
        return await self.delivery.serve(
            request, visit, lambda: self.flow.look_up(run_id, visit.rid)
        )

    async def handle_flow(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /flows/{FLOW_ID}``: the flow, in a one-item list, or 404."""
        flow_id = request.match_info["flow_id"]
        visit = await self._gate(request, None, GET_FLOW, troubled=self.config.trouble_on_listing)
        if visit.early is not None:
            return self.delivery.sent(visit.early, visit)
        return await self.delivery.serve(request, visit, lambda: self.flow.flow(flow_id, visit.rid))

    async def handle_token(self, request: web.Request) -> web.StreamResponse:
        """Serve IMS's ``POST /ims/token/v3`` with client credentials."""
        visit = self._begin(request, None, TOKEN)
        form = dict(request.query)
        if request.can_read_body:
            form.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})

        def work() -> tuple[web.Response, dict[str, object] | None]:
            status, body = self.issuer.issue(form)
            return A.json_answer(status, body, visit.rid), body if status == 200 else None

        return await self.delivery.serve(request, visit, work)

    # -- the steps ---------------------------------------------------------------------------

    def _begin(self, request: web.Request, run_id: str | None, endpoint: str) -> Visit:
        self.count += 1
        self.endpoints[endpoint] += 1
        self.last_at = self._wall()
        if self.first_at is None:
            self.first_at = self.last_at
        index = self.count
        visit = Visit(index=index, rid=f"{self._rid_prefix}{index:012x}")
        hook = self.config.on_request
        if not (self.config.record_requests or hook is not None):
            return visit
        rec = RecordedRequest(
            index=index,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            time=self._clock(),
            wall_time=self.last_at,
            request_id=visit.rid,
            run_id=run_id,
        )
        if self.config.record_requests:
            self.requests.append(rec)
        visit.rec = rec
        visit.forced = hook(rec) if hook is not None else None
        return visit

    async def _gate(
        self, request: web.Request, run_id: str | None, endpoint: str, *, troubled: bool
    ) -> Visit:
        visit = self._begin(request, run_id, endpoint)
        if self._slow:
            cfg = self.config
            await asyncio.sleep(cfg.latency + self._latency_rng.uniform(0.0, cfg.jitter))
        visit.early = self._check_gateway(request, visit.rid)
        if visit.early is None:
            self._take_quota(request, visit)
        if visit.early is None:
            visit.early = self._check_sandbox(request, visit.rid)
        if visit.early is None and visit.forced is None:
            is_retrigger = endpoint == RETRIGGER
            visit.forced = self._scripted(run_id if is_retrigger else None)
            if visit.forced is None and troubled:
                if self.throttle.pick():
                    self._throttle(visit)
                else:
                    visit.forced = self.faults.pick(retrigger=is_retrigger)
        if visit.rec is not None and visit.forced is not None:
            visit.rec.fault = str(visit.forced)
        return visit

    def _check_gateway(self, request: web.Request, rid: str) -> web.Response | None:
        headers = request.headers
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return A.gateway_error(A.TOKEN_MISSING, rid)
        if not self.issuer.is_valid(token):
            return A.gateway_error(A.TOKEN_INVALID, rid)
        api_key = headers.get("x-api-key")
        if not api_key:
            return A.gateway_error(A.API_KEY_MISSING, rid)
        if api_key not in self._api_keys:
            return A.gateway_error(A.API_KEY_INVALID, rid)
        org = headers.get("x-gw-ims-org-id")
        if not org:
            return A.gateway_error(A.ORG_MISSING, rid)
        if org != self.config.org_id:
            return A.gateway_error(A.ORG_INVALID, rid)
        return None

    def _take_quota(self, request: web.Request, visit: Visit) -> None:
        """Count the request for its client, and refuse it if the shared quota is spent."""
        headers = request.headers
        client = headers.get(self.config.client_header) or headers.get("x-api-key") or "-"
        tally = self.clients.get(client)
        if tally is None:
            tally = self.clients[client] = ClientCounts()
        visit.tally = tally
        if visit.rec is not None:
            visit.rec.client = client
        limiter = self.limiter
        if limiter is None:
            tally.admitted += 1
            return
        now = self._clock()
        delay = limiter.admit(now)
        style = self.config.rate_limit_headers
        if style != "none":
            declared = policy(limiter.quota)
            visit.headers = rate_limit_headers(style, limiter.status(now), self._wall(), declared)
        if delay is None:
            tally.admitted += 1
            return
        tally.rejected += 1
        visit.early = self._too_many(visit.rid, delay)

    def _throttle(self, visit: Visit) -> None:
        visit.early = self._too_many(visit.rid, self.throttle.retry_after)
        if visit.tally is not None:
            visit.tally.throttled += 1
        if visit.rec is not None:
            visit.rec.fault = "throttle"

    def _check_sandbox(self, request: web.Request, rid: str) -> web.Response | None:
        sandbox = request.headers.get("x-sandbox-name")
        if not sandbox:
            if self.config.sandbox_header == "required":
                return A.flow_error_for(A.SANDBOX_MISSING, rid)
            return None
        if sandbox != self.config.sandbox:
            return A.flow_error_for(A.SANDBOX_UNKNOWN, rid, sandbox=sandbox)
        return None

    def _too_many(self, rid: str, delay: float) -> web.Response:
        value = retry_after_value(self.config.retry_after, delay, self._wall())
        return A.gateway_error(A.THROTTLED, rid, None if value is None else {"Retry-After": value})

    def _scripted(self, run_id: str | None) -> Answer | None:
        if not self.scripts:
            return None
        for key in (run_id, None) if run_id is not None else (None,):
            queue = self.scripts.get(key)
            if queue:
                answer = queue.popleft()
                if not queue:
                    del self.scripts[key]
                return answer
        return None
