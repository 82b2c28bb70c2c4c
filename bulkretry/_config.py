"""Settings of a batch: one frozen dataclass, built by the CLI or by a library user.

Library code never reads argv or the environment; only :mod:`bulkretry._cli` does, and it builds
a :class:`Settings` from them. The ``DEFAULT_*`` constants are the documented defaults, chosen to
be safe against a production sandbox: a few requests per second, few in flight, a long deadline.

``--halt-on`` is a small language of its own; :func:`parse_halt_on` reads it into a
:class:`HaltPolicy` (its syntax is in that function's docstring), and
:class:`bulkretry._pace.halt.HaltDetector` applies it to the answers of a batch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from ._exceptions import ConfigurationError

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_BASE_URL",
    "DEFAULT_BURST",
    "DEFAULT_CHECK_DELAY",
    "DEFAULT_CHECK_SKEW",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEADLINE",
    "DEFAULT_FOLLOW_TIMEOUT",
    "DEFAULT_HALT_ON",
    "DEFAULT_HALT_WINDOW",
    "DEFAULT_IMS_URL",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_ON_AMBIGUOUS",
    "DEFAULT_OP",
    "DEFAULT_PAUSE_AFTER",
    "DEFAULT_POLL",
    "DEFAULT_RATE",
    "DEFAULT_RETRY_AFTER_CAP",
    "DEFAULT_RETRY_BUDGET",
    "DEFAULT_ROUNDS",
    "DEFAULT_ROUND_DELAY",
    "DEFAULT_RUN_ID_PATTERN",
    "DEFAULT_SANDBOX",
    "DEFAULT_SCOPES",
    "DEFAULT_TIMEOUT",
    "MAX_CONCURRENCY",
    "Credentials",
    "HaltPolicy",
    "Settings",
    "parse_halt_on",
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
#: "check" looks the run up first (see _engine/resolve.py), and sends it again only when the
#: look-up shows that it was not processed.
DEFAULT_ON_AMBIGUOUS: Literal["retry", "hold", "check"] = "check"
#: Seconds after a lost answer before the look-up (``--on-ambiguous check``): time for the new
#: run to show in Flow Service's listings.
DEFAULT_CHECK_DELAY = 3.0
#: Seconds a look-up's window is widened on each side for the clocks of client and service.
DEFAULT_CHECK_SKEW = 1.0
#: Retries of 5xx, network failures and timeouts, as a share of first attempts.
DEFAULT_RETRY_BUDGET = 0.5
#: When the service looks down (syntax in :func:`parse_halt_on`): 90 failures among the last 100
#: answers, or ten minutes of failures without a success.
DEFAULT_HALT_ON = "5xx=90%/100,stall=600"
#: Answers a ``5xx=P%`` rule looks at when it names no window.
DEFAULT_HALT_WINDOW = 100
#: Seconds between two look-ups of a followed run at least (``--poll`` of ``watch``, ``--follow``).
DEFAULT_POLL = 30.0
#: Seconds following may last in all (``--follow-timeout``); a run still going then is unknown.
DEFAULT_FOLLOW_TIMEOUT = 86_400.0
#: Re-triggers per input run at most under ``--follow`` (``--rounds``), the first included.
DEFAULT_ROUNDS = 1
#: Seconds before a followed run that failed is re-triggered again (``--round-delay``).
DEFAULT_ROUND_DELAY = 60.0
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

    @property
    def from_ims(self) -> bool:
        """True if the token comes from IMS: a client id and secret, and no access token."""
        return not self.access_token and bool(self.client_id and self.client_secret)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything that shapes a batch; see README for each field's meaning and default."""

    base_url: str = DEFAULT_BASE_URL
    op: str = DEFAULT_OP
    credentials: Credentials | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    #: Processes splitting the quota (``--shard K/N``'s N): a quota the server declares in its
    #: headers is split between them too.
    processes: int = 1
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    deadline: float = DEFAULT_DEADLINE
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    pause_after: float = DEFAULT_PAUSE_AFTER
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    on_ambiguous: Literal["retry", "hold", "check"] = DEFAULT_ON_AMBIGUOUS
    check_delay: float = DEFAULT_CHECK_DELAY
    check_skew: float = DEFAULT_CHECK_SKEW
    #: Before the first re-trigger, one GET checks base URL and credentials (the CLI turns it
    #: on but for a dry run; a dry run with it needs credentials).
    preflight: bool = False
    run_id_pattern: str = DEFAULT_RUN_ID_PATTERN
    dry_run: bool = False
    ca_bundle: str | None = None
    #: When the service looks down, see :func:`parse_halt_on` for the syntax.
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
    #: Following new runs: the shortest interval between two look-ups of a run, and how long
    #: following may last in all.
    poll: float = DEFAULT_POLL
    follow_timeout: float = DEFAULT_FOLLOW_TIMEOUT
    #: ``run --follow``: follow each new run to its end; re-trigger a run that failed again
    #: after ``round_delay`` while the record has had fewer than ``rounds`` re-triggers.
    follow: bool = False
    rounds: int = DEFAULT_ROUNDS
    round_delay: float = DEFAULT_ROUND_DELAY

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            problems.append(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if not self.rate > 0:
            problems.append("rate must be a positive number of requests per second")
        if self.burst < 1:
            problems.append("burst must be at least 1")
        if self.processes < 1:
            problems.append("processes must be at least 1")
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
        if self.on_ambiguous not in ("retry", "hold", "check"):
            problems.append("on-ambiguous must be 'retry', 'hold' or 'check'")
        if not 0 <= self.check_delay < math.inf or not 0 <= self.check_skew < math.inf:
            problems.append("check delay and skew must be finite numbers of seconds, not negative")
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
        if not 0 < self.poll < math.inf:
            problems.append("poll must be a positive number of seconds")
        if not 0 < self.follow_timeout < math.inf:
            problems.append("follow-timeout must be a positive number of seconds")
        if self.rounds < 1:
            problems.append("rounds must be at least 1")
        if not 0 <= self.round_delay < math.inf:
            problems.append("round-delay must be a finite number of seconds, not negative")
        if self.follow and self.dry_run:
            problems.append("--follow follows the runs a batch re-triggers; --dry-run sends none")
        try:
            parse_halt_on(self.halt_on)
        except ConfigurationError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigurationError("; ".join(problems))


# -- --halt-on ---------------------------------------------------------------------------------

_SHARE = re.compile(r"(?:(?P<percent>\d+(?:\.\d*)?|\.\d+)%|(?P<count>\d+))(?:/(?P<window>\d+))?")
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>[smh]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_EXAMPLE = "for example '5xx=90%/100,stall=600', 'now,5xx=20' or 'never'"


@dataclass(frozen=True, slots=True, kw_only=True)
class HaltPolicy:
    """When to halt a batch; ``str()`` gives the spec back in canonical form.

    ``errors`` of the last ``window`` answers being failures halts (``percent`` is the share as
    written, if it was written as one); so do failures lasting ``stall`` seconds.
    """

    when: Literal["soon", "now"] = "soon"
    errors: int | None = None
    window: int | None = None
    percent: float | None = None
    stall: float | None = None

    def __post_init__(self) -> None:
        if (self.errors is None) != (self.window is None):
            raise ValueError("errors and window go together")
        if self.errors is not None and self.window is not None and self.errors > self.window:
            raise ValueError("errors must not exceed window")
        if self.errors is not None and self.errors < 1:
            raise ValueError("errors must be at least 1")
        if self.stall is not None and not (self.stall > 0 and math.isfinite(self.stall)):
            raise ValueError("stall must be a positive number of seconds")
        if self.when not in ("soon", "now"):
            raise ValueError("when must be 'soon' or 'now'")

    @property
    def never(self) -> bool:
        """True if no rule can ever halt the batch."""
        return self.errors is None and self.stall is None

    def __str__(self) -> str:
        if self.never:
            return "never"
        rules: list[str] = [] if self.when == "soon" else [self.when]
        if self.percent is not None:
            rules.append(f"5xx={self.percent:g}%/{self.window}")
        elif self.errors is not None:
            rules.append(f"5xx={self.errors}/{self.window}")
        if self.stall is not None:
            rules.append(f"stall={self.stall:g}")
        return ",".join(rules)


def parse_halt_on(text: str) -> HaltPolicy:
    """Read a ``--halt-on`` spec into a policy; raise ConfigurationError naming the problem.

    A spec is in the spirit of GNU parallel's ``--halt``: an optional *when* word, then one or
    more *rules* joined by commas::

        SPEC     = "never" | [WHEN ","] RULE *("," RULE)
        WHEN     = "soon" | "now"
        RULE     = "5xx=" SHARE ["/" WINDOW] | "stall=" DURATION
        SHARE    = NUMBER "%" | INTEGER
        WINDOW   = INTEGER
        DURATION = NUMBER ["s" | "m" | "h"]

    ``5xx=P%/N``
        Halt when at least P percent of the last N answers (that is, at least
        ``ceil(P * N / 100)`` of them) were failures: a 5xx, a network failure or a timeout.
        ``0 < P <= 100``, ``N >= 1``. Without ``/N`` the window is ``DEFAULT_HALT_WINDOW`` (100)
        answers.
    ``5xx=K/N``
        Halt when at least K of the last N answers were failures; ``1 <= K <= N``. ``5xx=K``
        alone means K failures in a row.
    ``stall=D``
        Halt when failures have kept coming for D seconds (or minutes, or hours) with no success
        in between.
    ``soon`` (the default when) / ``now``
        What halting means: *soon* starts no new attempt and lets those in flight finish; *now*
        also abandons those in flight, whose outcome then stays unknown.
    ``never``
        Never halt, on its own.

    A batch halts when any rule holds. Case and spaces around commas do not matter. The default
    is ``DEFAULT_HALT_ON`` (``5xx=90%/100,stall=600``). Examples: ``now,5xx=50%/200``,
    ``5xx=20``, ``stall=10m``.
    """
    if not text.strip():
        _bad(text, "it is empty")
    parts = [part.strip() for part in text.strip().lower().split(",")]
    if parts == ["never"]:
        return HaltPolicy()
    when: Literal["soon", "now"] = "soon"
    if parts[0] in ("soon", "now"):
        when = "now" if parts.pop(0) == "now" else "soon"
    if not parts:
        _bad(text, f"'{when}' must be followed by at least one rule")
    errors = window = None
    percent = stall = None
    seen: set[str] = set()
    for part in parts:
        key, equals, value = part.partition("=")
        key = key.strip()
        value = value.strip()
        if not part:
            _bad(text, "a rule is empty")
        if part in ("never", "soon", "now"):
            _bad(text, f"'{part}' can only stand alone or come first")
        if not equals or key not in ("5xx", "stall"):
            _bad(text, f"'{part}' is not a rule")
        if key in seen:
            _bad(text, f"'{key}' is given twice")
        seen.add(key)
        if key == "5xx":
            errors, window, percent = _parse_share(text, value)
        else:
            stall = _parse_duration(text, value)
    return HaltPolicy(when=when, errors=errors, window=window, percent=percent, stall=stall)


def _parse_share(text: str, value: str) -> tuple[int, int, float | None]:
    match = _SHARE.fullmatch(value)
    if match is None:
        _bad(text, f"'5xx={value}' is not a share such as 90%/100 or 20/100")
    window = int(match["window"]) if match["window"] else None
    if window is not None and window < 1:
        _bad(text, "the window of '5xx' must be at least one answer")
    if match["percent"] is not None:
        percent = float(match["percent"])
        if not 0 < percent <= 100:
            _bad(text, f"'{match['percent']}%' is not a percentage above 0 and at most 100")
        window = DEFAULT_HALT_WINDOW if window is None else window
        # A hair below, so that 90% of 100 asks for 90 and not 91 through a rounding error.
        return max(1, math.ceil(percent * window / 100 - 1e-9)), window, percent
    count = int(match["count"])
    window = count if window is None else window
    if not 1 <= count <= window:
        _bad(text, f"'5xx={value}' asks for a count between 1 and the window")
    return count, window, None


def _parse_duration(text: str, value: str) -> float:
    match = _DURATION.fullmatch(value)
    if match is None:
        _bad(text, f"'stall={value}' is not a duration such as 600, 90s, 10m or 1h")
    seconds = float(match["number"]) * _UNITS[match["unit"]]
    if not seconds > 0:
        _bad(text, "'stall' must be longer than zero")
    return seconds


def _bad(text: str, problem: str) -> NoReturn:
    raise ConfigurationError(f"--halt-on {text.strip()!r} is not valid: {problem} ({_EXAMPLE}).")
