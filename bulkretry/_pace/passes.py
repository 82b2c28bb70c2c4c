"""Read the 429s of one pass (from one pause to the next) for the shape they come in.

A quota that is spent refuses every request until it refills: its 429s come *solid*, one after
another, and no request sent after the first of them goes through. 429s that come at random
(throttling per resource) or at a quota's edge come *scattered* among successes. Only solid
ones justify stopping everyone (a pause) or reading the pass as a fixed window's. Which they
are is judged afresh after each cut: with a jittered latency, one request sent just after a
refused one may reach the server first and go through, and that alone must not mark the rest.
"""

from __future__ import annotations

import math

__all__ = ["Pass"]

# 429s in a row with no success between that are solid: a spent quota answers every request
# so; 429s at random rarely come three in a row.
_SOLID_RUN = 3
# 429s in a row that say a quota is spent even right after a shave at its edge: a sliding window
# grazed refuses two or three, until the requests that overran it slide out.
_SPENT_RUN = 8


class Pass:
    """The 429s since the last pause: how many in a row now, and whether any were scattered."""

    __slots__ = ("_first_429", "_scatter_from", "_start", "first_sent", "rate", "run", "scattered")

    def __init__(self) -> None:
        self._start = -math.inf
        # The send time of the first 429 of this pass, and of the first since the last cut.
        self._first_429 = self._scatter_from = math.inf
        #: 429s in a row since the last success.
        self.run = 0
        #: True once a request sent after a 429 of this pass (since the last cut) went through.
        self.scattered = False
        #: The send time of the first success ever counted (the first pass's start).
        self.first_sent = math.inf
        #: The rate the pass went at when its first 429 was counted (``inf``: none yet). Its
        #: 429s cut the rate before the pause that reads the pass, so it is kept here.
        self.rate = math.inf

    def throttled(self, sent: float, rate: float) -> None:
        """Count a 429 for a request sent at *sent*, *rate* being the rate before it counts."""
        self.run += 1
        if sent >= self._start:  # not an answer to a request sent before the pass began
            if self._first_429 == math.inf:
                self.rate = rate
            self._first_429 = min(self._first_429, sent)
            self._scatter_from = min(self._scatter_from, sent)

    def succeeded(self, sent: float) -> None:
        """Count a success for a request sent at *sent*."""
        self.run = 0
        if sent < self.first_sent:
            self.first_sent = sent
        if sent > self._scatter_from:
            self.scattered = True

    @property
    def solid(self) -> bool:
        """True if the 429s come solid now: three in a row, none scattered since the last cut."""
        return self.run >= _SOLID_RUN and not self.scattered

    @property
    def spent(self) -> bool:
        """True if they come solid for longer than a window's edge refuses once grazed."""
        return self.run >= _SPENT_RUN and not self.scattered

    @property
    def start(self) -> float:
        """When the pass began: the end of the pause before it (``-inf``: the first pass)."""
        return self._start

    @property
    def first_429(self) -> float:
        """The send time of the first 429 of this pass (``inf``: none yet)."""
        return self._first_429

    def cut(self) -> None:
        """The rate was cut: whether 429s are scattered is judged afresh from the next one.

        (With a server's jittered latency, one success sent just after a 429 that reached the
        server later marked a whole pass scattered; it then never paused, and cut by 0.7 each
        latency down to a tenth of the rate, under a window refusing nearly every request.)
        """
        self._scatter_from = math.inf
        self.scattered = False

    def restart(self, start: float) -> None:
        """A pause began: the next pass starts afresh at time *start*, when it ends (429s for
        requests sent before then are the last pass's)."""
        self._start = start
        self._first_429 = self.rate = math.inf
        self.cut()

    def __repr__(self) -> str:
        return f"<Pass run={self.run}, scattered={self.scattered}>"
