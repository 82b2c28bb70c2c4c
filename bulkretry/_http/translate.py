"""Translate aiohttp and socket errors into :class:`TransportError`, at the boundary.

Each says whether the request may have reached the server (``sent``): a failure to connect
never did; a timeout or a reset once it was written may have. :func:`unreachable` tells the
failures that mean the base URL names no server at all (no such host, connection refused)
from those an outage also gives.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp

from .._exceptions import TransportError
from .._text import one_line

__all__ = ["translate", "unreachable"]

#: aiohttp 3.11 names a failed DNS look-up; before, it is a ClientConnectorError of a gaierror.
_DNS_ERROR: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(aiohttp, "ClientConnectorDNSError", None),) if cls is not None
)


def translate(exc: BaseException, *, url_host: str, unsent: bool = False) -> TransportError:
    """Map an aiohttp or socket error to a :class:`TransportError` (``sent``: maybe processed).

    ``unsent``: no connection was handed out for the request, so not a byte of it was written.
    """
    error = _translate(exc, url_host=url_host)
    if not unsent or not error.sent:
        return error
    if error.kind == "timeout":
        return TransportError(
            f"timed out before a connection to {url_host} was ready", kind="timeout", sent=False
        )
    return TransportError(f"{error} (before the request was sent)", kind=error.kind, sent=False)


def _translate(exc: BaseException, *, url_host: str) -> TransportError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TransportError(
            f"TLS certificate of {url_host} could not be verified "
            f"({one_line(str(exc.certificate_error))}); "
            "use --ca-bundle for a corporate proxy",
            kind="tls",
            sent=False,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError(
            f"cannot connect to {url_host}: {one_line(str(exc.os_error.strerror or exc))}",
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
            f"the proxy refused to connect to {url_host} "
            f"(HTTP {exc.status} {one_line(str(exc.message))})",
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


def unreachable(error: TransportError) -> str | None:
    """Say why the host of a request cannot be reached at all: unknown name, or refused.

    None for anything an outage may cause too (a timeout, a reset, an unreachable network):
    those are worth another try; a host that does not exist or refuses connections is not.
    """
    cause = error.__cause__
    # A TLS failure is no unknown host, and a refusing proxy says nothing of the base URL.
    if not isinstance(cause, aiohttp.ClientConnectorError) or isinstance(
        cause, aiohttp.ClientSSLError | aiohttp.ClientProxyConnectionError
    ):
        return None
    os_error = cause.os_error
    if isinstance(cause, _DNS_ERROR) or isinstance(os_error, socket.gaierror):
        return f"the host {one_line(str(cause.host))} is not found (DNS)"
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        return f"{one_line(str(cause.host))} port {cause.port} refuses connections"
    return None
