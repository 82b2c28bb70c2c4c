"""A short window's N per W (a Retry-After of 1 or 2 s), read from one pass, and checked.

A window, sliding or fixed, lets N through at once and then says wait whole seconds: N
successes in a moment, then a short wait, is N per that wait. But a process's first pass may
find the window holding others' requests already: those of a process killed a moment ago
(``kill -9`` and resume), or of a batch run just before. Its N is then too small, and paced as
a ceiling it held a resume to half the quota for a minute. So a window read from a first pass
is *unconfirmed*: the rate climbs back to it and probes beyond as after any cut, and the next
429 that is news confirms the window from the successes sent in the one window before it (the
requests a sliding window counted when it refused). A window read from a pass after a pause
(which the window drained of everyone's older requests) is confirmed at once.

Bookkeeping on the send times given: no clock, no asyncio.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CYCLE_BETA", "SentCount", "is_short_window"]

#: A rate learned from a window's pass starts this far below (its last successes were in flight).
CYCLE_BETA = 0.97

# A Retry-After under this after a pass is a short window's, which pacing at N per wait uses
# better than passes that wait out whole seconds rounded up (window mode).
SHORT_WAIT = 3.0
# The successes sent are counted in steps of this many seconds (the count over a window is read
# to within one step), and kept for as many as cover the longest short wait.
_STEP = 0.02
_KEPT = int(SHORT_WAIT / _STEP) + 2


def is_short_window(wait: float, took: float) -> bool:
    """True if successes sent over *took* s, then a wait of *wait* s, are a short window's.

    A window lets N through in a moment, then says wait whole seconds (1 or 2). A pass over
    half the wait (or a handful, which the caller rules out) is a quota shared with others:
    milliseconds round up too.
    """
    return 1 <= wait < SHORT_WAIT and 0 <= took <= wait / 2


class SentCount:
    """The successes counted so far, by send time, read back over the last few seconds."""

    __slots__ = ("_marks", "_next", "total")

    def __init__(self) -> None:
        #: Successes counted so far.
        self.total = 0
        # (send time, successes counted before it), one every _STEP at most, oldest first.
        self._marks: deque[tuple[float, int]] = deque(maxlen=_KEPT)
        self._next = float("-inf")

    def add(self, sent: float) -> None:
        """Count a success for a request sent at *sent*."""
        if sent >= self._next:  # one comparison per answer; a mark per step
            self._marks.append((sent, self.total))
            self._next = sent + _STEP
        self.total += 1

    def since(self, start: float) -> int:
        """Successes counted for requests sent after *start*: never more, fewer by at most
        those of one step (answers come back in about the order sent).

        Fewer, not more: a window confirmed from this count is paced at it.
        """
        for at, before in self._marks:
            if at > start:
                return self.total - before
        return 0

    def __repr__(self) -> str:
        return f"<SentCount total={self.total}, marks={len(self._marks)}>"
