"""The simulator's aiohttp application: gateway checks, quota, trouble, then Flow Service itself.

Every API request goes through the same steps, in this order:
record it and call the hook; wait out the latency; check the gateway headers (token, API key,
org); take its share of the quota; check the sandbox; pick the answer a hook, script or fault
forces, if any; serve it.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable

from aiohttp import web

from . import _answers as A
from ._config import SimulatorConfig
from ._ims import IMS_PATH, TokenIssuer
from ._listing import (
    ListingError,
    next_href,
    page,
    parse_filters,
    parse_limit,
    parse_orderby,
    select,
)
from ._records import RecordedRequest, Retrigger
from ._state import UUID_RE, Run, RunStore, new_etag, new_uuid
from ._trouble import SPOILED, Answer, Limiter, Quota, retry_after_value

HANG_POLL = 0.25
"""How often a hung request looks whether its client has gone, in seconds."""

_LINGER_RESET = struct.pack("ii", 1, 0)

Work = Callable[[], tuple[web.Response, dict[str, object] | None]]


class Engine:
    """Hold the simulator's state while it runs, and answer its HTTP requests."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._clock = config.clock
        self._wall = config.wall_clock
        seed = config.seed
        self._rng = random.Random(seed)
        self._latency_rng = random.Random(f"{seed}:latency")
        self.faults = config.fault_picker(random.Random(f"{seed}:faults"))
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
        self.store = RunStore(self._rng, allow_repeat=config.allow_repeat_retrigger)
        now_ms = int(self._wall() * 1000)
        if config.run_ids is not None:
            self.store.load(
                config.run_ids, flows=config.flows, now_ms=now_ms, history_days=config.history_days
            )
        else:
            self.store.seed(
                flows=config.flows,
                failed_per_flow=config.runs_per_flow,
                others_per_flow=config.other_runs_per_flow,
                now_ms=now_ms,
                history_days=config.history_days,
            )
        self.limiter: Limiter | None = None
        if config.quota is not None:
            self.limiter = Limiter(config.quota, self._clock())
        self.scripts: dict[str | None, deque[Answer]] = {}
        self.requests: list[RecordedRequest] = []
        self.retriggers: list[Retrigger] = []
        self.counts: dict[str, int] = {}
        self.stats: Counter[int | str] = Counter()
        self.count = 0
        self.closing = asyncio.Event()
        self._api_keys = frozenset({config.api_key, config.client_id})
        self._slow = config.latency > 0 or config.jitter > 0
        self._any_flow = new_uuid(random.Random(f"{seed}:any"))

    def __repr__(self) -> str:
        return (
            f"Engine(requests={self.count}, retriggered={sum(self.counts.values())}, "
            f"runs={len(self.store)}, limiter={self.limiter!r}, stats={dict(self.stats)!r})"
        )

    def application(self) -> web.Application:
        """Build the aiohttp application that serves this engine."""
        app = web.Application()
        base = self.config.base_path
        app.router.add_post(f"{base}/runs/{{run_id}}/action", self.handle_action)
        app.router.add_get(f"{base}/runs", self.handle_list)
        app.router.add_get(f"{base}/runs/{{run_id}}", self.handle_get)
        app.router.add_post(IMS_PATH, self.handle_token)
        return app

    def set_quota(self, quota: Quota | None) -> None:
        """Change the quota from now on; a token bucket keeps what it has used."""
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
        rec, rid, forced, early = await self._gate(request, run_id, troubled=True)
        if early is not None:
            return self._sent(early, rec)
        op = request.query.get("op", "")
        if op.lower().replace("_", "-") != "re-trigger":
            refusal = A.flow_error_for(A.UNSUPPORTED_OP, rid, op=op)
            return await self._serve(request, rec, rid, forced, lambda: (refusal, None))
        lost = isinstance(forced, str) and forced.startswith("in-doubt-")
        return await self._serve(
            request, rec, rid, forced, lambda: self._retrigger(run_id, rid, rec, lost=lost)
        )

    async def handle_list(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /runs`` with filters, ordering, pages and counts."""
        rec, rid, forced, early = await self._gate(
            request, None, troubled=self.config.trouble_on_listing
        )
        if early is not None:
            return self._sent(early, rec)
        return await self._serve(request, rec, rid, forced, lambda: self._list(request, rid))

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /runs/{RUN_ID}``: the run as the spec shows it, in a one-item list."""
        run_id = request.match_info["run_id"]
        rec, rid, forced, early = await self._gate(
            request, run_id, troubled=self.config.trouble_on_listing
        )
        if early is not None:
            return self._sent(early, rec)

        def work() -> tuple[web.Response, dict[str, object] | None]:
            run = self.store.runs.get(run_id)
            if run is None:
                return A.flow_error_for(A.NOT_FOUND, rid, run_id=run_id), None
            payload: dict[str, object] = {"items": [self._json(run)]}
            return A.json_answer(200, payload, rid), payload

        return await self._serve(request, rec, rid, forced, work)

    async def handle_token(self, request: web.Request) -> web.StreamResponse:
        """Serve IMS's ``POST /ims/token/v3`` with client credentials."""
        rec, rid, forced = self._begin(request, None)
        form = dict(request.query)
        if request.can_read_body:
            form.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})

        def work() -> tuple[web.Response, dict[str, object] | None]:
            status, body = self.issuer.issue(form)
            return A.json_answer(status, body, rid), body if status == 200 else None

        return await self._serve(request, rec, rid, forced, work)

    # -- the steps ---------------------------------------------------------------------------

    def _begin(
        self, request: web.Request, run_id: str | None
    ) -> tuple[RecordedRequest | None, str, Answer | None]:
        self.count += 1
        index = self.count
        rid = f"{self._rid_prefix}{index:012x}"
        hook = self.config.on_request
        if not (self.config.record_requests or hook is not None):
            return None, rid, None
        rec = RecordedRequest(
            index=index,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            time=self._clock(),
            wall_time=self._wall(),
            request_id=rid,
            run_id=run_id,
        )
        if self.config.record_requests:
            self.requests.append(rec)
        return rec, rid, hook(rec) if hook is not None else None

    async def _gate(
        self, request: web.Request, run_id: str | None, *, troubled: bool
    ) -> tuple[RecordedRequest | None, str, Answer | None, web.Response | None]:
        rec, rid, forced = self._begin(request, run_id)
        if self._slow:
            cfg = self.config
            await asyncio.sleep(cfg.latency + self._latency_rng.uniform(0.0, cfg.jitter))
        early = self._check_gateway(request, rid)
        if early is None and self.limiter is not None:
            delay = self.limiter.admit(self._clock())
            if delay is not None:
                early = self._throttled(rid, delay)
        if early is None:
            early = self._check_sandbox(request, rid)
        if early is None and forced is None:
            is_retrigger = run_id is not None and request.method == "POST"
            forced = self._scripted(run_id if is_retrigger else None)
            if forced is None and troubled:
                forced = self.faults.pick(retrigger=is_retrigger)
        if rec is not None:
            rec.fault = None if forced is None else str(forced)
        return rec, rid, forced, early

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

    def _check_sandbox(self, request: web.Request, rid: str) -> web.Response | None:
        sandbox = request.headers.get("x-sandbox-name")
        if not sandbox:
            if self.config.sandbox_header == "required":
                return A.flow_error_for(A.SANDBOX_MISSING, rid)
            return None
        if sandbox != self.config.sandbox:
            return A.flow_error_for(A.SANDBOX_UNKNOWN, rid, sandbox=sandbox)
        return None

    def _throttled(self, rid: str, delay: float) -> web.Response:
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

    async def _serve(
        self,
        request: web.Request,
        rec: RecordedRequest | None,
        rid: str,
        forced: Answer | None,
        work: Work,
    ) -> web.StreamResponse:
        if forced is None or forced == "ok" or forced == 200:
            return self._sent(work()[0], rec)
        if isinstance(forced, int):
            return self._sent(self._canned(forced, request, rid), rec)
        if forced == "reset":
            return self._reset(request, rec)
        if forced == "hang":
            return await self._hang(request, rec)
        response, payload = work()
        if forced in SPOILED:
            if response.status == 200 and payload is not None:
                response = A.malformed(forced, payload, rid)
            return self._sent(response, rec)
        # In doubt: the work is done, and its answer lost.
        if forced == "in-doubt-reset":
            return self._reset(request, rec)
        if forced == "in-doubt-hang":
            return await self._hang(request, rec)
        return self._sent(self._canned(int(forced.rsplit("-", 1)[1]), request, rid), rec)

    def _canned(self, status: int, request: web.Request, rid: str) -> web.Response:
        headers = None
        if status == 429:
            value = retry_after_value(
                self.config.retry_after, self.config.scripted_retry_after, self._wall()
            )
            headers = None if value is None else {"Retry-After": value}
        if request.path == IMS_PATH:
            body = {"error": "server_error", "error_description": "Simulated error."}
            return A.json_answer(status, body, rid, headers)
        return A.canned_error(status, rid, headers)

    def _sent(self, response: web.Response, rec: RecordedRequest | None) -> web.Response:
        self.stats[response.status] += 1
        if rec is not None:
            rec.status = response.status
            rec.outcome = "answered"
        return response

    def _reset(self, request: web.Request, rec: RecordedRequest | None) -> web.Response:
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

    async def _hang(self, request: web.Request, rec: RecordedRequest | None) -> web.Response:
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
        return self._reset(request, None)

    # -- Flow Service ------------------------------------------------------------------------

    def _json(self, run: Run) -> dict[str, object]:
        return run.to_json(self.config.org_id, self.config.sandbox)

    def _retrigger(
        self, run_id: str, rid: str, rec: RecordedRequest | None, *, lost: bool
    ) -> tuple[web.Response, dict[str, object] | None]:
        now_ms = int(self._wall() * 1000)
        if self.config.accept_any:
            if UUID_RE.match(run_id) is None:
                return A.flow_error_for(A.NOT_FOUND, rid, run_id=run_id), None
            self.counts[run_id] = self.counts.get(run_id, 0) + 1
            new_id, etag = new_uuid(self._rng), new_etag(self._rng, now_ms)
            if rec is not None:
                rec.performed = True
            if self.config.response_shape == "docs":
                payload: dict[str, object] = {"id": new_id, "etag": etag}
                return A.json_answer(200, payload, rid), payload
            new = Run(
                id=new_id,
                flow_id=self._any_flow,
                created_at=now_ms,
                updated_at=now_ms,
                started_at=now_ms,
                completed_at=None,
                status="inProgress",
                etag=etag,
            )
            payload = self._json(new)
            return A.json_answer(200, payload, rid), payload
        result = self.store.retrigger(run_id, now_ms)
        if result == "missing":
            return A.flow_error_for(A.NOT_FOUND, rid, run_id=run_id), None
        if result == "not-failed":
            status = self.store.runs[run_id].status
            return A.flow_error_for(A.NOT_FAILED, rid, run_id=run_id, s=status), None
        if result == "already":
            return A.flow_error_for(A.ALREADY, rid, run_id=run_id), None
        self.counts[run_id] = self.counts.get(run_id, 0) + 1
        self.retriggers.append(
            Retrigger(
                run_id=run_id,
                new_run_id=result.id,
                time=self._clock(),
                request_index=rec.index if rec is not None else self.count,
                answer_lost=lost,
            )
        )
        if rec is not None:
            rec.performed = True
        if self.config.response_shape == "docs":
            payload = {"id": result.id, "etag": result.etag}
        else:
            payload = self._json(result)
        return A.json_answer(200, payload, rid), payload

    def _list(
        self, request: web.Request, rid: str
    ) -> tuple[web.Response, dict[str, object] | None]:
        query = request.query
        cfg = self.config
        try:
            filters = parse_filters(query.getall("property", []))
            if query.get("count", "false").lower() == "true":
                payload: dict[str, object] = {
                    "count": len(select(self.store.runs.values(), filters))
                }
                return A.json_answer(200, payload, rid), payload
            result = page(
                self.store.runs.values(),
                filters=filters,
                orderby=parse_orderby(query.get("orderby")),
                limit=parse_limit(query.get("limit"), cfg.list_default_limit, cfg.list_max_limit),
                token=query.get("continuationToken"),
            )
        except ListingError as exc:
            return A.flow_error_for(A.BAD_QUERY, rid, detail=str(exc)), None
        links: dict[str, object] = {}
        if result.next_token is not None:
            links["next"] = {"href": next_href("/runs", query.items(), result.next_token)}
        payload = {"items": [self._json(r) for r in result.runs], "_links": links}
        return A.json_answer(200, payload, rid), payload
