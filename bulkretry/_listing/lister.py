"""List failed runs: ``GET /runs`` with property filters, followed page by page as pages arrive.

One listing per flow of the :class:`~.query.ListQuery`, or one for the whole sandbox. Each
page's runs are handed to the caller before the next page is asked for, so that a long listing
streams; run IDs already handed out are never repeated. Pages continue through
``_links.next.href`` (:func:`~.query.resolve_next` decides which links may be followed); an
empty ``_links`` ends the listing; a continuation token seen twice stops it.

Requests share ``run``'s machinery: a token from :func:`token_provider` (a 401 ``401013`` renews
it once and retries), a :class:`Throttle` at the configured rate, and what to do after each
answer from :func:`bulkretry._policy.decide_read`, the decision for every GET: retries with
full-jitter backoff and ``Retry-After``, and when to stop. A stop raises
:class:`ListingHalted`; the runs handed out before it stay handed out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from .._config import Settings
from .._exceptions import ListingHalted, MissingCredentialsError, TransportError
from .._http.auth import TokenProvider, token_provider
from .._http.client import make_session, parse_body, read_capped, request_id, translate
from .._http.runs import ListedRun
from .._model import Answer
from .._pace.throttle import Throttle
from .._policy import Action, decide_read
from .query import DEFAULT_PAGE_SIZE, ListQuery, next_href, resolve_next

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_BYTES",
    "FailedRunLister",
    "ListQuery",
    "ListedRun",
    "ListingHalted",
    "ListingStats",
    "list_failed_runs",
]

log = logging.getLogger("bulkretry")

#: A page of 1000 runs is about 2 MB; anything past this is not read.
MAX_PAGE_BYTES = 32 * 1024 * 1024
#: What a 200 must hold to be a page, in the words of a message that says it did not.
_PAGE = "a page of runs"

Wait = Callable[[float], Awaitable[None]]
OnPage = Callable[[list[ListedRun]], None]


@dataclass(slots=True, kw_only=True)
class ListingStats:
    """What a listing did: pages read, runs handed out or left out, and the requests it took."""

    started: float = field(default_factory=time.monotonic)
    flows: int = 0
    pages: int = 0
    runs: int = 0
    duplicates: int = 0
    left_out: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    network_errors: int = 0
    token_renewals: int = 0

    @property
    def elapsed(self) -> float:
        """Seconds since the listing started."""
        return time.monotonic() - self.started

    def summary(self) -> str:
        """Return the end-of-listing line for stderr."""
        flows = "every flow" if self.flows == 0 else f"{self.flows} flow" + "s" * (self.flows != 1)
        extra = ""
        if self.duplicates:
            extra += f", {self.duplicates} repeated"
        if self.left_out:
            extra += f", {self.left_out} left out (not failed, outside the window, or no ID)"
        runs = f"{self.runs} failed run" + "s" * (self.runs != 1)
        pages = f"{self.pages} page" + "s" * (self.pages != 1)
        return (
            f"bulkretry: {runs} listed from {flows} in {pages}"
            f"{extra}; {self.requests} requests ({self.retries} retries, {self.throttled} "
            f"answered 429, {self.server_errors} 5xx, {self.network_errors} network errors, "
            f"{self.token_renewals} token renewals) in {self.elapsed:.1f} s"
        )


class FailedRunLister:
    """List failed runs page by page, handing each page's new runs out as it arrives.

    ``session`` and ``tokens`` belong to the caller if given (a test passes a session on a fake
    connector); otherwise a session is opened for the listing and the token comes from
    ``settings.credentials``. ``wait`` replaces ``asyncio.sleep`` between attempts (tests pass
    one that never sleeps).
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
        connect = min(settings.timeout, 10.0)
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout, sock_connect=connect, connect=None
        )

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
            if self._session is None:
                own = self._session = make_session(self.settings)
            if self._tokens is None:
                credentials = self.settings.credentials
                if credentials is None:
                    raise MissingCredentialsError(
                        ["BULKRETRY_ACCESS_TOKEN", "BULKRETRY_API_KEY", "BULKRETRY_ORG_ID"]
                    )
                self._tokens = token_provider(
                    credentials,
                    self._session,
                    timeout=self.settings.timeout,
                    proxy=self.settings.ims_proxy,
                )
            for flow_id in self.query.flows():
                self._flow = flow_id
                await self._list_flow(flow_id, on_page)
        finally:
            if own is not None:
                await own.close()
        return self.stats

    def first_url(self, flow_id: str | None) -> URL:
        """Return the URL of the first page for ``flow_id`` (None: every flow)."""
        # ``=`` stays as the docs write it (property=flowId==…); ``>`` and ``<`` are escaped.
        query = urlencode(self.query.params(flow_id), quote_via=quote, safe="=")
        return URL(f"{self._base}/runs?{query}", encoded=True)

    async def _list_flow(self, flow_id: str | None, on_page: OnPage) -> None:
        url = self.first_url(flow_id)
        visited = {str(url)}
        page = 0
        while True:
            page += 1
            body = await self._fetch(url, page)
            self.stats.pages += 1
            on_page(self._accept(body["items"], flow_id))
            try:
                href = next_href(body)
                if href is None:
                    return
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
        """Keep the runs of a page that are new and fit the filters."""
        runs: list[ListedRun] = []
        for item in items:
            run = ListedRun.from_item(item)
            if run is None or not self.query.admits(run, flow_id):
                self.stats.left_out += 1
                continue
            if run.run_id in self._seen:
                self.stats.duplicates += 1
                continue
            self._seen.add(run.run_id)
            runs.append(run)
        self.stats.runs += len(runs)
        return runs

    def _where(self, page: int) -> str:
        flow = f" of flow {self._flow}" if self._flow is not None else ""
        return f"listing the failed runs{flow} stopped at page {page}: "

    async def _fetch(self, url: URL, page: int) -> dict[str, Any]:
        """Get one page, retrying and renewing the token as :func:`decide_read` says."""
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
                    self._where(page) + reason,
                    status=answer.status if answer is not None else None,
                    error_code=error.error_code,
                    request_id=answer.request_id if answer is not None else None,
                )
            log.info(
                "page %d: %s; retrying in %.1f s (attempt %d)",
                page,
                error.message,
                decision.delay,
                attempt + 1,
            )
            await self._wait(decision.delay)

    async def _get(self, url: URL, token: str) -> Answer:
        """Make one GET; raise :class:`TransportError` below HTTP.

        A 200 that is not a page of runs (no ``items`` list) says so in ``body_problem``.
        """
        assert self._session is not None
        credentials = self.settings.credentials
        assert credentials is not None
        headers = {
            "Authorization": "Bearer " + token,
            "x-api-key": credentials.api_key,
            "x-gw-ims-org-id": credentials.org_id,
            "x-sandbox-name": credentials.sandbox,
            "Accept": "application/json",
        }
        try:
            async with self._session.get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
                proxy=self.settings.proxy,
            ) as response:
                raw, truncated = await read_capped(response, MAX_PAGE_BYTES)
                body, problem = parse_body(raw, truncated, cap=MAX_PAGE_BYTES)
                if problem is None and not (
                    isinstance(body, dict) and isinstance(body.get("items"), list)
                ):
                    problem = "the body has no list of items"
                return Answer(
                    status=response.status,
                    body=body,
                    body_problem=problem,
                    retry_after=response.headers.get("Retry-After"),
                    request_id=request_id(response.headers),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise translate(exc, url_host=self._base.host or str(self._base)) from exc


async def list_failed_runs(
    settings: Settings,
    query: ListQuery,
    on_page: OnPage,
    *,
    session: aiohttp.ClientSession | None = None,
    tokens: TokenProvider | None = None,
    wait: Wait | None = None,
    rng: random.Random | None = None,
) -> ListingStats:
    """List the failed runs ``query`` asks for, calling ``on_page`` as each page arrives."""
    lister = FailedRunLister(settings, query, session=session, tokens=tokens, wait=wait, rng=rng)
    return await lister.run(on_page)
