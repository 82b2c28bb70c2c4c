"""`Simulator`: a Flow Service look-alike listening on a loopback port, for tests and benchmarks."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import replace
from types import TracebackType

from aiohttp import web

from ._app import Engine
from ._config import SimulatorConfig
from ._control import add_control_routes, snapshot
from ._ims import IMS_PATH
from ._lifecycle import Fate
from ._quota import Quota
from ._records import ClientCounts, RecordedRequest, Retrigger
from ._trouble import FAULTS, Answer


class Simulator:
    """Serve a simulated Flow Service and IMS on `config.host`, port `config.port` (0: any).

    Use it as ``async with Simulator(SimulatorConfig(...)) as sim:``; the state it shows
    (`requests`, `retrigger_counts()`, `stats`) stays readable after it stops.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self._engine = Engine(self.config)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        where = self.base_url if self.port is not None else "not listening"
        return f"Simulator({where}, {self._engine!r})"

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listening; read the bound port if the configured one was 0."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = self._engine.application()
        if self.config.control_endpoints:
            add_control_routes(app, self._engine)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening, ending any request left hanging."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._engine.closing.set()
            await runner.cleanup()

    @property
    def origin(self) -> str:
        """Return ``http://host:port``, where the IMS endpoint lives."""
        if self.port is None:
            raise RuntimeError("the simulator is not listening yet")
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Return Flow Service's base URL: endpoints are at ``{base_url}/runs/…``."""
        return f"{self.origin}{self.config.base_path}"

    @property
    def ims_url(self) -> str:
        """Return the IMS token endpoint's URL."""
        return f"{self.origin}{IMS_PATH}"

    def headers(self, token: str | None = None) -> dict[str, str]:
        """Return the headers a well-behaved client sends, with `token` or the static one."""
        cfg = self.config
        return {
            "Authorization": f"Bearer {token or cfg.access_token}",
            "x-api-key": cfg.api_key,
            "x-gw-ims-org-id": cfg.org_id,
            "x-sandbox-name": cfg.sandbox,
            "Content-Type": "application/json",
        }

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return every request received so far (if `config.record_requests`), oldest first."""
        return self._engine.requests

    @property
    def retriggers(self) -> list[Retrigger]:
        """Return every re-trigger performed so far (none are kept in accept-any mode)."""
        return self._engine.retriggers

    @property
    def stats(self) -> Counter[int | str]:
        """Count answers by HTTP status, plus ``"reset"`` and ``"hang"`` for non-answers."""
        return self._engine.stats

    @property
    def request_count(self) -> int:
        """Return how many requests arrived, recorded or not."""
        return self._engine.count

    @property
    def token_requests(self) -> int:
        """Return how many requests reached the token endpoint."""
        return self._engine.issuer.requests

    def retrigger_counts(self) -> dict[str, int]:
        """Return how many times each run was re-triggered, answer lost or not."""
        return dict(self._engine.counts)

    def client_counts(self) -> dict[str, ClientCounts]:
        """Return each client's share of the quota, keyed by `config.client_header` or API key.

        The quota is shared by every client: this is how a benchmark checks the shares are fair.
        """
        return {key: replace(tally) for key, tally in self._engine.clients.items()}

    def endpoint_counts(self) -> dict[str, int]:
        """Count requests by endpoint: ``re-trigger``, ``get-run``, ``list-runs``, ``token``."""
        return dict(self._engine.endpoints)

    @property
    def lookup_count(self) -> int:
        """Return how many look-ups (``GET /runs`` and ``GET /runs/{RUN_ID}``) arrived."""
        endpoints = self._engine.endpoints
        return endpoints["get-run"] + endpoints["list-runs"]

    def fate(self, run_id: str) -> Fate:
        """Return the fate of the line of re-triggered runs that starts at failed run `run_id`."""
        return self._engine.flow.lifecycle.fate(run_id)

    def snapshot(self) -> dict[str, object]:
        """Summarize what the simulator saw, as ``GET /_sim/stats`` answers it."""
        return snapshot(self._engine)

    def failed_run_ids(self) -> list[str]:
        """Return the IDs of the runs seeded or loaded as failed, in creation order."""
        return self._engine.store.failed_run_ids()

    def run_ids(self, status: str | None = None) -> list[str]:
        """Return the IDs of all runs, or of those with `status`, in creation order."""
        self._engine.flow.settle()
        runs = self._engine.store.runs.values()
        return [r.id for r in runs if status is None or r.status == status]

    def flow_ids(self) -> list[str]:
        """Return the IDs of the simulated flows."""
        return list(self._engine.store.flow_ids)

    def run(self, run_id: str) -> dict[str, object] | None:
        """Return a run as ``GET /runs/{RUN_ID}`` would show it, or None if there is none."""
        self._engine.flow.settle()
        run = self._engine.store.runs.get(run_id)
        return None if run is None else run.to_json(self.config.org_id, self.config.sandbox)

    def set_quota(self, quota: Quota | None) -> None:
        """Change the quota from now on (None lifts it); one of the same shape keeps its usage."""
        self._engine.set_quota(quota)

    @property
    def quota(self) -> Quota | None:
        """Return the quota in force."""
        limiter = self._engine.limiter
        return None if limiter is None else limiter.quota

    def script(self, run_id: str | None, answers: Iterable[Answer]) -> None:
        """Force the next answers for re-triggers of `run_id`, or for any API request if None.

        Each answer is an HTTP status (200: serve normally; others: Adobe's error body for that
        status) or a fault word such as ``"reset"`` or ``"in-doubt-500"``. Scripts apply after
        the header checks and the quota, and before random faults.
        """
        queue = self._engine.scripts.setdefault(run_id, deque())
        for answer in answers:
            if isinstance(answer, str) and answer not in FAULTS:
                raise ValueError(f"unknown scripted answer {answer!r}")
            queue.append(answer)
