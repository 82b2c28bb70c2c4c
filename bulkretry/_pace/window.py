"""Learn a fixed-window quota: N requests per window, then 429s until the window's end.

Adobe's gateway meters some APIs so: N requests per window, and a ``Retry-After`` that points at
the window's end. A :class:`FixedWindow` follows the *passes* of such a quota (from the end of
one pause to the next) and learns N as the successes of one pass. A pass that runs into a second
window counts more than N, so the smaller of the last two complete passes is taken.

A success for a request sent after a 429 of the same pass means the quota is not a fixed window
after all; so do two passes in a row spent short of half of N, or that ran past N + 1 (a pass
starts when the window resets, so only a pass whose N was learned short runs on, and the pass
that ran on teaches the whole N; 429s that come at random, whatever the rate, make passes of
random length instead). Everything here is bookkeeping on the times given: no clock, no asyncio.
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["FixedWindow", "Verdict"]

#: Which pass a success belonged to, or that it shows the quota is not a fixed window.
Verdict = Literal["this pass", "an earlier pass", "not a window"]


class FixedWindow:
    """Count the successes of each pass and learn the requests per window from them.

    The pass that revealed the window started at *start*, had *requests* successes and ended
    with a 429 for a request sent at *first_429*; its successes still in flight are counted as
    they come.
    """

    __slots__ = (
        "_counts",
        "_first_429",
        "_ok",
        "_prev_first_429",
        "_prev_ok",
        "_prev_start",
        "_ran_on",
        "_requests",
        "_short_run",
        "_start",
    )

    def __init__(self, requests: int, *, start: float, first_429: float) -> None:
        self._requests = requests
        # The success counts of the last complete passes.
        self._counts: list[int] = []
        # The pass under way and the one before it: when each started, how many of its requests
        # succeeded, and the send time of its first throttled request.
        self._start, self._ok, self._first_429 = start, requests, first_429
        self._prev_start, self._prev_ok, self._prev_first_429 = -math.inf, 0, math.inf
        # Whether the pass under way, and the one before it, ran past N + 1.
        self._ran_on = (False, False)
        # How many passes in a row were spent short of half of N.
        self._short_run = 0

    @property
    def requests(self) -> int:
        """The requests per window learned so far (N)."""
        return self._requests

    @property
    def pass_start(self) -> float:
        """The loop time at which the pass under way started."""
        return self._start

    def next_pass(self, start: float) -> None:
        """Close the pass under way; the next one starts at loop time *start*."""
        self._prev_start, self._prev_ok = self._start, self._ok
        self._prev_first_429 = self._first_429
        self._start, self._ok, self._first_429 = start, 0, math.inf
        self._ran_on = (False, self._ran_on[0])

    def ran_on(self) -> bool:
        """Record that the pass under way ran past N + 1; True if the one before it did too."""
        self._ran_on = (True, self._ran_on[1])
        return self._ran_on[1]

    def in_this_pass(self, sent: float) -> bool:
        """True if a request sent at loop time *sent* belongs to the pass under way."""
        return sent >= self._start

    def spent(self, sent: float) -> bool:
        """Record a 429 of this pass for a request sent at *sent*: the window is spent.

        The pass before this one is complete by now: N is learned from it. Return True if this
        pass and the one before it were spent short of half of N: a window resets to N at the
        start of each pass, so 429s that come that early, twice, are not the window's.
        """
        short = self._ok < self._requests / 2
        self._short_run = self._short_run + 1 if short else 0
        self._first_429 = min(self._first_429, sent)
        if self._prev_start > -math.inf:
            self._counts = [*self._counts[-1:], self._prev_ok]
            self._requests = max(1, min(self._counts))
        return self._short_run >= 2

    def count_success(self, sent: float) -> Verdict:
        """Count a success for a request sent at loop time *sent*; say which pass it was in."""
        if sent >= self._start:
            self._ok += 1
            return "this pass"
        if sent > self._prev_first_429:
            # A success for a request sent after a 429 of the same pass: not a fixed window.
            return "not a window"
        if sent >= self._prev_start:
            self._prev_ok += 1
        return "an earlier pass"

    def __repr__(self) -> str:
        return (
            f"<FixedWindow N={self._requests}, this pass from t={self._start:.3f}: "
            f"{self._ok} ok, last pass from t={self._prev_start:.3f}: {self._prev_ok} ok>"
        )
