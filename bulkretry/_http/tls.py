"""Transport security: verifying TLS contexts, URL checks, and the HTTP session's settings.

Certificates are always verified; the only choice is which CA store to trust (a PEM bundle, for
example a corporate proxy's, or the system store). Plain ``http://`` is allowed for loopback
addresses only, so that tests and the built-in simulator need no certificates while a typo can
never send a token in clear over a network. Library code never reads the environment: the CLI
passes ``--ca-bundle`` or ``SSL_CERT_FILE`` in as ``ca_bundle``.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from typing import TypedDict
from urllib.parse import urlsplit

import aiohttp

from .._exceptions import ConfigurationError

__all__ = [
    "SessionKwargs",
    "check_bundle",
    "check_url",
    "is_loopback",
    "proxy_for",
    "session_kwargs",
    "ssl_context",
    "uses_tls",
]


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Return a verifying TLS context trusting ``ca_bundle`` (a PEM file) or the system store.

    A bundle replaces the system store rather than adding to it, as ``SSL_CERT_FILE`` and
    ``REQUESTS_CA_BUNDLE`` do elsewhere: a corporate bundle must hold every CA it needs.
    """
    if ca_bundle is None:
        context = ssl.create_default_context()
    else:
        _refuse_directory(ca_bundle)
        try:
            context = ssl.create_default_context(cafile=ca_bundle)
        except ssl.SSLError as exc:
            raise ConfigurationError(
                f"CA bundle {ca_bundle} holds no valid PEM certificate ({exc.reason or exc})"
            ) from exc
        except OSError as exc:
            raise _unreadable(ca_bundle, exc) from exc
    # create_default_context already verifies; say so here so that no later edit weakens it.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_bundle(ca_bundle: str) -> None:
    """Raise :class:`ConfigurationError` unless ``ca_bundle`` is a file that can be read.

    Its certificates are not parsed: that is :func:`ssl_context`'s work, done only when a URL
    uses TLS (reading a system's whole store takes some 45 ms of a start-up).
    """
    _refuse_directory(ca_bundle)
    try:
        with open(ca_bundle, "rb"):  # (not read: opening is what says it cannot be)
            pass
    except OSError as exc:
        raise _unreadable(ca_bundle, exc) from exc


def _refuse_directory(ca_bundle: str) -> None:
    if os.path.isdir(ca_bundle):
        raise ConfigurationError(f"CA bundle {ca_bundle} is a directory, not a PEM file")


def _unreadable(ca_bundle: str, exc: OSError) -> ConfigurationError:
    if isinstance(exc, FileNotFoundError):
        return ConfigurationError(f"CA bundle {ca_bundle} does not exist")
    if isinstance(exc, PermissionError):
        return ConfigurationError(f"CA bundle {ca_bundle} cannot be read: permission denied")
    return ConfigurationError(f"CA bundle {ca_bundle} cannot be read: {exc.strerror or exc}")


def uses_tls(*urls: str | None) -> bool:
    """Tell whether any of ``urls`` is an ``https://`` one."""
    return any(url is not None and url[:8].lower() == "https://" for url in urls)


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_url(url: str, *, what: str) -> None:
    """Raise :class:`ConfigurationError` unless ``url`` is a safe base URL for ``what``.

    Safe means: ``https://`` (or ``http://`` to a loopback address), a host, no
    ``user:password@``, no query and no fragment.
    """
    if not url or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ConfigurationError(f"{what} {url!r} is empty or contains spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises ValueError on a bad one
    except ValueError as exc:
        raise ConfigurationError(f"{what} {url!r} is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        # Never echo this URL: it holds a password.
        raise ConfigurationError(
            f"{what} must not contain credentials (user:password@); pass them separately"
        )
    if scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{what} {url!r} must be an absolute https:// URL, such as https://example.com/path"
        )
    host = parts.hostname
    if not host:
        raise ConfigurationError(f"{what} {url!r} has no host")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ConfigurationError(f"{what} {url!r} must not have a query (?…) or fragment (#…)")
    if scheme == "http" and not is_loopback(host):
        raise ConfigurationError(
            f"{what} {url!r} must use https:// (only loopback addresses may use http://)"
        )


class SessionKwargs(TypedDict):
    """Keyword arguments for :class:`aiohttp.ClientSession`; see :func:`session_kwargs`."""

    connector: aiohttp.TCPConnector
    cookie_jar: aiohttp.DummyCookieJar
    trust_env: bool


def session_kwargs(
    ca_bundle: str | None = None,
    *,
    context: ssl.SSLContext | None = None,
    limit: int = 100,
) -> SessionKwargs:
    """Return the arguments for a ``ClientSession``: ``aiohttp.ClientSession(**session_kwargs())``.

    TLS verifies against ``context``, or one made from ``ca_bundle``. ``trust_env`` is off:
    aiohttp would then look up proxies and ``.netrc`` in a worker thread for every request (a
    third of the CPU of a request); :func:`proxy_for` resolves the proxy once instead, and each
    request names it. The cookie jar drops every cookie, since no
    request depends on one and the gateway's would only grow memory. ``limit`` caps the
    connections open at once. Call it inside the running event loop (the connector needs it);
    build ``context`` beforehand to keep file reads out of the loop.
    """
    verify: ssl.SSLContext | bool = True
    if context is not None:
        verify = context
    elif ca_bundle is not None:
        verify = ssl_context(ca_bundle)
    # True is aiohttp's own verifying context, built once at import: making another one here
    # would read the system's CA store a second time at every start (~90 ms).
    return SessionKwargs(
        connector=aiohttp.TCPConnector(ssl=verify, limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """Return the proxy that ``HTTPS_PROXY``/``HTTP_PROXY`` and ``NO_PROXY`` in ``environ`` give.

    Lower-case names win over upper-case ones, as in curl; ``NO_PROXY`` entries match the host
    and its subdomains, ``*`` matches every host, and loopback addresses never use a proxy.
    """

    def get(name: str) -> str | None:
        return environ.get(name.lower()) or environ.get(name.upper()) or None

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or is_loopback(host):
        return None
    for entry in (get("no_proxy") or "").split(","):
        entry = entry.strip().lower().lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return get("https_proxy") if parts.scheme == "https" else get("http_proxy")
