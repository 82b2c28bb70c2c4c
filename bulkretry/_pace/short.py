"""A short window's N per W (a Retry-After of 1 or 2 s), and which pass to read it from.

A window, sliding or fixed, lets N through as fast as they come and then says wait whole
seconds: N successes in less than that wait, then the wait, is N per that wait. But a process's
first pass may find the window holding others' requests already: those of a process killed a
moment ago (``kill -9`` and resume), or of a batch run just before. Its N is then too small, and
paced as a ceiling it held a resume to half the quota for a minute. So N is read from a pass
that starts when a pause ends: a sliding window has let everyone's older requests go by then (a
fixed one of a second may not have reset, and a pass across its reset counts more than N). After
a first pass that looks like a window's, the next pass goes at the rate the first one ran, and
asks for N + 1 only (:mod:`.holds`).

The rate read is N per wait, 3% under (the pass's last successes were in flight), and never
above the rate the pass went at when its first 429 came: a client's own burst is not a window's,
and its 429s have cut the rate already (from there, a window of 200/s read at 250/s was probed
past slowly, and once past, refused every request for a second).

Pure functions of the numbers given: no clock, no asyncio.
"""

from __future__ import annotations

__all__ = ["CYCLE_BETA", "FEWEST", "SHORT_WAIT", "is_short_window"]

#: A rate learned from a window's pass starts this far below (its last successes were in flight).
CYCLE_BETA = 0.97
#: A Retry-After under this after a pass is a short window's, which pacing at N per wait uses
#: better than passes that wait out whole seconds rounded up (window mode).
SHORT_WAIT = 3.0
#: Fewer successes than this in a pass are a handful: a quota shared with others, no window.
FEWEST = 32


def is_short_window(successes: int, wait: float, took: float) -> bool:
    """True if *successes* sent over *took* s, then a wait of *wait* s, are a short window's.

    A window lets N through faster than its wait, then says wait whole seconds (1 or 2). A
    handful is a quota shared with others, and a pass no faster than the wait one paced: their
    milliseconds round up to a second too. (A pass over half the wait, at 1-2 times a window's
    rate, used to count as no window: it went on in fixed-window mode, 0.64 of the quota.)
    """
    return successes >= FEWEST and 1 <= wait < SHORT_WAIT and 0 <= took < wait
