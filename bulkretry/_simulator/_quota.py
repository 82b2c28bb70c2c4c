"""The gateway's quota, in the shapes real gateways give it, shared by every client.

Each shape answers 429 with Adobe's gateway body when it refuses a request, and says how long
until it would admit one (the Retry-After):

- `TokenBucketQuota`: `rate` requests a second on average, `burst` at once;
- `LeakyBucketQuota`: a reverse proxy's default, with no burst at all: a request closer than
  1/`rate` to the previous admitted one is refused;
- `WindowQuota`: `requests` in each fixed window of `window` seconds, windows aligned on the
  clock; a refused request is told the exact time left until the window resets;
- `SlidingWindowQuota`: `requests` in any `window` seconds; refused requests count too (unless
  `count_rejected=False`), so a client that keeps hammering keeps it closed.

`per_minute` builds the per-minute quotas: a fixed or sliding window of 60 seconds. One quota
serves every client together; the engine counts per client what the quota admitted and refused.
Optionally the answers carry the quota's state as ``RateLimit-*`` (IETF draft) or
``X-RateLimit-*`` headers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, TypeAlias

EPSILON = 1e-6
"""Seconds of clock rounding forgiven: a request 1/rate after the last one is on time."""

MINUTE = 60.0

QuotaShape: TypeAlias = Literal["token-bucket", "leaky-bucket", "fixed-window", "sliding-window"]
QUOTA_SHAPES: tuple[QuotaShape, ...] = (
    "token-bucket",
    "leaky-bucket",
    "fixed-window",
    "sliding-window",
)

RateLimitHeaders: TypeAlias = Literal["none", "ietf", "x"]
"""Which headers tell the quota's state: none, ``RateLimit-*`` or ``X-RateLimit-*``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBucketQuota:
    """Admit `rate` requests a second on average and up to `burst` at once."""

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class LeakyBucketQuota:
    """Admit a request only if the previous admitted one is at least 1/`rate` seconds old."""

    rate: float

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("a leaky bucket needs rate > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowQuota:
    """Admit `requests` requests in each fixed window of `window` seconds."""

    requests: int
    window: float = 1.0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window <= 0:
            raise ValueError("a fixed window needs requests >= 1 and window > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class SlidingWindowQuota:
    """Admit a request if fewer than `requests` came in the last `window` seconds.

    With `count_rejected` (the default) the requests refused count as well as those admitted.
    """

    requests: int
    window: float = 1.0
    count_rejected: bool = True

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window <= 0:
            raise ValueError("a sliding window needs requests >= 1 and window > 0")


Quota: TypeAlias = TokenBucketQuota | LeakyBucketQuota | WindowQuota | SlidingWindowQuota


def per_minute(requests: int, *, sliding: bool = False) -> WindowQuota | SlidingWindowQuota:
    """Return a quota of `requests` a minute: a fixed window of 60 s, or a sliding one."""
    if sliding:
        return SlidingWindowQuota(requests=requests, window=MINUTE)
    return WindowQuota(requests=requests, window=MINUTE)


def shape_of(quota: Quota) -> QuotaShape:
    """Name the shape of `quota`, as the command line and the control endpoint write it."""
    if isinstance(quota, TokenBucketQuota):
        return "token-bucket"
    if isinstance(quota, LeakyBucketQuota):
        return "leaky-bucket"
    if isinstance(quota, WindowQuota):
        return "fixed-window"
    return "sliding-window"


class Limiter:
    """Enforce one `Quota` on a clock: `admit` lets a request pass or says how long to wait."""

    __slots__ = ("_admitted_at", "_count", "_last", "_log", "_tokens", "_window_start", "quota")

    def __init__(self, quota: Quota, now: float) -> None:
        self.quota = quota
        self._tokens = float(quota.burst) if isinstance(quota, TokenBucketQuota) else 0.0
        self._last = now
        self._admitted_at = -math.inf
        self._window_start = -math.inf
        self._count = 0
        # The newest `requests` entries in the window are all it takes to know it is full.
        size = quota.requests if isinstance(quota, SlidingWindowQuota) else 0
        self._log: deque[float] = deque(maxlen=size)

    def __repr__(self) -> str:
        quota = self.quota
        if isinstance(quota, TokenBucketQuota):
            return f"Limiter({quota!r}, tokens={self._tokens:.2f})"
        if isinstance(quota, LeakyBucketQuota):
            return f"Limiter({quota!r}, admitted_at={self._admitted_at!r})"
        if isinstance(quota, WindowQuota):
            return f"Limiter({quota!r}, count={self._count})"
        return f"Limiter({quota!r}, logged={len(self._log)})"

    def replace(self, quota: Quota, now: float) -> Limiter:
        """Return a limiter for `quota` that carries over what this one has used."""
        new = Limiter(quota, now)
        old = self.quota
        if isinstance(quota, TokenBucketQuota) and isinstance(old, TokenBucketQuota):
            self._refill(now)
            # Changing the rate mid-run must not hand out a fresh burst for free.
            new._tokens = min(self._tokens, float(quota.burst))
        elif isinstance(quota, LeakyBucketQuota) and isinstance(old, LeakyBucketQuota):
            new._admitted_at = self._admitted_at
        elif isinstance(quota, WindowQuota) and isinstance(old, WindowQuota):
            new._window_start, new._count = self._window_start, self._count
        elif isinstance(quota, SlidingWindowQuota) and isinstance(old, SlidingWindowQuota):
            new._log.extend(self._log)
        return new

    def admit(self, now: float) -> float | None:
        """Take one request's share; return None if admitted, else seconds until one would be."""
        quota = self.quota
        if isinstance(quota, TokenBucketQuota):
            self._refill(now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / quota.rate
        if isinstance(quota, LeakyBucketQuota):
            wait = self._admitted_at + 1.0 / quota.rate - now
            if wait <= EPSILON:
                self._admitted_at = now
                return None
            return wait
        if isinstance(quota, WindowQuota):
            start = self._window(now, quota)
            if self._count < quota.requests:
                self._count += 1
                return None
            return start + quota.window - now
        log = self._slide(now, quota)
        if len(log) < quota.requests:
            log.append(now)
            return None
        if quota.count_rejected:
            log.append(now)
        return log[0] + quota.window - now

    def status(self, now: float) -> tuple[int, int, float]:
        """Return the quota's limit, what is left of it now, and seconds until it is all back.

        A fixed window is all back when it resets; the other shapes when they have refilled.
        """
        quota = self.quota
        if isinstance(quota, TokenBucketQuota):
            self._refill(now)
            left = math.floor(self._tokens + EPSILON)
            return quota.burst, left, max(0.0, (quota.burst - self._tokens) / quota.rate)
        if isinstance(quota, LeakyBucketQuota):
            wait = max(0.0, self._admitted_at + 1.0 / quota.rate - now)
            return 1, 0 if wait > EPSILON else 1, wait
        if isinstance(quota, WindowQuota):
            start = self._window(now, quota)
            return quota.requests, quota.requests - self._count, start + quota.window - now
        log = self._slide(now, quota)
        reset = log[-1] + quota.window - now if log else 0.0
        return quota.requests, quota.requests - len(log), reset

    def _slide(self, now: float, quota: SlidingWindowQuota) -> deque[float]:
        """Forget the requests that have left the window; return those still in it."""
        log = self._log
        horizon = now - quota.window + EPSILON
        while log and log[0] <= horizon:
            log.popleft()
        return log

    def _window(self, now: float, quota: WindowQuota) -> float:
        start = math.floor(now / quota.window) * quota.window
        if start != self._window_start:
            self._window_start, self._count = start, 0
        return start

    def _refill(self, now: float) -> None:
        assert isinstance(self.quota, TokenBucketQuota)
        elapsed = max(0.0, now - self._last)
        self._tokens = min(float(self.quota.burst), self._tokens + elapsed * self.quota.rate)
        self._last = now


def policy(quota: Quota) -> str:
    """Write `quota` as a RateLimit-Policy: its limit (as `status` gives it) per window.

    A bucket's limit is its burst, refilled in burst/rate seconds (a fraction of a second,
    which the IETF draft's whole seconds cannot say: a reader that wants the rate gets it).
    """
    if isinstance(quota, TokenBucketQuota):
        return f"{quota.burst};w={quota.burst / quota.rate:g}"
    if isinstance(quota, LeakyBucketQuota):
        return f"1;w={1 / quota.rate:g}"
    return f"{quota.requests};w={quota.window:g}"


def rate_limit_headers(
    style: RateLimitHeaders,
    status: tuple[int, int, float],
    wall_now: float,
    declared: str | None = None,
) -> dict[str, str]:
    """Write a quota's `status` as headers, or none; `declared` is its `policy` (IETF style).

    RateLimit-Reset is in seconds from now, X-RateLimit-Reset in epoch seconds (as GitHub writes
    it); both are rounded up.
    """
    if style == "none":
        return {}
    limit, left, reset = status
    if style == "ietf":
        headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(left),
            "RateLimit-Reset": str(max(0, math.ceil(reset - EPSILON))),
        }
        if declared is not None:
            headers["RateLimit-Policy"] = declared
        return headers
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(left),
        "X-RateLimit-Reset": str(math.ceil(wall_now + reset - EPSILON)),
    }
