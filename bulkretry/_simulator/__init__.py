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
- A re-triggered run is ``inProgress`` (``in_progress_status``) for ``run_duration`` seconds of
  the simulator's clock, then ``success`` or ``failed`` by its fate (``_lifecycle``); a failed
  run's status carries ``errors: [{code, message}]``. Runs seeded in progress stay so.
- The quota (``_quota``) is one for every client; a rate-independent 429 (``throttle_rate``)
  answers with the gateway's 429050 body, like the quota's.
"""

from ._clock import Clock, ManualClock
from ._config import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_API_KEY,
    DEFAULT_CLIENT_HEADER,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_ORG_ID,
    DEFAULT_RUN_DURATION,
    DEFAULT_SANDBOX,
    DEFAULT_SCOPES,
    RequestHook,
    ResponseShape,
    SimulatorConfig,
)
from ._lifecycle import FATES, Fate
from ._quota import (
    LeakyBucketQuota,
    Quota,
    RateLimitHeaders,
    SlidingWindowQuota,
    TokenBucketQuota,
    WindowQuota,
    per_minute,
)
from ._records import ClientCounts, RecordedRequest, Retrigger
from ._server import Simulator
from ._trouble import Answer, Fault, RetryAfterStyle

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_API_KEY",
    "DEFAULT_CLIENT_HEADER",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_ORG_ID",
    "DEFAULT_RUN_DURATION",
    "DEFAULT_SANDBOX",
    "DEFAULT_SCOPES",
    "FATES",
    "Answer",
    "ClientCounts",
    "Clock",
    "Fate",
    "Fault",
    "LeakyBucketQuota",
    "ManualClock",
    "Quota",
    "RateLimitHeaders",
    "RecordedRequest",
    "RequestHook",
    "ResponseShape",
    "Retrigger",
    "RetryAfterStyle",
    "Simulator",
    "SimulatorConfig",
    "SlidingWindowQuota",
    "TokenBucketQuota",
    "WindowQuota",
    "per_minute",
]
