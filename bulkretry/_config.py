"""Settings of a batch: one frozen dataclass, built by the CLI or by a library user.

Library code never reads argv or the environment; only :mod:`bulkretry._cli` does, and it builds
a :class:`Settings` from them. The ``DEFAULT_*`` constants are the documented defaults, chosen to
be safe against a production sandbox: a few requests per second, few in flight, a long deadline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from ._exceptions import ConfigurationError
from ._pace.halt import DEFAULT_HALT_ON, parse_halt_on

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_BURST",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEADLINE",
    "DEFAULT_HALT_ON",
    "DEFAULT_IMS_URL",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_ON_AMBIGUOUS",
    "DEFAULT_OP",
    "DEFAULT_RATE",
    "DEFAULT_RETRY_BUDGET",
    "DEFAULT_RUN_ID_PATTERN",
    "DEFAULT_SANDBOX",
    "DEFAULT_SCOPES",
    "DEFAULT_TIMEOUT",
    "Credentials",
    "Settings",
]

DEFAULT_BASE_URL = "https://platform.adobe.io/data/foundation/flowservice"
DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext"
DEFAULT_SANDBOX = "prod"
DEFAULT_OP = "re-trigger"
#: Requests per second. Adobe publishes no quota for Flow Service; five a second is far below
#: what its gateway is known to allow for other Platform APIs, and a 429 slows it further.
DEFAULT_RATE = 5.0
#: Requests allowed at once above the steady rate. One means no startup burst at all.
DEFAULT_BURST = 1
DEFAULT_CONCURRENCY = 8
#: Every worker is a task and a connection: past this, memory grows and nothing goes faster.
MAX_CONCURRENCY = 1000
DEFAULT_MAX_ATTEMPTS = 6
#: Seconds one request may take, connect to last byte.
DEFAULT_TIMEOUT = 30.0
#: Seconds one record may spend across all its attempts and waits.
DEFAULT_DEADLINE = 900.0
#: First backoff step and ceiling of one backoff wait, in seconds (full jitter below them).
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_CAP = 60.0
#: A Retry-After beyond this pauses the whole limiter instead of only the throttled record.
DEFAULT_PAUSE_AFTER = 5.0
#: A Retry-After beyond this stops the batch: waiting blindly for hours helps nobody.
DEFAULT_RETRY_AFTER_CAP = 900.0
#: After an answer that may hide a processed re-trigger (500, 502, 504, a timeout after sending):
#: "hold" leaves the run in_doubt, since Flow Service may accept a second re-trigger of a run
#: that is still failed, and a second send would then ingest its data twice.
DEFAULT_ON_AMBIGUOUS: Literal["retry", "hold"] = "hold"
#: Retries of 5xx, network failures and timeouts, as a share of first attempts.
DEFAULT_RETRY_BUDGET = 0.5
#: Adobe run IDs are UUIDs; upper-case hex is accepted and folded to lower case.
DEFAULT_RUN_ID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What identifies the caller to Adobe: a token (or a client to get one) and three headers.

    The ``repr`` never shows a secret, so a Credentials object can be logged.
    """

    api_key: str
    org_id: str
    sandbox: str = DEFAULT_SANDBOX
    access_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scopes: str = DEFAULT_SCOPES
    ims_url: str = DEFAULT_IMS_URL


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything that shapes a batch; see README for each field's meaning and default."""

    base_url: str = DEFAULT_BASE_URL
    op: str = DEFAULT_OP
    credentials: Credentials | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    deadline: float = DEFAULT_DEADLINE
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    pause_after: float = DEFAULT_PAUSE_AFTER
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    on_ambiguous: Literal["retry", "hold"] = DEFAULT_ON_AMBIGUOUS
    run_id_pattern: str = DEFAULT_RUN_ID_PATTERN
    dry_run: bool = False
    ca_bundle: str | None = None
    #: When the service looks down, see :mod:`bulkretry._halt` for the syntax.
    halt_on: str = DEFAULT_HALT_ON
    #: Stop after this many successful re-triggers (Adobe counts ingestion batches per day).
    max_retriggers: int | None = None
    #: Retries of failed requests, as a share of first attempts (429s are not counted).
    retry_budget: float = DEFAULT_RETRY_BUDGET
    #: With results files as input: the prior outcomes to act on; the other lines are skipped.
    only: frozenset[str] | None = None
    #: Send runs that an earlier run left in_doubt (they may have been re-triggered already).
    retry_in_doubt: bool = False
    #: Proxy URLs for the API and for IMS, resolved by the CLI from HTTPS_PROXY and NO_PROXY.
    proxy: str | None = None
    ims_proxy: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            problems.append(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if not self.rate > 0:
            problems.append("rate must be a positive number of requests per second")
        if self.burst < 1:
            problems.append("burst must be at least 1")
        if self.max_attempts < 1:
            problems.append("max-attempts must be at least 1")
        if not self.timeout > 0:
            problems.append("timeout must be positive")
        if not self.deadline > 0:
            problems.append("deadline must be positive")
        # "not x >= 0" also refuses NaN, which would turn every wait into NaN.
        if not 0 <= self.backoff_base < math.inf:
            problems.append("backoff-base must be a finite number of seconds, not negative")
        if not self.backoff_cap >= 0:
            problems.append("backoff-cap must not be negative")
        if not self.pause_after >= 0:
            problems.append("pause-after must not be negative")
        if not self.retry_after_cap >= 0:
            problems.append("retry-after-cap must not be negative")
        if self.on_ambiguous not in ("retry", "hold"):
            problems.append("on-ambiguous must be 'retry' or 'hold'")
        if not self.op or any(c in self.op for c in "&#?/ "):
            problems.append(f"op {self.op!r} is not a plain operation name")
        try:
            re.compile(self.run_id_pattern)
        except re.error as exc:
            problems.append(f"run-id-pattern is not a regular expression ({exc})")
        if self.max_retriggers is not None and self.max_retriggers < 1:
            problems.append("max-retriggers must be at least 1")
        if not (0 <= self.retry_budget < float("inf")):
            problems.append("retry-budget must be a non-negative share of first attempts")
        try:
            parse_halt_on(self.halt_on)
        except ConfigurationError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigurationError("; ".join(problems))
