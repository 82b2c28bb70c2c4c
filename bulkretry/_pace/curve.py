"""The curve a cut rate climbs back along, and which 429s one cut answers for.

After a cut from rate W (``top``) to ``beta`` times W, successes bring the rate back along CUBIC's
curve (as in the AWS SDKs' adaptive retry mode): fast at first, flat near W, then probing above
it ever faster. Its length is given in requests and turned into seconds at the rate cut from,
which keeps the share of 429s the same at any rate.

A 429 for a request sent before the cut answers for that cut (the same *episode*). At a quota
that counts requests over a window (N per W seconds, once learned), a cut shows only once the
window has slid past the requests that overran it: 429s for requests sent within W of a cut
still answer for it (cutting again for each cut a dropped quota to a fraction within a quarter
of a second). Bookkeeping on the times given: no clock, no asyncio.
"""

from __future__ import annotations

import math

__all__ = ["BETA", "Curve"]

#: A 429 multiplies the rate by this (CUBIC's beta).
BETA = 0.7

# Bounds of the recovery time, in seconds, whatever the rate.
_MIN_SECONDS = 1.0
_MAX_SECONDS = 600.0


class Curve:
    """Where the rate stands after the last cut: the rate cut from, how deep, and since when.

    *rate* is the configured one (nothing cut yet); *recovery* the number of requests it takes
    to climb back to the rate of a cut.
    """

    __slots__ = ("_beta", "_epoch", "_recovery", "_seconds", "cut_at", "learned", "top")

    def __init__(self, rate: float, *, recovery: int) -> None:
        if recovery < 1:
            raise ValueError(f"recovery must be at least one request, not {recovery!r}")
        self._recovery = recovery
        #: The time of the last cut (None: none since the start or the last :meth:`forget`).
        #: Read on every answer, so a plain attribute; only :meth:`cut` and :meth:`forget` set it.
        self.cut_at: float | None = None
        #: The rate of the last cut (CUBIC's W_max), or the configured one.
        self.top = rate
        self._beta = BETA
        # The curve starts at its epoch (the cut, or the end of a pause that came with it).
        self._epoch = -math.inf
        self._seconds = _MIN_SECONDS
        #: A window quota's requests and seconds, learned from a pass (None: not one, or not yet).
        self.learned: tuple[int, float] | None = None

    @property
    def epoch(self) -> float:
        """The time the climb back from the last cut starts."""
        return self._epoch

    def cut(self, now: float, rate: float, *, beta: float, start: float) -> float:
        """Cut from *rate* at time *now* by *beta*; the climb starts at *start*. Return the rate."""
        self.top, self._beta, self.cut_at, self._epoch = rate, beta, now, start
        self._seconds = min(_MAX_SECONDS, max(_MIN_SECONDS, self._recovery / rate))
        return rate * beta

    def target(self, now: float) -> float:
        """The rate the curve reaches at time *now* (unbounded: the caller caps it)."""
        return self.top * (1 - (1 - self._beta) * self.shortfall(now) ** 3)

    def shortfall(self, now: float) -> float:
        """The share of the climb left at *now*: 1 at its start, 0 back at the top, then < 0."""
        return 1 - max(0.0, now - self._epoch) / self._seconds

    def delay(self, until: float) -> None:
        """Start the climb no sooner than *until* (a pause holds the rate where it is)."""
        self._epoch = max(self._epoch, until)

    def learn(self, requests: int, seconds: float) -> None:
        """Remember a window quota of *requests* per *seconds*: its 429s answer for a cut longer."""
        self.learned = (requests, seconds)

    def forget(self, rate: float) -> None:
        """Drop the last cut and any window learned: *rate* is the top, the next 429 cuts afresh."""
        self.cut_at, self.top, self.learned = None, rate, None

    def answered_by_cut(self, sent: float) -> bool:
        """True if a 429 for a request sent at *sent* answers for the last cut, not news."""
        if self.cut_at is None:
            return False
        memory = 0.0 if self.learned is None else self.learned[1]
        return sent <= self.cut_at or sent < self.cut_at + memory

    def __repr__(self) -> str:
        if self.cut_at is None:
            return f"<Curve at {self.top:.4g}>"
        return f"<Curve cut at t={self.cut_at:.3f} from {self.top:.4g} by {self._beta:.3g}>"
