"""Trouble on demand: faults drawn from a seeded random generator, and how a 429 says "later".

Faults are named by the words of `Fault`; scripts (`Simulator.script`) and the `on_request` hook
use the same words, or a bare HTTP status. `Throttle` answers a share of requests 429 whatever
the rate they come at (a resource throttled, not a client); the quota is in `_quota`.
"""

from __future__ import annotations

import math
import random
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


class Throttle:
    """Throttle a share of requests whatever their rate: a 429 with the same Retry-After each time.

    Its draws come from their own generator, so that turning it on leaves the faults as they were.
    """

    __slots__ = ("_rng", "rate", "retry_after")

    def __init__(self, rng: random.Random, *, rate: float, retry_after: float) -> None:
        if not 0.0 <= rate <= 1.0 or retry_after < 0:
            raise ValueError("a throttle needs 0 <= rate <= 1 and retry_after >= 0")
        self._rng = rng
        self.rate = rate
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"Throttle(rate={self.rate!r}, retry_after={self.retry_after!r})"

    def pick(self) -> bool:
        """Tell whether this request is throttled."""
        return self.rate > 0 and self._rng.random() < self.rate
