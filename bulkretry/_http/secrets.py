"""Keep secrets out of sight: read them from files, wrap them, and scrub them from text.

A token or client secret lives in a :class:`Secret` from the moment it is read, so that a
``repr``, a log line or a debugger's view of a frame shows ``***`` rather than its value; only
the code that builds a request calls :meth:`Secret.reveal`. A :class:`Redactor` scrubs the
secrets it knows from any text (log lines, error messages) and from HTTP headers.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote, quote_plus

from .._exceptions import ConfigurationError

__all__ = ["MASK", "Redactor", "Secret", "read_secret_file"]

#: What replaces a secret in text.
MASK = "***"

#: A token or secret file larger than this is surely the wrong file; IMS tokens are about 1.5 KiB.
_MAX_SECRET_FILE = 64 * 1024

#: Header names whose values are always masked, whatever they hold.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_HEADER_WORDS = ("token", "secret", "password", "credential")


class Secret:
    """A string that never shows itself in ``repr`` or ``str``; :meth:`reveal` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, to put in a request and nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value to wherever the pickle goes; nothing here needs it.
        raise TypeError("a Secret cannot be pickled")


def read_secret_file(path: str, *, what: str, warn: Callable[[str], None]) -> str:
    """Read a token or secret from ``path``, stripped of surrounding whitespace.

    ``what`` names the secret in messages ("token file", "client secret file"); messages name
    the path, never the content. ``warn`` is called when other users may read the file.
    Pipes (``--token-file <(vault read …)``) work: only regular files are checked for mode.
    """
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = file.read(_MAX_SECRET_FILE + 1)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigurationError(f"{what} {path} is a directory, not a file") from exc
    except PermissionError as exc:
        raise ConfigurationError(f"{what} {path} cannot be read: permission denied") from exc
    except OSError as exc:
        raise ConfigurationError(f"{what} {path} cannot be read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):  # pragma: no cover - open() refuses directories on POSIX already
        raise ConfigurationError(f"{what} {path} is a directory, not a file")
    if len(data) > _MAX_SECRET_FILE:
        raise ConfigurationError(
            f"{what} {path} is larger than {_MAX_SECRET_FILE // 1024} KiB; is it the right file?"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{what} {path} is not UTF-8 text") from exc
    value = text.strip()
    if not value:
        raise ConfigurationError(f"{what} {path} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigurationError(
            f"{what} {path} holds more than one line or control characters; "
            "it should hold the secret alone"
        )
    if value[:7].lower() == "bearer ":
        raise ConfigurationError(
            f"{what} {path} starts with 'Bearer '; it should hold the token alone"
        )
    if stat.S_ISREG(mode) and mode & 0o077 and os.name == "posix":
        warn(
            f"{what} {path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    return value


class Redactor:
    """Replace every secret it holds by ``***`` in text and in HTTP headers.

    Secrets are matched whole, longest first, and also in their URL-encoded forms (a secret
    can show up inside a logged form body or URL).
    """

    __slots__ = ("_count", "_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str | Secret | None] = ()) -> None:
        self._secrets: set[str] = set()
        self._count = 0
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | Secret | None) -> None:
        """Redact ``secret`` from now on; ``None`` and the empty string are ignored."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            return
        forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
        if forms <= self._secrets:
            return
        self._secrets |= forms
        self._count += 1
        # Longest first, so that a secret containing another is masked whole.
        alternatives = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives)))

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret replaced by ``***``."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def redact_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Return a copy of ``headers`` fit for a log.

        ``Authorization`` keeps its scheme (``Bearer ***``); headers named like a token,
        secret, password or credential are masked whole; other values are scrubbed of known
        secrets. ``x-api-key`` is the client ID, which is not a secret, so it is shown.
        """
        shown: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower in ("authorization", "proxy-authorization"):
                scheme, _, rest = value.partition(" ")
                shown[name] = f"{scheme} {MASK}" if rest else MASK
            elif lower in _SECRET_HEADERS or any(w in lower for w in _SECRET_HEADER_WORDS):
                shown[name] = MASK
            else:
                shown[name] = self.redact(value)
        return shown

    def __repr__(self) -> str:
        return f"<Redactor secrets={self._count}>"
