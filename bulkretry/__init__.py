"""bulkretry: re-trigger failed Adobe Experience Platform dataflow runs in bulk, safely and fast.

The command line (``bulkretry run``) is the main interface; :func:`retrigger` is the same engine
for your own asyncio code::

    settings = bulkretry.Settings(credentials=bulkretry.Credentials(...), rate=10)
    async for result in bulkretry.retrigger(run_ids, settings):
        print(result.run_id, result.outcome)
"""

import typing as _typing

from ._config import Credentials, Settings
from ._exceptions import (
    AuthenticationError,
    BaseUrlError,
    BatchHalted,
    BulkRetryError,
    ConfigurationError,
    InputError,
    MissingCredentialsError,
    StateError,
    TransportError,
)
from ._model import ErrorInfo, Outcome, RunResult
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._api import retrigger

__all__ = [
    "AuthenticationError",
    "BaseUrlError",
    "BatchHalted",
    "BulkRetryError",
    "ConfigurationError",
    "Credentials",
    "ErrorInfo",
    "InputError",
    "MissingCredentialsError",
    "Outcome",
    "RunResult",
    "Settings",
    "StateError",
    "TransportError",
    "__version__",
    "retrigger",
]


if not _typing.TYPE_CHECKING:  # mypy sees retrigger above, and no name it does not know

    def __getattr__(name: str) -> object:
        """Return :func:`retrigger`, importing the engine on first use."""
        # The engine (and aiohttp under it) loads on first use: the command line imports this
        # package before it can catch a Ctrl-C, and most of a start-up is aiohttp's.
        if name == "retrigger":
            from ._api import retrigger

            globals()[name] = retrigger
            return retrigger
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        """List the module's names, :func:`retrigger` among them before its first use."""
        return sorted({*globals(), "retrigger"})
