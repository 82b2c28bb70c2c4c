"""A faithful Flow Service simulator: re-triggers, run listings, IMS tokens, and trouble on demand.

``async with Simulator(SimulatorConfig(...)) as sim:`` listens on an ephemeral loopback port;
``bulkretry simulate`` (see `_cli`) serves one from the command line.

Where Adobe's documents are silent the simulator makes a choice, written here so that nobody
mistakes it for a fact about the live service:

- x-sandbox-name missing: 400 FLOW-1100-400 (``sandbox_header="optional"`` serves the request in
  the configured sandbox instead, as the spec's field description suggests); unknown: 403
  FLOW-1103-403. A wrong org: 403 ``403025``. The API key may be the API key or the client ID.
- ``GET /runs/{RUN_ID}`` answers ``{"items": [run]}``, as the spec's schema says.
- ``GET /runs`` orders by ``-createdAt`` unless told otherwise; ``limit`` defaults to 100, is
  capped at 1000; continuation tokens are keyset tokens, so pages hold up while runs are added.
- A run ID that is not a UUID is simply not found (404), in accept-any mode too.
"""

from ._clock import Clock, ManualClock
from ._config import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_API_KEY,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_ORG_ID,
    DEFAULT_SANDBOX,
    DEFAULT_SCOPES,
    RequestHook,
    ResponseShape,
    SimulatorConfig,
)
from ._records import RecordedRequest, Retrigger
from ._server import Simulator
from ._trouble import Answer, Fault, Quota, RetryAfterStyle, TokenBucketQuota, WindowQuota

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_API_KEY",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_ORG_ID",
    "DEFAULT_SANDBOX",
    "DEFAULT_SCOPES",
    "Answer",
    "Clock",
    "Fault",
    "ManualClock",
    "Quota",
    "RecordedRequest",
    "RequestHook",
    "ResponseShape",
    "Retrigger",
    "RetryAfterStyle",
    "Simulator",
    "SimulatorConfig",
    "TokenBucketQuota",
    "WindowQuota",
]
