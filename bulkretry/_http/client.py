"""Speak to Flow Service: a re-trigger or a GET, its answer read tolerantly and within bounds.

This is the boundary with aiohttp: every aiohttp and socket error is translated
(:mod:`.translate`) into a :class:`TransportError` that says whether the request may have
reached the server: it may have once a connection was handed out for it (it is written at
once), never before. A pooled connection the server closed while idle is never written to (see
:class:`_FreshConnections`). Whatever a server wrote is quoted through
:func:`bulkretry._text.one_line`. ``Answer`` (a kernel value, :mod:`bulkretry._model`),
``one_line`` and ``translate`` are re-exported for older importers.
"""

from __future__ import annotations

import contextvars
import select
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import hdrs, http_exceptions
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDictProxy
from yarl import URL

from .._config import Settings
from .._model import Answer
from .._text import MAX_MESSAGE_CHARS, one_line
from .lookups import run_segment
from .quota_headers import read_quota_headers
from .tls import check_bundle, session_kwargs, uses_tls
from .translate import translate

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_CHARS",
    "MAX_PAGE_BYTES",
    "Answer",
    "FlowServiceClient",
    "make_session",
    "one_line",
    "parse_body",
    "read_capped",
    "request_id",
    "translate",
]

#: Flow Service answers are a few hundred bytes; anything past this is not read.
MAX_BODY_BYTES = 1024 * 1024
#: A page of 1000 runs is about 2 MB; no GET reads past this.
MAX_PAGE_BYTES = 32 * 1024 * 1024
#: A request ID is a UUID or so; a longer one is cut.
_MAX_REQUEST_ID_CHARS = 200
#: A body aiohttp could not decompress: a corrupt or oversized gzip/deflate/br stream.
_UNDECODABLE: tuple[type[http_exceptions.HttpProcessingError], ...] = (
    http_exceptions.ContentEncodingError,
    # Added in aiohttp 3.13 (the per-chunk decompression cap); absent before.
    getattr(http_exceptions, "DecompressSizeError", http_exceptions.ContentEncodingError),
)


async def read_capped(
    response: aiohttp.ClientResponse, cap: int = MAX_BODY_BYTES
) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes of the body; the flag says whether more was left unread."""
    length = response.content_length
    # A compressed body's Content-Length bounds what is sent, not what it inflates to.
    if length is not None and length <= cap and hdrs.CONTENT_ENCODING not in response.headers:
        return await response.read(), False
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


def parse_body(raw: bytes, truncated: bool, *, cap: int = MAX_BODY_BYTES) -> tuple[Any, str | None]:
    """Return ``(json, problem)``: the parsed body, or None and a phrase saying what was wrong.

    ``cap`` is the limit the body was read within, named when it was cut there.
    """
    if truncated:
        return None, f"the body is larger than {cap} bytes"
    if not raw.strip():
        return None, "the body is empty"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        if raw.lstrip()[:1] == b"<":
            return None, "the body is HTML, not JSON"
        return None, "the body is not valid JSON"


def request_id(headers: CIMultiDictProxy[str], body: Any = None) -> str | None:
    """Return the answer's request ID (header, else Flow Service's report), quoted safely."""
    rid = headers.get("x-request-id")
    if rid is None and isinstance(body, dict):
        report = body.get("report")
        if isinstance(report, dict) and isinstance(report.get("request-id"), str):
            rid = report["request-id"]
    # It lands in results lines and log lines: a server's text like any other.
    return one_line(rid, _MAX_REQUEST_ID_CHARS) if rid is not None else None


@dataclass(slots=True)
class _Send:
    """One request as the pool saw it: whether it asked for a connection, and was given one."""

    asked: bool = False
    given: bool = False


#: The request being sent in this task; set by :meth:`FlowServiceClient._exchange`.
_SENDING: contextvars.ContextVar[_Send | None] = contextvars.ContextVar(
    "bulkretry_sending", default=None
)


def _spoilt(connection: Connection) -> bool:
    """Tell whether a pooled connection heard from the server while idle: a FIN, a reset, bytes.

    A healthy idle keep-alive connection has nothing to read; anything there means the server
    closed it or is closing it (a 408 first), whether or not the event loop has noticed yet.
    """
    protocol = connection.protocol
    transport = connection.transport
    if protocol is None or transport is None or transport.is_closing() or protocol.should_close:
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    if not hasattr(select, "poll"):  # pragma: no cover - Windows has no poll()
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _FreshConnections:
    """Stand in for a connector's ``connect``: never hand out a connection the server closed.

    aiohttp drops a pooled connection once the event loop has read the server's FIN. A request
    that reuses it sooner is written into a dead socket, and fails as if it had been processed
    and its answer lost: a false ``in_doubt``. An answer sent while the connection was idle (a
    408 before a close) would even be read as the next request's answer. So a reused connection
    is checked first and closed unused if the server spoke or closed it. One that breaks after
    the request was written stays ambiguous. The request being sent (:data:`_SENDING`) learns
    when it was handed a connection: from then on it may have been written.
    """

    __slots__ = ("_connect", "_used", "skipped")

    def __init__(self, connector: aiohttp.BaseConnector) -> None:
        self._connect = connector.connect
        self._used: weakref.WeakSet[object] = weakref.WeakSet()
        #: Pooled connections found closed (or spoken on) by the server, never written to.
        self.skipped = 0

    def __repr__(self) -> str:
        return f"_FreshConnections(skipped={self.skipped})"

    @classmethod
    def install(cls, session: aiohttp.ClientSession) -> _FreshConnections | None:
        """Guard the connector of ``session`` (once, whoever made it); return its guard."""
        connector = session.connector
        if connector is None:
            return None
        if isinstance(connector.connect, cls):
            return connector.connect
        guard = cls(connector)
        # aiohttp has no hook between taking a pooled connection and writing to it; its
        # session calls connector.connect, so the instance's method is where to stand.
        connector.connect = guard  # type: ignore[method-assign]
        return guard

    async def __call__(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        send = _SENDING.get()
        if send is not None:
            send.asked = True
        while True:
            connection = await self._connect(req, traces=traces, timeout=timeout)
            protocol = connection.protocol
            if protocol in self._used and _spoilt(connection):
                self.skipped += 1
                connection.close()
                continue
            if protocol is not None:
                self._used.add(protocol)
            if send is not None:
                send.given = True
            return connection


class FlowServiceClient:
    """Send re-triggers and GETs over one aiohttp session, with headers prepared once.

    The session is the seam for faking HTTP: it belongs to the caller, and a test gives one
    whose connector reaches an in-process server. Its connector gets a
    :class:`_FreshConnections` guard.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        op: str,
        api_key: str,
        org_id: str,
        sandbox: str,
        timeout: float,
        proxy: str | None = None,
    ) -> None:
        self._session = session
        self._guard = _FreshConnections.install(session)
        self._proxy = proxy
        self._base = base_url.rstrip("/")
        base = URL(self._base)
        self._host = base.host or self._base
        # Encoded once (IDNA host, quoted path), so that each request's URL is taken as is.
        self._encoded_base = str(base)
        self._query = "?op=" + quote(op, safe="")
        identity = {"x-api-key": api_key, "x-gw-ims-org-id": org_id, "x-sandbox-name": sandbox}
        self._static_headers = {**identity, "Content-Type": "application/json"}
        self._static_read_headers = {**identity, "Accept": "application/json"}
        self._headers: dict[str, str] = {}
        self._read_headers: dict[str, str] = {}
        self._token: str | None = None
        # The connect timer fires before the total one, so that a hung connect is named as such
        # (either way no connection was handed out, so the request counts as not sent).
        connect = min(timeout / 2, 10.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect, connect=None)
        #: Re-trigger requests sent (GETs are :attr:`gets_sent`).
        self.requests_sent = 0
        self.gets_sent = 0

    @classmethod
    def for_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> FlowServiceClient:
        """Return the client of a batch with ``settings`` (which must carry credentials)."""
        credentials = settings.credentials
        assert credentials is not None
        return cls(
            session,
            base_url=settings.base_url,
            op=settings.op,
            api_key=credentials.api_key,
            org_id=credentials.org_id,
            sandbox=credentials.sandbox,
            timeout=settings.timeout,
            proxy=settings.proxy,
        )

    def __repr__(self) -> str:
        return (
            f"FlowServiceClient(base={self._base!r}, requests_sent={self.requests_sent}, "
            f"gets_sent={self.gets_sent}, "
            f"closed_connections_skipped={self.closed_connections_skipped})"
        )

    @property
    def base_url(self) -> str:
        """The Flow Service base URL, without a trailing slash."""
        return self._base

    @property
    def closed_connections_skipped(self) -> int:
        """Pooled connections the server had closed (or spoken on), skipped unused."""
        return self._guard.skipped if self._guard is not None else 0

    def url_for(self, run_id: str) -> str:
        """Return the action URL; the run ID is percent-encoded so it cannot leave its segment.

        The URL is encoded already and must be sent as is (``URL(..., encoded=True)``): a
        decoding URL parser would resolve a ``.`` or ``..`` segment away.
        """
        return f"{self._encoded_base}/runs/{run_segment(run_id)}/action{self._query}"

    def _headers_for(self, token: str) -> dict[str, str]:
        if token is not self._token:
            bearer = "Bearer " + token
            self._headers = {"Authorization": bearer, **self._static_headers}
            self._read_headers = {"Authorization": bearer, **self._static_read_headers}
            self._token = token
        return self._headers

    async def retrigger(self, run_id: str, token: str) -> Answer:
        """Ask Flow Service to re-trigger ``run_id``; raise TransportError below HTTP."""
        self.requests_sent += 1
        url = URL(self.url_for(run_id), encoded=True)
        return await self._exchange("POST", url, self._headers_for(token), MAX_BODY_BYTES)

    async def get(self, url: URL | str, token: str, *, cap: int = MAX_PAGE_BYTES) -> Answer:
        """GET ``url`` (a look-up, a listing page); raise TransportError below HTTP.

        ``url`` is sent as is: build it encoded (:mod:`.lookups`). The answer's ``body`` is the
        parsed JSON, or None with ``body_problem`` saying why (HTML, cut at ``cap`` bytes…).
        """
        self.gets_sent += 1
        self._headers_for(token)
        target = url if isinstance(url, URL) else URL(url, encoded=True)
        return await self._exchange("GET", target, self._read_headers, cap)

    async def _exchange(self, method: str, url: URL, headers: dict[str, str], cap: int) -> Answer:
        """Send one request and read its answer within ``cap`` bytes; translate what fails."""
        send = _Send()
        context = _SENDING.set(send)
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
                proxy=self._proxy,
            ) as response:
                body: Any
                problem: str | None
                try:
                    raw, truncated = await read_capped(response, cap)
                except aiohttp.ClientPayloadError as exc:
                    cause = exc.__cause__
                    if not isinstance(cause, _UNDECODABLE):
                        raise
                    # The answer came, in an encoding that cannot be read (a gzip bomb…):
                    # a bad answer, not a broken connection.
                    body = None
                    problem = f"the body cannot be decompressed ({one_line(cause.message)})"
                else:
                    body, problem = parse_body(raw, truncated, cap=cap)
                answered = response.headers
                return Answer(
                    status=response.status,
                    body=body,
                    body_problem=problem,
                    retry_after=answered.get("Retry-After"),
                    request_id=request_id(answered, body),
                    etag_header=answered.get("ETag"),
                    location=answered.get("Location"),
                    quota=read_quota_headers(answered),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            unsent = send.asked and not send.given
            raise translate(exc, url_host=self._host, unsent=unsent) from exc
        finally:
            _SENDING.reset(context)


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """Return a lean session: verified TLS, proxies from the environment, no cookie jar.

    The CA bundle is read only if a URL the session reaches is ``https://`` (the base URL, the
    IMS URL when the token comes from there, a proxy): over plain http (loopback only: the
    simulator, tests) it is only checked to be a readable file.
    """
    bundle = settings.ca_bundle
    urls = [settings.base_url, settings.proxy]
    credentials = settings.credentials
    if credentials is not None and credentials.from_ims:
        urls += [credentials.ims_url, settings.ims_proxy]
    if bundle is not None and not uses_tls(*urls):
        check_bundle(bundle)
        bundle = None
    return aiohttp.ClientSession(**session_kwargs(bundle, limit=settings.concurrency))
