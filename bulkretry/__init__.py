"""bulkretry: re-trigger failed Adobe Experience Platform dataflow runs in bulk, safely and fast.

The command line (``bulkretry run``) is the main interface; :func:`retrigger` is the same engine
for your own asyncio code::

    settings = bulkretry.Settings(credentials=bulkretry.Credentials(...), rate=10)
    async for result in bulkretry.retrigger(run_ids, settings):
        print(result.run_id, result.outcome)
"""

from ._api import retrigger
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
