"""Where the bearer token comes from: a fixed token, or OAuth Server-to-Server through IMS.

Workers ask :meth:`TokenProvider.token` before each request. When the API answers 401 with
``401013`` they call :meth:`TokenProvider.renew` with the token that was refused; however many
do so at once, one request reaches IMS and all of them get its token. Tokens are renewed a
few minutes before they expire, so that a long batch never sees a 401 in the normal course.

Secrets live in :class:`~bulkretry._secrets.Secret` objects and are scrubbed from every message
built here; a provider's ``repr`` shows its state (token held, seconds left, requests made).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson

from .._config import Credentials
from .._exceptions import AuthenticationError, ConfigurationError, MissingCredentialsError
from .secrets import MASK, Secret
from .tls import check_url

__all__ = [
    "DEFAULT_IMS_ATTEMPTS",
    "DEFAULT_IMS_BACKOFF",
    "DEFAULT_RENEW_MARGIN",
    "ClientCredentialsToken",
    "StaticToken",
    "TokenProvider",
    "token_provider",
]

#: Seconds before expiry at which a token is renewed; shorter for short-lived tokens.
DEFAULT_RENEW_MARGIN = 300.0
#: Requests made to IMS for one token when it fails transiently (5xx, 429, network).
DEFAULT_IMS_ATTEMPTS = 3
#: First wait between those attempts, in seconds; it doubles each time.
DEFAULT_IMS_BACKOFF = 0.5

#: Older IMS endpoints gave ``expires_in`` in milliseconds; no token lives 11 days.
_MILLISECONDS_THRESHOLD = 1_000_000
#: After a failed early renewal, the held token is used this long before trying again.
_EARLY_RENEWAL_RETRY = 30.0

_REFUSED = "the access token was refused (401013: expired or invalid); get a new one and run again"


class TokenProvider(Protocol):
    """Where workers get the bearer token for each request."""

    async def token(self) -> str:
        """Return the current token, fetching or renewing it first if needed."""
        ...

    async def renew(self, stale: str) -> str:
        """Return a token newer than ``stale``, which the API has just refused with 401013.

        Concurrent callers with the same ``stale`` token share one renewal.
        """
        ...


class StaticToken:
    """A token given by the user (``BULKRETRY_ACCESS_TOKEN``, ``--token-file``); never renewed."""

    __slots__ = ("_token",)

    def __init__(self, token: str | Secret) -> None:
        secret = token if isinstance(token, Secret) else Secret(token)
        value = secret.reveal()
        if not value.strip():
            raise ConfigurationError("the access token is empty")
        if value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ConfigurationError("the access token contains spaces or control characters")
        self._token = secret

    async def token(self) -> str:
        """Return the token."""
        return self._token.reveal()

    async def renew(self, stale: str) -> NoReturn:
        """Raise :class:`AuthenticationError`: a given token cannot be renewed."""
        raise AuthenticationError(_REFUSED, status=401, error_code="401013")

    def __repr__(self) -> str:
        return f"<StaticToken token={MASK}>"


class _TransientIMSError(Exception):
    """One IMS attempt failed in a way that a second attempt may not; carries the last status."""

    def __init__(self, message: str, status: int | None) -> None:
        self.status = status
        super().__init__(message)


class ClientCredentialsToken:
    """Tokens from IMS by OAuth Server-to-Server (``grant_type=client_credentials``).

    ``session`` belongs to the caller, who closes it. ``clock`` and ``sleep`` are injectable so
    that tests control time. The token is renewed when ``token()`` is called less than
    ``min(renew_margin, lifetime / 10)`` seconds before it expires; if that early renewal fails
    while the token is still valid, the token keeps being used and the renewal is tried again
    a little later, so that a short IMS outage does not stop a batch.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        ims_url: str,
        client_id: str,
        client_secret: str | Secret,
        scopes: str,
        clock: Callable[[], float] = time.monotonic,
        renew_margin: float = DEFAULT_RENEW_MARGIN,
        timeout: float = 30.0,
        attempts: int = DEFAULT_IMS_ATTEMPTS,
        backoff: float = DEFAULT_IMS_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        proxy: str | None = None,
    ) -> None:
        if attempts < 1:
            raise ConfigurationError("IMS attempts must be at least 1")
        self._session = session
        self._proxy = proxy
        self._ims_url = ims_url
        self._client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, Secret) else Secret(client_secret)
        )
        self._scopes = scopes
        self._clock = clock
        self._renew_margin = renew_margin
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts
        self._backoff = backoff
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._token: Secret | None = None
        self._expires_at = -math.inf
        self._renew_at = -math.inf
        self._requests = 0
        self._last_error: str | None = None
        #: The last token whose renewal failed, and why; shared with late renewers.
        self._failed: tuple[Secret, AuthenticationError] | None = None
        #: Fetches finished (either way), and why the last one failed: callers that waited
        #: for the lock while a fetch failed share its error instead of asking IMS again.
        self._fetches = 0
        self._fetch_error: AuthenticationError | None = None

    # -- the protocol ---------------------------------------------------------------------

    async def token(self) -> str:
        """Return the current token, fetching it (once, for all callers) when due.

        Callers that waited while that fetch failed get its error without asking IMS again.
        """
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        fetches = self._fetches
        async with self._lock:
            fresh = self._fresh()  # another caller may have fetched while we waited
            if fresh is not None:
                return fresh
            self._raise_if_failed_since(fetches)
            held = self._token
            try:
                return await self._fetch()
            except AuthenticationError as exc:
                now = self._clock()  # the failed attempts may have taken a while
                if held is None or now >= self._expires_at:
                    raise
                # Early renewal failed; the held token is still good for a while.
                self._last_error = str(exc)
                remaining = self._expires_at - now
                self._renew_at = now + min(_EARLY_RENEWAL_RETRY, remaining / 4)
                return held.reveal()

    async def renew(self, stale: str) -> str:
        """Return a token newer than ``stale``; one IMS request serves every concurrent caller.

        If that request fails, the callers still waiting with the same ``stale`` token get the
        same error without asking IMS again.
        """
        fetches = self._fetches
        async with self._lock:
            held = self._token
            if held is not None and held.reveal() != stale and self._clock() < self._expires_at:
                return held.reveal()
            if self._failed is not None and self._failed[0].reveal() == stale:
                raise _again(self._failed[1])
            self._raise_if_failed_since(fetches)
            # The refused token must never be handed out again, even if IMS fails now.
            self._token = None
            self._renew_at = -math.inf
            try:
                new = await self._fetch()
                if new == stale:
                    raise AuthenticationError(
                        "IMS gave back the access token that the API had just refused "
                        "(401013); check that the client's API key, organization and sandbox "
                        "match",
                        status=401,
                        error_code="401013",
                    )
            except AuthenticationError as exc:
                self._token = None
                self._failed = (Secret(stale), exc)
                self._fetch_error = exc
                raise
            return new

    # -- internals ------------------------------------------------------------------------

    def _fresh(self) -> str | None:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token.reveal()
        return None

    def _raise_if_failed_since(self, fetches: int) -> None:
        """Raise the error of a fetch that failed while the caller waited for the lock."""
        if self._fetches != fetches and self._fetch_error is not None:
            raise _again(self._fetch_error)

    async def _fetch(self) -> str:
        """Ask IMS for a token, retrying transient failures; store and return it."""
        for attempt in range(1, self._attempts + 1):
            try:
                token, lifetime = await self._request()
            except _TransientIMSError as exc:
                if attempt == self._attempts:
                    error = AuthenticationError(
                        self._scrub(
                            f"could not get an access token from IMS ({self._host}): {exc}"
                            + (f" after {attempt} attempts" if attempt > 1 else "")
                        ),
                        status=exc.status,
                    )
                    self._fetched(error)
                    raise error from exc
                await self._sleep(self._backoff * 2 ** (attempt - 1))
                continue
            except AuthenticationError as exc:
                self._fetched(exc)
                raise
            self._fetched(None)
            now = self._clock()
            margin = min(self._renew_margin, lifetime / 10)
            self._token = Secret(token)
            self._expires_at = now + lifetime
            self._renew_at = self._expires_at - margin
            self._last_error = None
            self._failed = None
            return token
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetched(self, error: AuthenticationError | None) -> None:
        self._fetches += 1
        self._fetch_error = error

    async def _request(self) -> tuple[str, float]:
        """Make one IMS request; return the token and its lifetime in seconds."""
        self._requests += 1
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.reveal(),
            "scope": self._scopes,
        }
        try:
            async with self._session.post(
                self._ims_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                status = response.status
                body = await response.read()
        except aiohttp.ClientSSLError as exc:
            # A certificate problem does not go away on a second try.
            raise AuthenticationError(
                self._scrub(
                    f"could not get an access token from IMS ({self._host}): TLS failed ({exc}); "
                    "if a proxy inspects TLS, pass its CA with --ca-bundle"
                )
            ) from exc
        except aiohttp.ClientError as exc:
            raise _TransientIMSError(
                self._scrub(f"network error ({type(exc).__name__}: {exc})"), None
            ) from exc
        except TimeoutError as exc:
            raise _TransientIMSError(
                f"no answer within {self._timeout.total:g} seconds", None
            ) from exc
        if status >= 500 or status == 429:
            raise _TransientIMSError(f"HTTP {status}", status)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise AuthenticationError(
                f"IMS ({self._host}) answered HTTP {status} with a body that is not JSON",
                status=status,
            ) from exc
        if not isinstance(payload, dict):
            payload = {}
        if status != 200:
            code = _one_line(payload.get("error")) or "unknown_error"
            description = _one_line(payload.get("error_description")) or "no description"
            raise AuthenticationError(
                self._scrub(f"IMS refused the token request (HTTP {status} {code}: {description})"),
                status=status,
                error_code=code,
            )
        token = payload.get("access_token")
        if not isinstance(token, str) or not token.strip():
            raise AuthenticationError(
                f"IMS ({self._host}) answered HTTP 200 without an access_token", status=status
            )
        return token.strip(), _lifetime(payload.get("expires_in"))

    @property
    def _host(self) -> str:
        return urlsplit(self._ims_url).netloc or self._ims_url

    def _scrub(self, message: str) -> str:
        secret = self._client_secret.reveal()
        return message.replace(secret, MASK) if secret else message

    def __repr__(self) -> str:
        if self._token is None:
            state = "none"
        else:
            left = self._expires_at - self._clock()
            state = f"held expires_in={left:.0f}s" if left > 0 else "expired"
        error = f" last_error={self._last_error!r}" if self._last_error else ""
        return (
            f"<ClientCredentialsToken ims={self._host!r} client_id={self._client_id!r} "
            f"token={state} requests={self._requests}{error}>"
        )


def _again(error: AuthenticationError) -> AuthenticationError:
    """Copy ``error`` for another caller, so that tracebacks do not pile up on one object."""
    return AuthenticationError(str(error), status=error.status, error_code=error.error_code)


def _lifetime(expires_in: object) -> float:
    """Read ``expires_in`` as seconds; without it, never renew early (401 still renews)."""
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in)
        except ValueError:
            return math.inf
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return math.inf
    if not expires_in > 0 or math.isinf(expires_in):
        return math.inf
    if expires_in > _MILLISECONDS_THRESHOLD:
        return float(expires_in) / 1000.0
    return float(expires_in)


def _one_line(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def token_provider(
    credentials: Credentials,
    session: aiohttp.ClientSession,
    *,
    timeout: float = 30.0,
    proxy: str | None = None,
) -> TokenProvider:
    """Pick the provider for ``credentials``: the access token if one is given, else IMS.

    Raise :class:`MissingCredentialsError` when neither a token nor a full client is given.
    """
    if credentials.access_token:
        return StaticToken(credentials.access_token)
    if credentials.client_id and credentials.client_secret:
        check_url(credentials.ims_url, what="IMS URL")
        return ClientCredentialsToken(
            session,
            ims_url=credentials.ims_url,
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            scopes=credentials.scopes,
            timeout=timeout,
            proxy=proxy,
        )
    if credentials.client_id:
        raise MissingCredentialsError(["client secret"])
    if credentials.client_secret:
        raise MissingCredentialsError(["client id"])
    raise MissingCredentialsError(["access token (or client id and client secret)"])
