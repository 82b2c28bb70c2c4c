"""The new runs that clear answers named, and what they show of the service's clock.

A run a clear answer named belongs to its record and is never a candidate when a lost answer
is looked up (:mod:`.resolve`). Each is kept with when its request left and was answered, so
that where its ``createdAt`` falls, once a listing shows it, measures how far the service's
clock is from ours.
"""

from __future__ import annotations

from collections import deque

from .._config import Settings
from .._http.lookups import RunView

__all__ = ["Claims", "horizon"]

#: Clear answers seen in listings before their clock offset is trusted, and the margin kept
#: above the largest offset seen.
_SKEW_SAMPLES = 5
_SKEW_MARGIN_MS = 10
# Seconds of claims kept before the oldest request still unanswered left, beyond the skew (a
# claim is stamped when answered, after its run was created: none older can fall in a window).
_CLAIM_MARGIN = 1.0
# Seconds of claims kept before the oldest window still open, and at most in all beyond the
# timeout and the check delay.
_OPEN_MARGIN = 60.0


def horizon(now: float, settings: Settings, oldest_sent: float, open_since_ms: int | None) -> float:
    """The wall time (epoch s) before which no claim can matter any more.

    A window still open reaches back to its ``since``; one still to come opens (less the skew)
    when a request still unanswered left. So a fast batch keeps seconds of claims, not the
    ~90 s the timeout alone would bound (450,000 claims, 130 MB at 5,000 requests/s).
    """
    limit = now - settings.timeout - settings.check_delay - _OPEN_MARGIN
    # The skew twice: the window's start in the service's clock, our claims in ours.
    limit = max(limit, oldest_sent - 2 * settings.check_skew - _CLAIM_MARGIN)
    if open_since_ms is not None:
        limit = min(limit, open_since_ms / 1000 - _OPEN_MARGIN)
    return limit


class Claims:
    """Claimed new runs (by wall time, forgotten past a horizon) and the clock offset seen."""

    __slots__ = ("_by_time", "_claimed", "_samples", "_seen_ms", "_windows")

    def __init__(self) -> None:
        self._by_time: deque[tuple[float, str]] = deque()
        self._claimed: set[str] = set()
        #: When the request of a claimed run left and was answered (epoch ms).
        self._windows: dict[str, tuple[int, int]] = {}
        self._seen_ms = 0
        self._samples = 0

    def __repr__(self) -> str:
        return f"Claims({len(self._claimed)} runs, offset {self._seen_ms} ms/{self._samples})"

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._claimed

    def add(self, run_id: str, now: float, window: tuple[float, float] | None = None) -> None:
        """Claim ``run_id`` at ``now`` (epoch s); ``window``: when its request left, answered."""
        self._by_time.append((now, run_id))
        self._claimed.add(run_id)
        if window is not None:
            self._windows[run_id] = (int(window[0] * 1000), int(window[1] * 1000))

    def forget_before(self, horizon: float) -> None:
        """Forget claims made before ``horizon`` (epoch s): no window reaches back so far."""
        by_time = self._by_time
        while by_time and by_time[0][0] < horizon:
            old = by_time.popleft()[1]
            self._claimed.discard(old)
            self._windows.pop(old, None)

    def measure(self, listed: list[RunView]) -> None:
        """Learn from the claimed runs listed how far the service's clock is from ours."""
        for view in listed:
            window = self._windows.get(view.id)
            if window is None or view.created_at is None:
                continue
            sent, answered = window
            self._seen_ms = max(self._seen_ms, sent - view.created_at, view.created_at - answered)
            self._samples += 1

    @property
    def trusted(self) -> bool:
        """True once enough clear answers showed the clocks' offset."""
        return self._samples >= _SKEW_SAMPLES

    def skew_ms(self, full_ms: int) -> int:
        """The widening that tells runs apart: the offset the clear answers showed (with a
        margin) once they showed it a few times, never more than ``full_ms``."""
        if self._samples < _SKEW_SAMPLES:
            return full_ms
        # The offset seen once more on top (at least the margin): what a few samples missed.
        return min(full_ms, self._seen_ms + max(_SKEW_MARGIN_MS, self._seen_ms))
