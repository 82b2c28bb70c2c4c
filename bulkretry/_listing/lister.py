"""List failed runs: ``GET /runs`` with property filters, followed page by page as pages arrive.

One listing per flow (``property`` filters are ANDed, so several flows cannot share a query), or
one for the whole sandbox. Each page's runs are handed to the caller before the next page is
asked for, so that a long listing streams; run IDs already handed out are never repeated.

Pages continue through ``_links.next.href``, which Adobe writes relative to the service base
(``/runs?continuationToken=…`` means ``{base}/runs?continuationToken=…``); an absolute link is
followed only to the base URL's own scheme, host and port, since the token goes with it. An
empty ``_links`` ends the listing; a continuation token seen twice stops it.

Requests share ``run``'s machinery: a token from :func:`token_provider` (a 401 ``401013`` renews
it once and retries), a :class:`Throttle` at the configured rate, and retries with backoff and
``Retry-After``. A GET changes nothing, so every 5xx and network failure is safe to retry;
:func:`decide_page` holds the whole decision:

======================================  ============================================
what happened                           decision
======================================  ============================================
200 with an ``items`` list              done
200 without one (HTML, cut short…)      retry
3xx                                     stop: a redirect could carry the token away
401 ``401013``                          renew the token once, then ask again
other 401, 403                          stop: the credentials are refused
429                                     retry after max(Retry-After, backoff);
                                        slows the throttle
503                                     retry after max(Retry-After, backoff)
501, 505                                stop
other 5xx, network error, timeout       retry after backoff
TLS failure                             stop
404, other 4xx                          stop
Retry-After above the cap               stop
attempts reach ``max_attempts``, or     stop ("gave up")
the page's ``deadline`` would pass
======================================  ============================================

A stop raises :class:`ListingHalted`; the runs handed out before it stay handed out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from .._config import Settings
from .._exceptions import BatchHalted, MissingCredentialsError, TransportError
from .._http.auth import TokenProvider, token_provider
from .._http.client import Answer, make_session, parse_body, read_capped, translate
from .._http.runs import DEFAULT_PAGE_SIZE, ListedRun, ListQuery, shorten
from .._pace.throttle import Throttle
from .._policy import adobe_error, backoff_delay, parse_retry_after

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_BYTES",
    "FailedRunLister",
    "ListQuery",
    "ListedRun",
    "ListingHalted",
    "ListingStats",
    "PageDecision",
    "decide_page",
    "list_failed_runs",
    "resolve_next",
]

log = logging.getLogger("bulkretry")

#: A page of 1000 runs is about 2 MB; anything past this is not read.
MAX_PAGE_BYTES = 32 * 1024 * 1024

Wait = Callable[[float], Awaitable[None]]
OnPage = Callable[[list[ListedRun]], None]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _folded(query: ListQuery) -> ListQuery:
    """Return ``query`` with UUID flow IDs in lower case, as Flow Service writes ``flowId``.

    Each listed run's ``flowId`` is checked against the flow asked for, so an upper-case flow
    ID would otherwise leave out every run of its flow.
    """
    flows = tuple(dict.fromkeys(f.lower() if _UUID.fullmatch(f) else f for f in query.flow_ids))
    return query if flows == query.flow_ids else dataclasses.replace(query, flow_ids=flows)


class ListingHalted(BatchHalted):
    """The listing stopped before its last page; ``reason`` says why in one sentence."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.request_id = request_id
        super().__init__(reason)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class PageDecision:
    """The verdict on one request for a page: done, retry after ``delay``, renew, or stop."""

    action: Literal["done", "retry", "renew", "stop"]
    delay: float = 0.0
    reason: str = ""
    throttled: bool = False
    retry_after: float | None = None


def _describe(answer: Answer) -> str:
    code, _, message = adobe_error(answer.body)
    text = f"HTTP {answer.status}"
    if code:
        text += f" {code}"
    return f"{text}: {shorten(message)}" if message else text


def decide_page(
    outcome: Answer | TransportError,
    *,
    attempt: int,
    elapsed: float,
    settings: Settings,
    rng: random.Random,
    wall_now: float,
) -> PageDecision:
    """Classify one attempt at a page and decide what happens next (see the module table)."""
    retry_after: float | None = None
    throttled = False
    if isinstance(outcome, TransportError):
        if outcome.kind == "tls":
            return PageDecision(action="stop", reason=str(outcome))
        why = str(outcome)
    else:
        status = outcome.status
        body = outcome.body
        if status == 200:
            if isinstance(body, dict) and isinstance(body.get("items"), list):
                return PageDecision(action="done")
            problem = outcome.body_problem or "the body has no list of items"
            why = f"HTTP 200 without a page of runs ({problem})"
        elif 200 <= status < 400:
            return PageDecision(
                action="stop",
                reason=f"{_describe(outcome)}: not a page of runs, and redirects are not followed "
                "(they could carry the token elsewhere); check --base-url",
            )
        elif status == 401 and adobe_error(body)[0] == "401013":
            return PageDecision(action="renew", reason=_describe(outcome))
        elif status in (401, 403):
            return PageDecision(
                action="stop",
                reason=f"the API refused the credentials ({_describe(outcome)}); "
                "check the token, API key, org and sandbox",
            )
        elif status == 404:
            return PageDecision(action="stop", reason=f"{_describe(outcome)}; check --base-url")
        elif status in (429, 503):
            retry_after = parse_retry_after(outcome.retry_after, wall_now=wall_now)
            throttled = status == 429 or retry_after is not None
            why = _describe(outcome)
        elif 400 <= status < 500 or status in (501, 505):
            return PageDecision(
                action="stop", reason=f"the API refused the listing ({_describe(outcome)})"
            )
        else:
            why = _describe(outcome)

    def stop(reason: str) -> PageDecision:
        return PageDecision(
            action="stop", reason=reason, throttled=throttled, retry_after=retry_after
        )

    if retry_after is not None and retry_after > settings.retry_after_cap:
        return stop(
            f"{why}; the server asked to wait {retry_after:.0f} s, more than the "
            f"{settings.retry_after_cap:.0f} s cap: list again after that"
        )
    if attempt >= settings.max_attempts:
        return stop(f"{why}; gave up after {attempt} attempts")
    delay = backoff_delay(attempt, base=settings.backoff_base, cap=settings.backoff_cap, rng=rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if elapsed + delay > settings.deadline:
        return stop(
            f"{why}; gave up: the next wait would pass the {settings.deadline:g} s deadline"
        )
    return PageDecision(
        action="retry", delay=delay, reason=why, throttled=throttled, retry_after=retry_after
    )


def resolve_next(base: URL, href: str) -> URL:
    """Return the URL of the next page that ``href`` links to, relative to ``base``.

    A link starting with ``/`` is relative to the service base, as Adobe writes them, unless it
    already starts with the base's path; an absolute (or ``//host``) link must stay on the
    base's scheme, host and port. Raise :class:`ListingHalted` for any other link.
    """
    try:
        link = URL(href.strip())
    except (ValueError, TypeError) as exc:
        raise ListingHalted(f"the next-page link {href!r} is not a URL ({exc})") from None
    if link.raw_user is not None or link.raw_password is not None:
        raise ListingHalted("the next-page link carries credentials (user:password@); refused")
    if link.host is not None:
        resolved = base.join(link)
        if (resolved.scheme, resolved.host, resolved.port) != (base.scheme, base.host, base.port):
            where = f"{resolved.scheme}://{resolved.raw_authority}"
            raise ListingHalted(
                f"the next-page link points to {where}, not to {base.origin()}; "
                "the access token is never sent to another host"
            )
        return resolved.with_fragment(None)
    if link.scheme:
        raise ListingHalted(f"the next-page link {href!r} is not an http(s) URL")
    base_path = base.raw_path.rstrip("/")
    path = link.raw_path
    if not path:
        path = f"{base_path}/runs"
    elif not path.startswith("/"):
        path = f"{base_path}/{path}"
    elif not (base_path and (path == base_path or path.startswith(base_path + "/"))):
        path = base_path + path
    return URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=path,
        query_string=link.raw_query_string,
        encoded=True,
    )


def _next_href(body: dict[str, Any]) -> str | None:
    """Return the next page's link, or None at the end; refuse a link that cannot be read."""
    links = body.get("_links")
    if not isinstance(links, dict):
        return None
    nxt = links.get("next")
    if nxt is None:
        return None
    href = nxt.get("href") if isinstance(nxt, dict) else nxt
    if not isinstance(href, str):
        raise ListingHalted(f"cannot read the next-page link {shorten(repr(nxt))}")
    # An empty link would mean the unfiltered /runs: take it as the end, never follow it.
    return href if href.strip() else None


class FailedRunLister:
    """List failed runs page by page, handing each page's new runs out as it arrives.

    ``session`` and ``tokens`` belong to the caller if given; otherwise a session is opened for
    the listing and the token comes from ``settings.credentials``. ``wait`` replaces
    ``asyncio.sleep`` between attempts (tests pass one that never sleeps).
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
        self.query = query = _folded(query)
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
                href = _next_href(body)
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
        """Get one page, retrying and renewing the token as :func:`decide_page` says."""
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
            decision = decide_page(
                outcome,
                attempt=attempt,
                elapsed=now - started,
                settings=self.settings,
                rng=self._rng,
                wall_now=time.time(),
            )
            if decision.throttled:
                self.throttle.on_throttled(decision.retry_after, sent_at=sent_at)
            else:
                self.throttle.on_success()
            if decision.action == "done":
                assert isinstance(outcome, Answer)
                assert isinstance(outcome.body, dict)
                return outcome.body
            if decision.action == "renew" and not renewed:
                # Renewal is not a failed attempt: the next try uses a new token.
                renewed = True
                attempt -= 1
                await self._tokens.renew(token)
                stats.token_renewals += 1
                continue
            if decision.action in ("renew", "stop"):
                reason = decision.reason
                if decision.action == "renew":
                    reason = f"the API refused the renewed access token too ({reason})"
                status = outcome.status if isinstance(outcome, Answer) else None
                request_id = outcome.request_id if isinstance(outcome, Answer) else None
                code = adobe_error(outcome.body)[0] if isinstance(outcome, Answer) else None
                raise ListingHalted(
                    self._where(page) + reason,
                    status=status,
                    error_code=code,
                    request_id=request_id,
                )
            log.info(
                "page %d: %s; retrying in %.1f s (attempt %d)",
                page,
                decision.reason,
                decision.delay,
                attempt + 1,
            )
            await self._wait(decision.delay)

    async def _get(self, url: URL, token: str) -> Answer:
        """Make one GET; raise :class:`TransportError` below HTTP."""
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
                return Answer(
                    status=response.status,
                    body=body,
                    body_problem=problem,
                    retry_after=response.headers.get("Retry-After"),
                    request_id=response.headers.get("x-request-id"),
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
