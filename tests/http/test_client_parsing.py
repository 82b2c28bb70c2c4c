"""The client boundary: tolerant body parsing, aiohttp error translation, safe server text."""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import client_exceptions
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bulkretry._exceptions import BulkRetryError, TransportError
from bulkretry._http.client import (
    MAX_BODY_BYTES,
    FlowServiceClient,
    parse_body,
    request_id,
    translate,
)
from bulkretry._text import one_line, server_text

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
#: What a hostile server writes to clear the screen and ring the bell.
HOSTILE = "\x1b[2J\x07"


def assert_safe(text: str | None) -> None:
    """Server text that reached a message is one printable line: no ESC, no BEL, no newline."""
    assert text is not None
    assert "\x1b" not in text
    assert "\x07" not in text
    assert text.isprintable(), repr(text)


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


@given(st.binary(max_size=200))
def test_parse_body_never_raises_whatever_the_bytes(raw: bytes) -> None:
    """orjson's errors stop at the boundary: any bytes give JSON or a problem, never a raise."""
    body, problem = parse_body(raw, truncated=False)
    assert problem is None or body is None


# --- nothing from below escapes the client unmapped -----------------------------------------

#: Errors from below HTTP that aiohttp may let through as they are.
BARE_ERRORS: dict[str, Factory] = {
    "TimeoutError": TimeoutError,
    "ConnectionResetError": lambda: ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    "BrokenPipeError": lambda: BrokenPipeError(errno.EPIPE, "Broken pipe"),
    "OSError": lambda: OSError(errno.EHOSTUNREACH, "No route to host"),
    "ssl.SSLError": lambda: ssl.SSLError(1, "decryption failed"),
}
LOWER_LAYER: dict[str, Factory] = {
    **{name: factory for name, (factory, _, _) in TRANSLATIONS.items()},
    **BARE_ERRORS,
}


@pytest.mark.parametrize("name", list(LOWER_LAYER))
async def test_no_lower_layer_error_escapes_retrigger_unmapped(name: str) -> None:
    """Whatever aiohttp or the socket raises, retrigger raises a TransportError from it."""
    raised = LOWER_LAYER[name]()

    async def fail(
        request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        raise raised

    async with aiohttp.ClientSession(middlewares=(fail,)) as session:
        client = FlowServiceClient(
            session,
            base_url=f"https://{HOST}/data/foundation/flowservice",
            op="re-trigger",
            api_key="k",
            org_id="o",
            sandbox="prod",
            timeout=5.0,
        )
        with pytest.raises(BulkRetryError) as info:
            await client.retrigger("4fb0418e-1804-45d6-8d56-dd51f05c0baf", "token")
    assert isinstance(info.value, TransportError)
    # The cause stays for a debugger (aiohttp itself wraps a bare OSError on its way up).
    chain: list[BaseException | None] = [info.value.__cause__]
    while chain[-1] is not None and chain[-1] is not raised:
        chain.append(chain[-1].__cause__)
    assert chain[-1] is raised
    assert_safe(str(info.value))


# --- server text in messages ------------------------------------------------------------------


def test_an_invalid_http_answer_is_quoted_without_escape_or_bell() -> None:
    """aiohttp's parser quotes the bad bytes a server sent; the message keeps none of ESC/BEL."""
    exc = aiohttp.ClientResponseError(
        REQUEST_INFO, (), status=400, message=f"Invalid header value {HOSTILE!s}\n  ^"
    )
    assert_safe(str(translate(exc, url_host=HOST)))


def test_a_proxy_refusal_is_quoted_without_escape_or_bell() -> None:
    """The reason phrase of a proxy refusing the tunnel is the proxy's own text."""
    exc = aiohttp.ClientHttpProxyError(REQUEST_INFO, (), status=407, message=f"No{HOSTILE}Auth")
    message = str(translate(exc, url_host=HOST))
    assert_safe(message)
    assert "HTTP 407" in message


def test_a_network_error_is_quoted_without_escape_or_bell() -> None:
    """Whatever text an error below HTTP carries reaches the result as one safe line."""
    exc = aiohttp.ClientOSError(errno.ECONNRESET, f"reset{HOSTILE}by peer")
    assert_safe(str(translate(exc, url_host=HOST)))


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-request-id": f"req{HOSTILE}1"}, None),
        ({}, {"report": {"request-id": f"req{HOSTILE}1" + "x" * 5000}}),
    ],
)
def test_a_request_id_is_quoted_without_escape_or_bell(headers: dict[str, str], body: Any) -> None:
    """The request ID (header or Flow Service report) lands in results: one short safe line."""
    rid = request_id(CIMultiDictProxy(CIMultiDict(headers)), body)
    assert_safe(rid)
    assert rid is not None
    assert len(rid) <= 200


# --- the one sanitiser (bulkretry._text) ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain message", "plain message"),
        (f"clear{HOSTILE}screen", "clear [2J screen"),
        ("a\nforged: log line\r\n", "a forged: log line"),
        ("csi\x9b31mred", "csi 31mred"),
        ("right\u202eto left", "right to left"),
        ("  spaced \t out  ", "spaced out"),
        ("", ""),
    ],
)
def test_one_line_turns_every_unprintable_character_into_a_space(text: str, expected: str) -> None:
    """ESC, BEL, C1 controls, bidi overrides and line breaks become spaces; runs collapse."""
    assert one_line(text) == expected


def test_one_line_cuts_long_text_with_an_ellipsis() -> None:
    """Whatever a server sends, at most ``limit`` characters are quoted."""
    assert one_line("x" * 1000, 10) == "x" * 9 + "…"
    assert len(one_line(HOSTILE * 10_000)) <= 300


@given(st.text(max_size=2000), st.integers(min_value=1, max_value=400))
def test_one_line_is_always_one_printable_bounded_line(text: str, limit: int) -> None:
    """For any text: printable, no leading or trailing space, no longer than the limit."""
    line = one_line(text, limit)
    assert line.isprintable()
    assert line == line.strip()
    assert len(line) <= limit


def test_server_text_quotes_strings_and_drops_anything_else() -> None:
    """A field that is not a string (a number, a list) is no text to quote."""
    assert server_text(f"a{HOSTILE}b") == "a [2J b"
    assert server_text(42) is None
    assert server_text(None) is None
    assert orjson.dumps(server_text("ok")) == b'"ok"'
