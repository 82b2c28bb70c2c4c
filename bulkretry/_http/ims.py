"""Tokens from IMS by OAuth Server-to-Server: fetched once for every caller, renewed early.

Tokens are renewed a few minutes before they expire, so that a long batch never sees a 401 in
the normal course; a token request that fails transiently is retried as
:func:`~bulkretry._policy.decide_token` says (full jitter, Retry-After). What IMS writes back
(an error code, a description) is quoted as one safe line; the client secret never is.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from .._exceptions import AuthenticationError, ConfigurationError, TransportError
from .._model import Answer
from .._policy import Action, decide_token
from .._retry import Limits
from .._text import one_line
from .client import parse_body, read_capped
from .secrets import MASK, Secret

__all__ = [
    "DEFAULT_IMS_ATTEMPTS",
    "DEFAULT_IMS_BACKOFF",
    "DEFAULT_IMS_BACKOFF_CAP",
    "DEFAULT_IMS_RETRY_AFTER_CAP",
    "DEFAULT_RENEW_MARGIN",
    "ClientCredentialsToken",
]

#: Seconds before expiry at which a token is renewed; shorter for short-lived tokens.
DEFAULT_RENEW_MARGIN = 300.0
#: Requests made to IMS for one token when it fails transiently (5xx, 429, network).
DEFAULT_IMS_ATTEMPTS = 3
#: First ceiling of the (full-jitter) wait between those attempts, in seconds; it doubles.
DEFAULT_IMS_BACKOFF = 0.5
#: The longest wait between two IMS attempts.
DEFAULT_IMS_BACKOFF_CAP = 8.0
#: The longest Retry-After from IMS obeyed: every worker waits for the token meanwhile, so a
#: longer one gives up at once and says so.
DEFAULT_IMS_RETRY_AFTER_CAP = 60.0

#: Older IMS endpoints gave ``expires_in`` in milliseconds; no token lives 11 days.
_MILLISECONDS_THRESHOLD = 1_000_000
#: After a failed early renewal, the held token is used this long before trying again.
_EARLY_RENEWAL_RETRY = 30.0
#: How much of an IMS error code or description a message quotes.
_FIELD_CHARS = 200


class ClientCredentialsToken:
    """Tokens from IMS by OAuth Server-to-Server (``grant_type=client_credentials``).

    ``session`` belongs to the caller, who closes it (a test passes one on a fake connector).
    ``clock``, ``sleep`` and ``rng`` are injectable so that tests control time and jitter.
    Transient failures are retried as :func:`~bulkretry._policy.decide_token` says. The token
    is renewed when ``token()`` is called less than ``min(renew_margin, lifetime / 10)``
    seconds before it expires; if that early renewal fails while the token is still valid, the
    token keeps being used and the renewal is tried again a little later, so that a short IMS
    outage does not stop a batch.
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
        rng: random.Random | None = None,
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
        self._limits = Limits(
            max_attempts=attempts,
            backoff_base=backoff,
            backoff_cap=DEFAULT_IMS_BACKOFF_CAP,
            retry_after_cap=DEFAULT_IMS_RETRY_AFTER_CAP,
        )
        self._rng = rng or random.Random()
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
        """Ask IMS for a token, retrying as :func:`decide_token` says; store and return it."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._request()
            decision = decide_token(
                outcome,
                attempt=attempt,
                elapsed=self._clock() - started,
                limits=self._limits,
                rng=self._rng,
                wall_now=time.time(),
            )
            if decision.action is Action.RETRY:
                await self._sleep(decision.delay)
                continue
            try:
                if decision.error is not None:
                    answer = outcome if isinstance(outcome, Answer) else None
                    cause = outcome if isinstance(outcome, TransportError) else None
                    raise AuthenticationError(
                        self._scrub(
                            f"could not get an access token from IMS ({self._host}): "
                            f"{decision.error.message}"
                        ),
                        status=answer.status if answer is not None else None,
                    ) from cause
                assert isinstance(outcome, Answer)
                token, lifetime = self._read(outcome)
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

    def _fetched(self, error: AuthenticationError | None) -> None:
        self._fetches += 1
        self._fetch_error = error

    async def _request(self) -> Answer | TransportError:
        """Make one IMS request; return its answer, or what failed below HTTP."""
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
                raw, truncated = await read_capped(response)
                body, problem = parse_body(raw, truncated)
                return Answer(
                    status=response.status,
                    body=body,
                    body_problem=problem,
                    retry_after=response.headers.get("Retry-After"),
                )
        except aiohttp.ClientSSLError as exc:
            # A certificate problem does not go away on a second try (decide_token knows).
            cause: BaseException = exc
            failure = TransportError(
                self._scrub(
                    f"TLS failed ({one_line(str(exc))}); "
                    "if a proxy inspects TLS, pass its CA with --ca-bundle"
                ),
                kind="tls",
                sent=False,
            )
        except aiohttp.ClientError as exc:
            cause = exc
            failure = self._network_error(exc)
        except TimeoutError as exc:  # before OSError, of which it is a kind
            cause = exc
            failure = TransportError(
                f"no answer within {self._timeout.total:g} seconds", kind="timeout", sent=True
            )
        except OSError as exc:
            cause = exc
            failure = self._network_error(exc)
        failure.__cause__ = cause
        return failure

    def _network_error(self, exc: BaseException) -> TransportError:
        return TransportError(
            self._scrub(f"network error ({type(exc).__name__}: {one_line(str(exc))})"),
            kind="network",
            sent=True,
        )

    def _read(self, answer: Answer) -> tuple[str, float]:
        """Read IMS's final answer: return the token and its lifetime in seconds, or raise."""
        status = answer.status
        if answer.body_problem is not None:
            raise AuthenticationError(
                f"IMS ({self._host}) answered HTTP {status} with a body that is not JSON",
                status=status,
            )
        payload = answer.body if isinstance(answer.body, dict) else {}
        if status != 200:
            error, description = payload.get("error"), payload.get("error_description")
            # IMS's own words go to stderr: one safe line each.
            code = (one_line(str(error), _FIELD_CHARS) if error is not None else "") or (
                "unknown_error"
            )
            about = description if description is not None else ""
            description = one_line(str(about), _FIELD_CHARS) or "no description"
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
