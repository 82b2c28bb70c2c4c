"""List failed runs: ``GET /runs`` with property filters, followed page by page as pages arrive.

One listing per flow of the :class:`~.query.ListQuery`, or one for the whole sandbox. Each
page's runs are handed to the caller before the next page is asked for, so that a long listing
streams; run IDs already handed out are never repeated. Pages continue through
``_links.next.href`` (:func:`~bulkretry._http.links.resolve_next` decides which links may be
followed); an empty ``_links`` ends the listing; a continuation token seen twice stops it.

Runs already re-triggered (:class:`~.exclusions.DoneRuns`) are left out. With
``skip_superseded``, so is a failed run older than the newest successful run of its flow: one
look-up per flow that has failed runs, ``GET /runs`` for the flow's successful runs, newest
first, one run (a server that ignored the order can only make fewer runs left out).

Requests share ``run``'s machinery: the client's GET (:meth:`FlowServiceClient.get`), a token
from :func:`token_provider` (a 401 ``401013`` renews it once and retries), a :class:`Throttle` at
the configured rate, and what to do after each answer from
:func:`bulkretry._policy.decide_read`, the decision for every GET: retries with full-jitter
backoff and ``Retry-After``, and when to stop. A stop raises :class:`ListingHalted`; the runs
handed out before it stay handed out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from yarl import URL

from .._config import Settings
from .._exceptions import ListingHalted, MissingCredentialsError, TransportError
from .._http.auth import TokenProvider, token_provider
from .._http.client import MAX_PAGE_BYTES, FlowServiceClient, make_session
from .._http.links import next_href, resolve_next
from .._http.lookups import (
    flow_url,
    is_flow_id,
    listing_url,
    page_problem,
    parse_run_page,
    runs_url,
)
from .._http.runs import ListedRun
from .._model import Answer
from .._pace.throttle import Throttle
from .._policy import Action, decide_read
from .exclusions import DoneRuns
from .query import DEFAULT_PAGE_SIZE, ListQuery
from .stats import ListingStats

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_BYTES",
    "DoneRuns",
    "FailedRunLister",
    "ListQuery",
    "ListedRun",
    "ListingHalted",
    "ListingStats",
    "list_failed_runs",
]

log = logging.getLogger("bulkretry")

#: What a 200 must hold to be a page, in the words of a message that says it did not.
_PAGE = "a page of runs"

Wait = Callable[[float], Awaitable[None]]
OnPage = Callable[[list[ListedRun]], None]


class FailedRunLister:
    """List failed runs page by page, handing each page's new runs out as it arrives.

    ``session`` and ``tokens`` belong to the caller if given (a test passes a session on a fake
    connector); otherwise a session is opened for the listing and the token comes from
    ``settings.credentials``. ``wait`` replaces ``asyncio.sleep`` between attempts (tests pass
    one that never sleeps). ``done`` names runs to leave out as re-triggered already;
    ``skip_superseded`` leaves out failed runs older than their flow's newest success.
    """

    def __init__(
        self,
        settings: Settings,
        query: ListQuery,
        *,
        session: aiohttp.ClientSession | None = None,
        tokens: TokenProvider | None = None,
        wait: Wait | None = None,
        rng: random.Random | None = None,
        done: DoneRuns | None = None,
        skip_superseded: bool = False,
    ) -> None:
        self.settings = settings
        self.query = query = query.folded()
        self.stats = ListingStats(flows=len(query.flow_ids))
        self.throttle = Throttle(
            settings.rate, burst=settings.burst, pause_after=settings.pause_after
        )
        self._session = session
        self._tokens = tokens
        self._wait = wait or asyncio.sleep
        self._rng = rng or random.Random()
        self._base = URL(settings.base_url.rstrip("/"))
        self._seen: set[str] = set()
        self._flow: str | None = None
        self._client: FlowServiceClient | None = None
        self._done = done
        self._skip_superseded = skip_superseded
        #: Each flow's newest successful run's createdAt (None: none found).
        self._newest_success: dict[str, int | None] = {}

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<FailedRunLister base={str(self._base)!r} flow={self._flow!r} pages={s.pages} "
            f"runs={s.runs} requests={s.requests} retries={s.retries} {self.throttle!r}>"
        )

    async def run(self, on_page: OnPage) -> ListingStats:
        """List every flow of the query; call ``on_page`` with each page's new runs, in order.

        ``on_page`` returns before the next page is requested; whatever it raises ends the
        listing. Raise :class:`ListingHalted` when a page cannot be had.
        """
        own = None
        try:
            credentials = self.settings.credentials
            if credentials is None:
                raise MissingCredentialsError(
                    ["BULKRETRY_ACCESS_TOKEN", "BULKRETRY_API_KEY", "BULKRETRY_ORG_ID"]
                )
            if self._session is None:
                own = self._session = make_session(self.settings)
            self._client = FlowServiceClient.for_settings(self._session, self.settings)
            if self._tokens is None:
                self._tokens = token_provider(
                    credentials,
                    self._session,
                    timeout=self.settings.timeout,
                    proxy=self.settings.ims_proxy,
                )
            for flow_id in self.query.flows():
                self._flow = flow_id
                listed = await self._list_flow(flow_id, on_page)
                # Not one failed run: a typo'd flow ID reads the same as a flow with nothing
                # to re-trigger, unless the flow itself is asked for.
                if not listed and flow_id is not None and not await self._flow_exists(flow_id):
                    self.stats.unknown_flows.append(flow_id)
        finally:
            if own is not None:
                await own.close()
        return self.stats

    def first_url(self, flow_id: str | None) -> URL:
        """Return the URL of the first page for ``flow_id`` (None: every flow)."""
        return runs_url(self._base, self.query.params(flow_id))

    async def _list_flow(self, flow_id: str | None, on_page: OnPage) -> bool:
        """List one flow (None: every flow); return False when its pages held no run at all."""
        url = self.first_url(flow_id)
        visited = {str(url)}
        page = 0
        items = 0
        while True:
            page += 1
            body = await self._fetch(url, self._where(page), f"page {page}")
            self.stats.pages += 1
            items += len(body["items"])
            runs = self._accept(body["items"], flow_id)
            if self._skip_superseded and runs:
                runs = await self._unsuperseded(runs, flow_id)
            self.stats.runs += len(runs)
            on_page(runs)
            try:
                href = next_href(body)
                if href is None:
                    return items > 0
                url = resolve_next(self._base, href)
            except ListingHalted as exc:
                raise ListingHalted(self._where(page) + exc.reason) from None
            key = url.query.get("continuationToken") or str(url)
            if key in visited:
                raise ListingHalted(
                    self._where(page) + "the next-page link repeats an earlier page "
                    "(the same continuation token twice); the listing would never end"
                )
            visited.add(key)

    def _accept(self, items: Sequence[object], flow_id: str | None) -> list[ListedRun]:
        """Keep the runs of a page that are new, fit the filters and were not re-triggered."""
        runs: list[ListedRun] = []
        done = self._done or None
        for item in items:
            run = ListedRun.from_item(item)
            if run is None or not self.query.admits(run, flow_id):
                self.stats.left_out += 1
                continue
            if run.run_id in self._seen:
                self.stats.duplicates += 1
                continue
            self._seen.add(run.run_id)
            why = done.reason(run.run_id) if done is not None else None
            if why is not None:
                self.stats.done[why] += 1
                continue
            runs.append(run)
        return runs

    async def _unsuperseded(self, runs: list[ListedRun], flow_id: str | None) -> list[ListedRun]:
        """Leave out the runs created before the newest successful run of their flow."""
        kept: list[ListedRun] = []
        for run in runs:
            flow = run.flow_id or flow_id
            # A run starts after it is created: its start stands in for a missing createdAt.
            when = run.created_at_ms if run.created_at_ms is not None else run.started_at_ms
            if flow is None or when is None or not is_flow_id(flow):
                kept.append(run)
                continue
            if flow not in self._newest_success:
                self._newest_success[flow] = await self._newest_success_of(flow)
            newest = self._newest_success[flow]
            if newest is not None and when < newest:
                self.stats.superseded += 1
                continue
            kept.append(run)
        return kept

    async def _newest_success_of(self, flow: str) -> int | None:
        """Return when the newest successful run of ``flow`` was created; None if it has none."""
        url = listing_url(self._base, flow_id=flow, status="success", orderby="-createdAt", limit=1)
        where = f"looking up the newest successful run of flow {flow} stopped: "
        body = await self._fetch(url, where, f"flow {flow}'s newest success")
        self.stats.lookups += 1
        views, _ = parse_run_page(body)
        return max(
            (
                view.created_at
                for view in views
                if view.final == "success"
                and view.created_at is not None
                and view.flow_id in (None, flow)
            ),
            default=None,
        )

    async def _flow_exists(self, flow: str) -> bool:
        """Ask for the flow itself: False when Flow Service answers 404 (no such flow)."""
        where = f"looking up flow {flow} stopped: "
        try:
            await self._fetch(flow_url(self._base, flow), where, f"flow {flow}")
        except ListingHalted as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _where(self, page: int) -> str:
        flow = f" of flow {self._flow}" if self._flow is not None else ""
        return f"listing the failed runs{flow} stopped at page {page}: "

    async def _fetch(self, url: URL, where: str, what: str) -> dict[str, Any]:
        """Get one page, retrying and renewing the token as :func:`decide_read` says.

        ``where`` starts the reason of a halt; ``what`` names the page in log lines.
        """
        assert self._tokens is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        renewed = False
        while True:
            await self.throttle.acquire()
            attempt += 1
            stats = self.stats
            stats.requests += 1
            if attempt > 1:
                stats.retries += 1
            token = await self._tokens.token()
            sent_at = loop.time()
            try:
                outcome: Answer | TransportError = await self._get(url, token)
            except TransportError as exc:
                outcome = exc
                stats.network_errors += 1
            now = loop.time()
            self.throttle.observe_latency(now - sent_at)
            if isinstance(outcome, Answer):
                if outcome.status == 429:
                    stats.throttled += 1
                elif outcome.status >= 500:
                    stats.server_errors += 1
            decision = decide_read(
                outcome,
                attempt=attempt,
                elapsed=now - started,
                settings=self.settings,
                rng=self._rng,
                wall_now=time.time(),
                wanted=_PAGE,
            )
            if decision.throttled:
                self.throttle.on_throttled(decision.retry_after, sent_at=sent_at)
            else:
                self.throttle.on_success()
            if decision.action is Action.SUCCEED:
                assert isinstance(outcome, Answer)
                assert isinstance(outcome.body, dict)
                return outcome.body
            error = decision.error
            assert error is not None
            if decision.token_expired and not renewed:
                # Renewal is not a failed attempt: the next try uses a new token.
                renewed = True
                attempt -= 1
                await self._tokens.renew(token)
                stats.token_renewals += 1
                continue
            if decision.action is Action.HALT:
                reason = decision.halt_reason or error.message
                if decision.token_expired:
                    reason = f"the API refused the renewed access token too ({error.message})"
                answer = outcome if isinstance(outcome, Answer) else None
                raise ListingHalted(
                    where + reason,
                    status=answer.status if answer is not None else None,
                    error_code=error.error_code,
                    request_id=answer.request_id if answer is not None else None,
                )
            log.info(
                "%s: %s; retrying in %.1f s (attempt %d)",
                what,
                error.message,
                decision.delay,
                attempt + 1,
            )
            await self._wait(decision.delay)

    async def _get(self, url: URL, token: str) -> Answer:
        """Make one GET; raise :class:`TransportError` below HTTP.

        A 200 that is not a page of runs (no ``items`` list) says so in ``body_problem``.
        """
        assert self._client is not None
        answer = await self._client.get(url, token, cap=MAX_PAGE_BYTES)
        if answer.body_problem is None and (problem := page_problem(answer.body)) is not None:
            answer.body_problem = problem
        return answer


async def list_failed_runs(
    settings: Settings,
    query: ListQuery,
    on_page: OnPage,
    *,
    session: aiohttp.ClientSession | None = None,
    tokens: TokenProvider | None = None,
    wait: Wait | None = None,
    rng: random.Random | None = None,
    done: DoneRuns | None = None,
    skip_superseded: bool = False,
) -> ListingStats:
    """List the failed runs ``query`` asks for, calling ``on_page`` as each page arrives."""
    lister = FailedRunLister(
        settings,
        query,
        session=session,
        tokens=tokens,
        wait=wait,
        rng=rng,
        done=done,
        skip_superseded=skip_superseded,
    )
    return await lister.run(on_page)
