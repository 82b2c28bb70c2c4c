"""The simulator's configuration: one frozen dataclass, with its defaults as constants."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias, get_args

from ._clock import Clock
from ._lifecycle import Fate, Lifecycle
from ._listing import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
from ._quota import Quota, RateLimitHeaders
from ._records import RecordedRequest
from ._state import FAILED, IN_PROGRESS, SUCCESS
from ._trouble import DEFAULT_ERROR_STATUSES, Answer, FaultPicker, RetryAfterStyle, Throttle

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 0
DEFAULT_BASE_PATH = ""
DEFAULT_ACCESS_TOKEN = "sim-access-token"
DEFAULT_API_KEY = "sim-api-key"
DEFAULT_ORG_ID = "SIMORG0000000000000000@AdobeOrg"
DEFAULT_SANDBOX = "prod"
DEFAULT_CLIENT_ID = "sim-client-id"
DEFAULT_CLIENT_SECRET = "sim-client-secret"
DEFAULT_SCOPES: frozenset[str] = frozenset(
    {
        "openid",
        "AdobeID",
        "read_organizations",
        "additional_info.projectedProductContext",
        "additional_info.roles",
        "session",
    }
)
DEFAULT_TOKEN_LIFETIME = 86_399.0
DEFAULT_FLOWS = 3
DEFAULT_RUNS_PER_FLOW = 10
DEFAULT_OTHER_RUNS_PER_FLOW = 4
DEFAULT_HISTORY_DAYS = 7.0
DEFAULT_SEED = 0
DEFAULT_RETRY_AFTER: RetryAfterStyle = "seconds"
DEFAULT_SCRIPTED_RETRY_AFTER = 1.0
DEFAULT_SHUTDOWN_TIMEOUT = 1.0
DEFAULT_CLIENT_HEADER = "x-sim-client"
DEFAULT_THROTTLE_RETRY_AFTER = 1.0
DEFAULT_RUN_DURATION = 5.0
DEFAULT_IN_PROGRESS_STATUS = IN_PROGRESS

ResponseShape: TypeAlias = Literal["docs", "spec"]
"""The re-trigger's success body: ``{"id","etag"}`` as documented, or a whole run as specified."""

SandboxHeader: TypeAlias = Literal["required", "optional"]
"""Whether a request without x-sandbox-name is refused, or served in the configured sandbox."""

RequestHook: TypeAlias = Callable[[RecordedRequest], Answer | None]
"""Called with every request as it arrives; may return an answer to force, like a script's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """Everything about one simulator: address, credentials, seeded state and trouble.

    Trouble is off unless asked for. Rates are probabilities per request, drawn from a
    generator seeded with `seed`; `latency` and `jitter` are in seconds.

    A run started by a re-trigger is `in_progress_status` for `run_duration` seconds of `clock`
    (plus up to `run_duration_jitter`), then ``success`` or ``failed`` as its line's fate says:
    given per run ID in `fates`, else drawn with `fate_shares` (see `_lifecycle`).

    One `quota` serves every client; each request past the gateway's checks is counted for the
    client named by its `client_header`, or else by its API key (`extra_api_keys` are accepted
    besides `api_key` and `client_id`, so that each client may have its own).
    `throttle_rate` answers that share of requests 429 with Retry-After `throttle_retry_after`,
    whatever their rate.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    base_path: str = DEFAULT_BASE_PATH
    access_token: str = DEFAULT_ACCESS_TOKEN
    api_key: str = DEFAULT_API_KEY
    org_id: str = DEFAULT_ORG_ID
    sandbox: str = DEFAULT_SANDBOX
    sandbox_header: SandboxHeader = "required"
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    extra_api_keys: tuple[str, ...] = ()
    scopes: frozenset[str] = DEFAULT_SCOPES
    token_lifetime: float = DEFAULT_TOKEN_LIFETIME

    seed: int = DEFAULT_SEED
    flows: int = DEFAULT_FLOWS
    runs_per_flow: int = DEFAULT_RUNS_PER_FLOW
    other_runs_per_flow: int = DEFAULT_OTHER_RUNS_PER_FLOW
    history_days: float = DEFAULT_HISTORY_DAYS
    run_ids: tuple[str, ...] | None = None
    accept_any: bool = False
    allow_repeat_retrigger: bool = False
    response_shape: ResponseShape = "docs"
    list_default_limit: int = DEFAULT_LIST_LIMIT
    list_max_limit: int = MAX_LIST_LIMIT
    in_progress_status: str = DEFAULT_IN_PROGRESS_STATUS
    run_duration: float = DEFAULT_RUN_DURATION
    run_duration_jitter: float = 0.0
    # Left out of the hash (mappings have none), so that a configuration stays hashable.
    fates: Mapping[str, Fate] = field(default_factory=dict, hash=False)
    fate_shares: Mapping[Fate, float] = field(default_factory=dict, hash=False)

    quota: Quota | None = None
    retry_after: RetryAfterStyle = DEFAULT_RETRY_AFTER
    scripted_retry_after: float = DEFAULT_SCRIPTED_RETRY_AFTER
    rate_limit_headers: RateLimitHeaders = "none"
    client_header: str = DEFAULT_CLIENT_HEADER
    throttle_rate: float = 0.0
    throttle_retry_after: float = DEFAULT_THROTTLE_RETRY_AFTER
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = DEFAULT_ERROR_STATUSES
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    in_doubt_rate: float = 0.0
    malformed_rate: float = 0.0
    trouble_on_listing: bool = False
    latency: float = 0.0
    jitter: float = 0.0

    clock: Clock = time.monotonic
    wall_clock: Clock = time.time
    on_request: RequestHook | None = None
    record_requests: bool = True
    control_endpoints: bool = True
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        if self.base_path and (not self.base_path.startswith("/") or self.base_path.endswith("/")):
            raise ValueError("base_path starts with / and does not end with one, or is empty")
        if self.response_shape not in ("docs", "spec"):
            raise ValueError(f"response_shape is docs or spec, not {self.response_shape!r}")
        if self.retry_after not in ("seconds", "http-date", "none"):
            raise ValueError(f"retry_after is seconds, http-date or none, not {self.retry_after!r}")
        if min(self.flows, self.runs_per_flow, self.other_runs_per_flow) < 0:
            raise ValueError("flows and runs per flow cannot be negative")
        if self.latency < 0 or self.jitter < 0 or self.token_lifetime <= 0:
            raise ValueError("latency and jitter are >= 0, token_lifetime > 0")
        if not 1 <= self.list_default_limit <= self.list_max_limit:
            raise ValueError("need 1 <= list_default_limit <= list_max_limit")
        if self.rate_limit_headers not in get_args(RateLimitHeaders):
            raise ValueError(
                f"rate_limit_headers is none, ietf or x, not {self.rate_limit_headers!r}"
            )
        if not self.client_header.strip():
            raise ValueError("client_header names a header")
        word = self.in_progress_status
        if not word.strip() or word.casefold() in (FAILED, SUCCESS):
            raise ValueError(f"{word!r} cannot be the status of a run in progress")
        # Nobody can change the fates behind the simulator's back once it is configured.
        object.__setattr__(self, "fates", MappingProxyType(dict(self.fates)))
        object.__setattr__(self, "fate_shares", MappingProxyType(dict(self.fate_shares)))
        # Checks the rates, fates and durations now rather than when the simulator starts.
        self.fault_picker(random.Random(0))
        self.throttle(random.Random(0))
        self.lifecycle()

    def fault_picker(self, rng: random.Random) -> FaultPicker:
        """Build the fault picker these rates describe, drawing from `rng`."""
        return FaultPicker(
            rng,
            error_rate=self.error_rate,
            reset_rate=self.reset_rate,
            hang_rate=self.hang_rate,
            in_doubt_rate=self.in_doubt_rate,
            malformed_rate=self.malformed_rate,
            error_statuses=self.error_statuses,
        )

    def throttle(self, rng: random.Random) -> Throttle:
        """Build the rate-independent throttle these settings describe, drawing from `rng`."""
        return Throttle(rng, rate=self.throttle_rate, retry_after=self.throttle_retry_after)

    def lifecycle(self) -> Lifecycle:
        """Build what decides how re-triggered runs end, seeded with `seed`."""
        return Lifecycle(
            seed=self.seed,
            fates=self.fates,
            shares=self.fate_shares,
            duration=self.run_duration,
            jitter=self.run_duration_jitter,
        )
