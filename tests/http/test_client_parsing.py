"""The client boundary: tolerant body parsing and aiohttp error translation."""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import client_exceptions
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bulkretry._exceptions import TransportError
from bulkretry._http.client import MAX_BODY_BYTES, parse_body, translate

HOST = "platform.adobe.io"
ACTION_URL = URL(f"https://{HOST}/data/foundation/flowservice/runs/x/action?op=re-trigger")

# Built as aiohttp's own tests/test_client_exceptions.py builds them.
CONNECTION_KEY: Any = ConnectionKey(
    host=HOST,
    port=443,
    is_ssl=True,
    ssl=True,
    proxy=None,
    proxy_auth=None,
    proxy_headers_hash=None,
)
REQUEST_INFO = aiohttp.RequestInfo(
    url=ACTION_URL,
    method="POST",
    headers=CIMultiDictProxy(CIMultiDict()),
    real_url=ACTION_URL,
)


# --- parse_body -----------------------------------------------------------------------------


def test_parse_body_reads_json() -> None:
    """A JSON body is parsed, with no problem reported."""
    raw = b'{"id": "3fb0418e-1804-45d6-8d56-dd51f05c0baf", "etag": "\\"1a00\\""}'
    body, problem = parse_body(raw, truncated=False)
    assert body == {"id": "3fb0418e-1804-45d6-8d56-dd51f05c0baf", "etag": '"1a00"'}
    assert problem is None


@pytest.mark.parametrize(
    "raw",
    [
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b"\r\n  <!DOCTYPE html><html></html>",
        b"<?xml version='1.0'?><Error/>",
    ],
)
def test_parse_body_recognises_html(raw: bytes) -> None:
    """An HTML (or XML) page from a proxy or gateway is named as such."""
    assert parse_body(raw, truncated=False) == (None, "the body is HTML, not JSON")


@pytest.mark.parametrize("raw", [b"", b"   ", b"\r\n\t"])
def test_parse_body_recognises_an_empty_body(raw: bytes) -> None:
    """An empty or blank body is reported as empty."""
    assert parse_body(raw, truncated=False) == (None, "the body is empty")


@pytest.mark.parametrize(
    "raw",
    [
        b"Service Unavailable",
        b'{"id": "3fb0418e-1804-45d6',
        b"{'id': 'single quotes'}",
        b'{"id": "\xff\xfe"}',
        b"\xef\xbb\xbf",
    ],
)
def test_parse_body_recognises_text_that_is_not_json(raw: bytes) -> None:
    """Plain text, a body cut short, or invalid UTF-8 is 'not valid JSON'."""
    assert parse_body(raw, truncated=False) == (None, "the body is not valid JSON")


def test_parse_body_refuses_a_truncated_body_even_if_it_parses() -> None:
    """A body cut at the size cap is not trusted, whatever its first bytes say."""
    body, problem = parse_body(b'{"id": "abc"}', truncated=True)
    assert body is None
    assert problem == f"the body is larger than {MAX_BODY_BYTES} bytes"


def test_parse_body_reads_json_null_as_a_body_without_a_problem() -> None:
    """``null`` is valid JSON: the policy, not the parser, decides it lacks a run ID."""
    assert parse_body(b"null", truncated=False) == (None, None)


# --- translate ------------------------------------------------------------------------------

Factory = Callable[[], BaseException]

#: Every aiohttp client error, built as aiohttp's tests build it, with the kind and ``sent``
#: the translation must give. A new aiohttp class makes the completeness test below fail.
TRANSLATIONS: dict[str, tuple[Factory, str, bool]] = {
    "ClientConnectorError": (
        lambda: aiohttp.ClientConnectorError(
            CONNECTION_KEY, OSError(errno.ECONNREFUSED, "Connection refused")
        ),
        "network",
        False,
    ),
    "ClientConnectorDNSError": (
        lambda: aiohttp.ClientConnectorDNSError(
            CONNECTION_KEY, OSError(-2, "Name or service not known")
        ),
        "network",
        False,
    ),
    "ClientProxyConnectionError": (
        lambda: aiohttp.ClientProxyConnectionError(
            CONNECTION_KEY, OSError(errno.ECONNREFUSED, "Connection refused")
        ),
        "network",
        False,
    ),
    "ClientSSLError": (
        lambda: aiohttp.ClientSSLError(CONNECTION_KEY, ssl.SSLError(1, "handshake failure")),
        "network",
        False,
    ),
    "ClientConnectorSSLError": (
        lambda: aiohttp.ClientConnectorSSLError(
            CONNECTION_KEY, ssl.SSLError(1, "wrong version number")
        ),
        "network",
        False,
    ),
    "ClientConnectorCertificateError": (
        lambda: aiohttp.ClientConnectorCertificateError(
            CONNECTION_KEY, ssl.SSLCertVerificationError(1, "unable to get local issuer")
        ),
        "tls",
        False,
    ),
    "ConnectionTimeoutError": (
        lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host"),
        "timeout",
        False,
    ),
    "SocketTimeoutError": (
        lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        "timeout",
        True,
    ),
    "ServerTimeoutError": (
        lambda: aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
        "timeout",
        True,
    ),
    "ServerDisconnectedError": (lambda: aiohttp.ServerDisconnectedError(), "network", True),
    "ServerConnectionError": (lambda: aiohttp.ServerConnectionError(), "network", True),
    "ServerFingerprintMismatch": (
        lambda: aiohttp.ServerFingerprintMismatch(b"exp", b"got", HOST, 443),
        "network",
        True,
    ),
    "ClientPayloadError": (
        lambda: aiohttp.ClientPayloadError("Response payload is not completed"),
        "network",
        True,
    ),
    "ClientResponseError": (
        lambda: aiohttp.ClientResponseError(
            REQUEST_INFO, (), status=400, message="Invalid header value"
        ),
        "network",
        True,
    ),
    "ContentTypeError": (
        lambda: aiohttp.ContentTypeError(REQUEST_INFO, (), message="unexpected mimetype"),
        "network",
        True,
    ),
    "WSServerHandshakeError": (
        lambda: aiohttp.WSServerHandshakeError(REQUEST_INFO, (), message="no upgrade"),
        "network",
        True,
    ),
    "ClientHttpProxyError": (
        lambda: aiohttp.ClientHttpProxyError(
            REQUEST_INFO, (), status=407, message="Proxy Authentication Required"
        ),
        "network",
        False,
    ),
    "TooManyRedirects": (
        lambda: aiohttp.TooManyRedirects(REQUEST_INFO, (), message="too many"),
        "network",
        True,
    ),
    "ClientOSError": (
        lambda: aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
        "network",
        True,
    ),
    "ClientConnectionResetError": (
        lambda: aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
        "network",
        True,
    ),
    "ClientConnectionError": (lambda: aiohttp.ClientConnectionError(), "network", True),
    "ClientError": (lambda: aiohttp.ClientError(), "network", True),
    "InvalidURL": (lambda: aiohttp.InvalidURL(":wrong:url:"), "network", False),
    "InvalidUrlClientError": (lambda: aiohttp.InvalidUrlClientError("http://"), "network", False),
    "NonHttpUrlClientError": (
        lambda: aiohttp.NonHttpUrlClientError("ftp://example.com"),
        "network",
        False,
    ),
    "RedirectClientError": (
        lambda: aiohttp.RedirectClientError("http://x", "bad redirect"),
        "network",
        True,
    ),
    "InvalidUrlRedirectClientError": (
        lambda: aiohttp.InvalidUrlRedirectClientError("http://", "bad redirect"),
        "network",
        True,
    ),
    "NonHttpUrlRedirectClientError": (
        lambda: aiohttp.NonHttpUrlRedirectClientError("ftp://x", "bad redirect"),
        "network",
        True,
    ),
}


@pytest.mark.parametrize(("name", "expected"), TRANSLATIONS.items(), ids=list(TRANSLATIONS))
def test_translate_maps_each_aiohttp_error_to_kind_and_sent(
    name: str, expected: tuple[Factory, str, bool]
) -> None:
    """Each aiohttp client error becomes a TransportError with the right kind and ``sent``."""
    factory, kind, sent = expected
    exc = factory()
    assert type(exc).__name__ == name
    error = translate(exc, url_host=HOST)
    assert isinstance(error, TransportError)
    assert (error.kind, error.sent) == (kind, sent)
    assert str(error)


def test_every_aiohttp_client_error_has_a_decided_translation() -> None:
    """A client error class added by a new aiohttp release must be classified here first."""
    exported = {
        name
        for name in client_exceptions.__all__
        if issubclass(getattr(client_exceptions, name), aiohttp.ClientError)
    }
    assert exported <= set(TRANSLATIONS)


def test_translate_of_a_refused_connection_names_the_host_and_reason() -> None:
    """The message says which host could not be reached and the system's reason."""
    exc = aiohttp.ClientConnectorError(
        CONNECTION_KEY, OSError(errno.ECONNREFUSED, "Connection refused")
    )
    assert str(translate(exc, url_host=HOST)) == f"cannot connect to {HOST}: Connection refused"


def test_translate_of_a_certificate_error_points_at_ca_bundle() -> None:
    """A TLS verification failure suggests --ca-bundle, the usual corporate-proxy fix."""
    exc = aiohttp.ClientConnectorCertificateError(
        CONNECTION_KEY, ssl.SSLCertVerificationError(1, "unable to get local issuer certificate")
    )
    message = str(translate(exc, url_host=HOST))
    assert HOST in message
    assert "--ca-bundle" in message


def test_translate_of_a_total_timeout_counts_as_sent() -> None:
    """The overall timeout (asyncio's TimeoutError) may fire after the request left."""
    error = translate(TimeoutError(), url_host=HOST)
    assert (error.kind, error.sent) == ("timeout", True)


@pytest.mark.parametrize(("name", "expected"), TRANSLATIONS.items(), ids=list(TRANSLATIONS))
def test_translate_of_any_error_before_a_connection_was_handed_out_is_not_sent(
    name: str, expected: tuple[Factory, str, bool]
) -> None:
    """Without a connection not a byte of the request was written, whatever aiohttp raised."""
    factory, kind, _ = expected
    error = translate(factory(), url_host=HOST, unsent=True)
    assert (error.kind, error.sent) == (kind, False)
    assert str(error)


def test_translate_of_a_total_timeout_before_a_connection_names_the_wait() -> None:
    """A total timeout spent waiting for a connection (a slot, DNS, TLS) says so, not sent."""
    error = translate(TimeoutError(), url_host=HOST, unsent=True)
    assert (error.kind, error.sent) == ("timeout", False)
    assert str(error) == f"timed out before a connection to {HOST} was ready"


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
    ],
)
def test_translate_of_a_bare_socket_error_counts_as_sent(exc: OSError) -> None:
    """A socket error aiohttp did not wrap could come after sending: it is ambiguous."""
    error = translate(exc, url_host=HOST)
    assert (error.kind, error.sent) == ("network", True)
    assert type(exc).__name__ in str(error)


def test_translate_reraises_what_is_not_a_network_error() -> None:
    """A programming error is not disguised as a network failure."""
    with pytest.raises(ValueError, match="a bug"):
        translate(ValueError("a bug"), url_host=HOST)
