"""Exceptions raised by bulkretry.

Every error bulkretry raises on purpose derives from :class:`BulkRetryError`; errors of the
libraries below (aiohttp, orjson, sqlite3, OSError) are translated where they are caught, with
``raise … from exc`` so that the cause stays visible to a debugger but never to a user::

    BulkRetryError
    ├── ConfigurationError        bad settings or environment, found before any request (exit 2)
    │   ├── MissingCredentialsError
    │   └── InputError            an input or output path that cannot be used
    ├── StateError                a state file that belongs to another batch, or is corrupt (exit 2)
    ├── AuthenticationError       the token was refused or could not be obtained (stops the batch)
    ├── BatchHalted               the batch stopped early: see ``reason`` (exit 3)
    └── TransportError            one attempt failed below HTTP (connect, send, read, timeout)

``TransportError`` never escapes the engine: the retry policy turns it into a record's outcome.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BatchHalted",
    "BulkRetryError",
    "ConfigurationError",
    "InputError",
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


class TransportError(BulkRetryError):
    """One attempt failed below HTTP.

    ``kind`` is ``"network"`` or ``"timeout"``; ``sent`` tells whether the request may have
    reached the server, which decides whether a retry could re-trigger a run twice.
    """

    def __init__(self, message: str, *, kind: str, sent: bool) -> None:
        self.kind = kind
        self.sent = sent
        super().__init__(message)
