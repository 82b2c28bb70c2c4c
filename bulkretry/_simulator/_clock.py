"""Clocks the simulator reads: injectable so that tests never wait for time to pass."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
"""A callable returning seconds; only differences matter unless it is a wall clock."""

DEFAULT_MANUAL_START = 1_750_000_000.0
"""Where a `ManualClock` starts: a plausible epoch time, so it can stand in for a wall clock."""


class ManualClock:
    """Tell the time a test sets: it moves only when `advance` or `set` is called.

    One instance can serve both as the simulator's monotonic clock and as its wall clock.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = DEFAULT_MANUAL_START) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to `now`, which must not be in the past."""
        if now < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = float(now)
