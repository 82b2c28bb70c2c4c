"""Trouble on demand: the gateway's quota, and faults drawn from a seeded random generator.

Two quota shapes, both answering 429 with Adobe's gateway body:

- `TokenBucketQuota`: `rate` requests a second on average, `burst` at once;
- `WindowQuota`: `requests` per fixed window of `window` seconds, windows aligned on the clock.

Faults are named by the words of `Fault`; scripts (`Simulator.script`) and the `on_request` hook
use the same words, or a bare HTTP status.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal, TypeAlias, get_args

RetryAfterStyle: TypeAlias = Literal["seconds", "http-date", "none"]
"""How a 429 tells when to come back: delay-seconds, an HTTP-date, or not at all."""

Fault: TypeAlias = Literal[
    "ok",
    "reset",
    "hang",
    "html",
    "truncated",
    "no-id",
    "empty",
    "in-doubt-reset",
    "in-doubt-hang",
    "in-doubt-500",
    "in-doubt-502",
    "in-doubt-504",
]
"""What to do with one request, besides answering a bare HTTP status.

`ok` serves the request normally; `reset` closes the connection without an answer; `hang` never
answers; `html`, `truncated`, `no-id` and `empty` perform the work and answer 200 with a
malformed (or no) body; `in-doubt-*` perform the work and lose the answer (reset, hang) or replace
it by an error.
"""

Answer: TypeAlias = int | Fault
"""A scripted answer: an HTTP status (200 means serve normally) or a `Fault`."""

FAULTS: frozenset[str] = frozenset(get_args(Fault))
MALFORMED: tuple[Fault, ...] = ("html", "truncated", "no-id")
#: Every spoiled 200; `empty` is for scripts only, so that seeded random faults stay the same.
SPOILED: tuple[Fault, ...] = (*MALFORMED, "empty")
IN_DOUBT: tuple[Fault, ...] = ("in-doubt-reset", "in-doubt-500", "in-doubt-502", "in-doubt-504")
DEFAULT_ERROR_STATUSES: tuple[int, ...] = (500, 502, 503, 504)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBucketQuota:
    """Admit `rate` requests a second on average and up to `burst` at once."""

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowQuota:
    """Admit `requests` requests in each fixed window of `window` seconds."""

    requests: int
    window: float = 1.0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window <= 0:
            raise ValueError("a fixed window needs requests >= 1 and window > 0")


Quota: TypeAlias = TokenBucketQuota | WindowQuota


class Limiter:
    """Enforce one `Quota` on a clock: `admit` lets a request pass or says how long to wait."""

    __slots__ = ("_count", "_last", "_tokens", "_window_start", "quota")

    def __init__(self, quota: Quota, now: float) -> None:
        self.quota = quota
        self._tokens = float(quota.burst) if isinstance(quota, TokenBucketQuota) else 0.0
        self._last = now
        self._window_start = -math.inf
        self._count = 0

    def __repr__(self) -> str:
        return f"Limiter({self.quota!r}, tokens={self._tokens:.2f}, count={self._count})"

    def replace(self, quota: Quota, now: float) -> Limiter:
        """Return a limiter for `quota` that carries over what this one has used."""
        new = Limiter(quota, now)
        if isinstance(quota, TokenBucketQuota) and isinstance(self.quota, TokenBucketQuota):
            self._refill(now)
            # Changing the rate mid-run must not hand out a fresh burst for free.
            new._tokens = min(self._tokens, float(quota.burst))
        elif isinstance(quota, WindowQuota) and isinstance(self.quota, WindowQuota):
            new._window_start, new._count = self._window_start, self._count
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
        start = math.floor(now / quota.window) * quota.window
        if start != self._window_start:
            self._window_start, self._count = start, 0
        if self._count < quota.requests:
            self._count += 1
            return None
        return start + quota.window - now

    def _refill(self, now: float) -> None:
        assert isinstance(self.quota, TokenBucketQuota)
        elapsed = max(0.0, now - self._last)
        self._tokens = min(float(self.quota.burst), self._tokens + elapsed * self.quota.rate)
        self._last = now


def retry_after_value(style: RetryAfterStyle, delay: float, wall_now: float) -> str | None:
    """Format a Retry-After header value for a wait of `delay` seconds, or None to leave it out."""
    if style == "none":
        return None
    if style == "seconds":
        # Delay-seconds is a whole number: round up so a client that obeys is admitted.
        return str(max(1, math.ceil(delay)))
    return formatdate(math.ceil(wall_now + delay), usegmt=True)


class FaultPicker:
    """Draw at most one fault a request, with the configured probabilities, from a seeded RNG."""

    __slots__ = ("_cuts", "_rng", "active", "error_statuses")

    def __init__(
        self,
        rng: random.Random,
        *,
        error_rate: float = 0.0,
        reset_rate: float = 0.0,
        hang_rate: float = 0.0,
        in_doubt_rate: float = 0.0,
        malformed_rate: float = 0.0,
        error_statuses: tuple[int, ...] = DEFAULT_ERROR_STATUSES,
    ) -> None:
        rates = (error_rate, reset_rate, hang_rate, in_doubt_rate, malformed_rate)
        if any(r < 0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must be >= 0 and add up to at most 1")
        self._rng = rng
        self.error_statuses = error_statuses
        self._cuts = tuple(sum(rates[: i + 1]) for i in range(len(rates)))
        self.active = sum(rates) > 0

    def __repr__(self) -> str:
        return f"FaultPicker(cuts={self._cuts!r})"

    def pick(self, *, retrigger: bool) -> Answer | None:
        """Return the fault for one request, or None to serve it normally.

        In-doubt and malformed faults only make sense where work is performed, so other requests
        get a plain error in their place.
        """
        if not self.active:
            return None
        draw = self._rng.random()
        error, reset, hang, in_doubt, malformed = self._cuts
        if draw < error:
            return self._rng.choice(self.error_statuses)
        if draw < reset:
            return "reset"
        if draw < hang:
            return "hang"
        if draw < in_doubt:
            return self._rng.choice(IN_DOUBT) if retrigger else 500
        if draw < malformed:
            return self._rng.choice(MALFORMED)
        return None
