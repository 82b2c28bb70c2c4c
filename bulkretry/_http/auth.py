"""Where the bearer token comes from: a fixed token, or OAuth Server-to-Server through IMS.

Workers ask :meth:`TokenProvider.token` before each request. When the API answers 401 with
``401013`` they call :meth:`TokenProvider.renew` with the token that was refused; however many
do so at once, one request reaches IMS and all of them get its token (:mod:`.ims`).

Secrets live in :class:`~bulkretry._http.secrets.Secret` objects and are scrubbed from every
message; a provider's ``repr`` shows its state, never the token.
"""

from __future__ import annotations

from typing import NoReturn, Protocol

import aiohttp

from .._config import Credentials
from .._exceptions import AuthenticationError, ConfigurationError, MissingCredentialsError
from .ims import (
    DEFAULT_IMS_ATTEMPTS,
    DEFAULT_IMS_BACKOFF,
    DEFAULT_IMS_BACKOFF_CAP,
    DEFAULT_IMS_RETRY_AFTER_CAP,
    DEFAULT_RENEW_MARGIN,
    ClientCredentialsToken,
)
from .secrets import MASK, Secret
from .tls import check_url

__all__ = [
    "DEFAULT_IMS_ATTEMPTS",
    "DEFAULT_IMS_BACKOFF",
    "DEFAULT_IMS_BACKOFF_CAP",
    "DEFAULT_IMS_RETRY_AFTER_CAP",
    "DEFAULT_RENEW_MARGIN",
    "ClientCredentialsToken",
    "StaticToken",
    "TokenProvider",
    "token_provider",
]

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
    client_id, client_secret = credentials.client_id, credentials.client_secret
    if credentials.from_ims and client_id and client_secret:  # (the second half: for mypy)
        check_url(credentials.ims_url, what="IMS URL")
        return ClientCredentialsToken(
            session,
            ims_url=credentials.ims_url,
            client_id=client_id,
            client_secret=client_secret,
            scopes=credentials.scopes,
            timeout=timeout,
            proxy=proxy,
        )
    if client_id:
        raise MissingCredentialsError(["client secret"])
    if client_secret:
        raise MissingCredentialsError(["client id"])
    raise MissingCredentialsError(["access token (or client id and client secret)"])
