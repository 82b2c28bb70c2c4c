"""Exceptions raised by bulkretry.

Every error bulkretry raises on purpose derives from :class:`BulkRetryError`; errors of the
libraries below (aiohttp, orjson, sqlite3, OSError) are translated where they are caught, with
``raise … from exc`` so that the cause stays visible to a debugger but never to a user::

    BulkRetryError
    ├── ConfigurationError        bad settings or environment, found before any request
    │   ├── MissingCredentialsError
    │   ├── InputError            an input or output path that cannot be used
    │   └── BaseUrlError          the base URL reaches no Flow Service (found by the pre-flight)
    ├── StateError                a state file that belongs to another batch, or is corrupt
    ├── AuthenticationError       the token was refused or could not be obtained
    ├── BatchHalted               the batch stopped early: see ``reason``
    │   └── ListingHalted         a listing stopped before its last page
    ├── TransportError            one attempt failed below HTTP (connect, send, read, timeout)
    ├── OutputClosed              the reader of the output went away (``| head``)
    └── OutputFailed              writing the output failed (a full disk, an I/O error)

``TransportError`` never escapes the engine or the lister: the retry policy turns it into a
record's outcome, or a listing's halt. :func:`bulkretry.retrigger` raises ``BatchHalted`` only
once it has yielded a result for every run ID. ``OutputClosed`` and ``OutputFailed`` are
defined with the sink that raises them (:mod:`._io.sink`). Which exit code each error means is
the command line's business (``bulkretry._cli.options``), not this module's.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BaseUrlError",
    "BatchHalted",
    "BulkRetryError",
    "ConfigurationError",
    "InputError",
    "ListingHalted",
    "MissingCredentialsError",
    "StateError",
    "TransportError",
]


class BulkRetryError(Exception):
    """Root of every error bulkretry raises on purpose."""


class ConfigurationError(BulkRetryError):
    """Settings or environment that cannot work; found before any request is sent."""


class MissingCredentialsError(ConfigurationError):
    """One or more credentials are missing; ``missing`` names them (never their values)."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = list(missing)
        super().__init__("missing credentials: " + ", ".join(self.missing))


class InputError(ConfigurationError):
    """An input or output path that cannot be used (missing, a directory, unreadable…)."""


class BaseUrlError(ConfigurationError):
    """The base URL reaches no Flow Service: no such host, refused, a 404, another server.

    The message names ``--base-url``; ``url`` is the base URL, ``status`` the HTTP status of the
    answer that showed it (None when no answer came).
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class StateError(BulkRetryError):
    """A state file that belongs to another batch, has a newer format, or is corrupt."""


class AuthenticationError(BulkRetryError):
    """The API refused the credentials, or no token could be obtained."""

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None):
        self.status = status
        self.error_code = error_code
        super().__init__(message)


class BatchHalted(BulkRetryError):
    """The batch stopped before every record was tried; ``reason`` says why in one sentence."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ListingHalted(BatchHalted):
    """The listing stopped before its last page; ``reason`` says why in one sentence.

    ``status``, ``error_code`` and ``request_id`` come from the answer that stopped it, if any.
    """

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


class TransportError(BulkRetryError):
    """One attempt failed below HTTP.

    ``kind`` is ``"network"``, ``"timeout"`` or ``"tls"``; ``sent`` tells whether the request
    may have reached the server, which decides whether a retry could re-trigger a run twice.
    """

    def __init__(self, message: str, *, kind: str, sent: bool) -> None:
        self.kind = kind
        self.sent = sent
        super().__init__(message)
