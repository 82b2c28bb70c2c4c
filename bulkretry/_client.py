"""Speak to Flow Service: one re-trigger request, its answer read tolerantly and within bounds.

This is the boundary with aiohttp: every aiohttp and socket error is translated here into a
:class:`TransportError` that says whether the request may have reached the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import hdrs, http_exceptions
from multidict import CIMultiDictProxy
from yarl import URL

from ._config import Settings
from ._exceptions import TransportError
from ._tls import session_kwargs

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_CHARS",
    "Answer",
    "FlowServiceClient",
    "make_session",
    "one_line",
    "read_capped",
]

#: Flow Service answers are a few hundred bytes; anything past this is not read.
MAX_BODY_BYTES = 1024 * 1024
#: How much of a server's own text (an error message, a Location) a message quotes.
MAX_MESSAGE_CHARS = 300
#: A body aiohttp could not decompress: a corrupt or oversized gzip/deflate/br stream.
_UNDECODABLE: tuple[type[http_exceptions.HttpProcessingError], ...] = (
    http_exceptions.ContentEncodingError,
    # Added in aiohttp 3.13 (the per-chunk decompression cap); absent before.
    getattr(http_exceptions, "DecompressSizeError", http_exceptions.ContentEncodingError),
)


# Not frozen: one is made per request, and a frozen dataclass's __init__ costs twice as much.
@dataclass(slots=True, kw_only=True)
class Answer:
    """An HTTP answer, reduced to what the retry policy and the output need."""

    status: int
    body: Any = None
    body_problem: str | None = None
    retry_after: str | None = None
    request_id: str | None = None
    etag_header: str | None = None
    location: str | None = None


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


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return a server's ``text`` as one printable line of at most ``limit`` characters.

    What a server writes ends up in messages and on a terminal: control characters (newlines,
    escape sequences) become spaces, so that it can neither forge log lines nor drive the
    terminal.
    """
    printable = "".join(c if c.isprintable() else " " for c in text[: limit * 4])
    flat = " ".join(printable.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _request_id(headers: CIMultiDictProxy[str], body: Any) -> str | None:
    rid = headers.get("x-request-id")
    if rid is None and isinstance(body, dict):
        report = body.get("report")
        if isinstance(report, dict) and isinstance(report.get("request-id"), str):
            rid = report["request-id"]
    return rid


def translate(exc: BaseException, *, url_host: str) -> TransportError:
    """Map an aiohttp or socket error to a :class:`TransportError` (``sent``: maybe processed)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TransportError(
            f"TLS certificate of {url_host} could not be verified ({exc.certificate_error}); "
            "use --ca-bundle for a corporate proxy",
            kind="tls",
            sent=False,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError(
            f"cannot connect to {url_host}: {exc.os_error.strerror or exc}",
            kind="network",
            sent=False,
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportError(f"timed out connecting to {url_host}", kind="timeout", sent=False)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return TransportError("timed out waiting for the answer", kind="timeout", sent=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError(
            "the server closed the connection without answering", kind="network", sent=True
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(
            "the connection broke while the answer was read", kind="network", sent=True
        )
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)) and not isinstance(
        exc, aiohttp.RedirectClientError
    ):
        # Refused before any connection was made (a bad redirect target comes after an answer).
        return TransportError(f"invalid request URL ({exc})", kind="network", sent=False)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        # The proxy refused the CONNECT tunnel: the request never left for Flow Service.
        return TransportError(
            f"the proxy refused to connect to {url_host} (HTTP {exc.status} {exc.message})",
            kind="network",
            sent=False,
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp draws a caret under the bad byte on lines of their own: keep the words.
        lines = [line for line in str(exc.message).splitlines() if line.strip(" ^")]
        return TransportError(
            f"the server sent an invalid HTTP answer ({one_line(' '.join(lines))})",
            kind="network",
            sent=True,
        )
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return TransportError(
            f"network error: {type(exc).__name__}: {one_line(str(exc))}", kind="network", sent=True
        )
    raise exc


class FlowServiceClient:
    """Send re-trigger requests over one aiohttp session, with headers prepared once."""

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
        self._proxy = proxy
        self._base = base_url.rstrip("/")
        base = URL(self._base)
        self._host = base.host or self._base
        # Encoded once (IDNA host, quoted path), so that each request's URL is taken as is.
        self._encoded_base = str(base)
        self._query = "?op=" + quote(op, safe="")
        self._static_headers = {
            "x-api-key": api_key,
            "x-gw-ims-org-id": org_id,
            "x-sandbox-name": sandbox,
            "Content-Type": "application/json",
        }
        self._headers: dict[str, str] = {}
        self._token: str | None = None
        # The connect timer must fire before the total one: a total timeout is read as "maybe
        # sent", so a hung connect would otherwise pass for an ambiguous attempt.
        connect = min(timeout / 2, 10.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect, connect=None)
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"FlowServiceClient(base={self._base!r}, requests_sent={self.requests_sent})"

    def url_for(self, run_id: str) -> str:
        """Return the action URL; the run ID is percent-encoded so it cannot leave its segment.

        The URL is encoded already and must be sent as is (``URL(..., encoded=True)``): a
        decoding URL parser would resolve a ``.`` or ``..`` segment away.
        """
        segment = quote(run_id, safe="")
        if segment in (".", ".."):
            segment = segment.replace(".", "%2E")
        return f"{self._encoded_base}/runs/{segment}/action{self._query}"

    def _headers_for(self, token: str) -> dict[str, str]:
        if token is not self._token:
            self._headers = {"Authorization": "Bearer " + token, **self._static_headers}
            self._token = token
        return self._headers

    async def retrigger(self, run_id: str, token: str) -> Answer:
        """Ask Flow Service to re-trigger ``run_id``; raise TransportError below HTTP."""
        self.requests_sent += 1
        try:
            async with self._session.post(
                URL(self.url_for(run_id), encoded=True),
                headers=self._headers_for(token),
                allow_redirects=False,
                timeout=self._timeout,
                proxy=self._proxy,
            ) as response:
                body: Any
                problem: str | None
                try:
                    raw, truncated = await read_capped(response)
                except aiohttp.ClientPayloadError as exc:
                    cause = exc.__cause__
                    if not isinstance(cause, _UNDECODABLE):
                        raise
                    # The answer came, in an encoding that cannot be read (a gzip bomb…):
                    # a bad answer, not a broken connection.
                    body = None
                    problem = f"the body cannot be decompressed ({one_line(cause.message)})"
                else:
                    body, problem = parse_body(raw, truncated)
                headers = response.headers
                return Answer(
                    status=response.status,
                    body=body,
                    body_problem=problem,
                    retry_after=headers.get("Retry-After"),
                    request_id=_request_id(headers, body),
                    etag_header=headers.get("ETag"),
                    location=headers.get("Location"),
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise translate(exc, url_host=self._host) from exc


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """Return a lean session: verified TLS, proxies from the environment, no cookie jar."""
    return aiohttp.ClientSession(**session_kwargs(settings.ca_bundle, limit=settings.concurrency))
