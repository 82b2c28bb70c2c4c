"""Learn a fixed-window quota: N requests per window, then 429s until the window's end.

Adobe's gateway meters some APIs so: N requests per window, and a ``Retry-After`` that points at
the window's end. A :class:`FixedWindow` follows the *passes* of such a quota (from the end of
one pause to the next) and learns N as the successes of one pass. A pass that runs into a second
window counts more than N, so the smaller of the last two complete passes is taken.

A success for a request sent after a 429 of the same pass means the quota is not a fixed window
after all. Everything here is bookkeeping on the times given: no clock, no asyncio.
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
        "_requests",
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

    def in_this_pass(self, sent: float) -> bool:
        """True if a request sent at loop time *sent* belongs to the pass under way."""
        return sent >= self._start

    def spent(self, sent: float) -> None:
        """Record a 429 of this pass for a request sent at *sent*: the window is spent.

        The pass before this one is complete by now: N is learned from it.
        """
        self._first_429 = min(self._first_429, sent)
        if self._prev_start > -math.inf:
            self._counts = [*self._counts[-1:], self._prev_ok]
            self._requests = max(1, min(self._counts))

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
