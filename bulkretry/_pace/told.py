"""What the server's quota headers told: a declared rate to stay under, a spent window to wait out.

An answer's ``RateLimit-*``/``X-RateLimit-*`` headers (read by
:mod:`bulkretry._http.quota_headers`) may say the quota outright. :class:`Told` keeps what they
said and decides what it means for the throttle:

- a policy (``RateLimit-Policy: 200;w=1``) whose window is no longer than the pause threshold
  declares the quota's rate, requests per window: the configured rate is lowered to 3% under
  it (timers and the network jitter: a strict quota sent exactly its rate refuses some, and a
  window that counts refusals stays shut), never raised; a quota shared with other clients is
  still found by the 429s, under it. A longer window (1000 an hour) says nothing of the rate a
  short batch may go at: it is left to ``Remaining: 0``;
- ``Remaining: 0`` on a success, with a ``Reset`` beyond the pause threshold and within
  ``--retry-after-cap``, is a window spent: everyone waits until it resets instead of
  collecting a 429 each (a short Reset is left to the 429s: whole seconds, rounded up, are too
  coarse to pause a fast quota by; a longer one to the 429's Retry-After, which halts the
  batch with a message rather than wait blindly; on a 429, its Retry-After decides);
- the summary says what the headers said.

Everything here is bookkeeping on the numbers given: no clock, no asyncio.
"""

from __future__ import annotations

from .._model import QuotaHeaders

__all__ = ["MARGIN", "Told"]

#: The share under a declared rate that the throttle aims at.
MARGIN = 0.03


class Told:
    """The quota as the server's headers told it, over a batch; *pause_after* is the throttle's
    pause threshold, *longest_wait* the longest reset worth pausing for, *processes* how many
    split the quota (``--shard``): each keeps to its part of a declared rate."""

    __slots__ = ("_limit", "_longest_wait", "_pause_after", "_processes", "_reset", "_window")

    def __init__(self, pause_after: float, longest_wait: float, processes: int = 1) -> None:
        self._pause_after = pause_after
        self._longest_wait = longest_wait
        self._processes = processes
        self._limit: int | None = None
        self._window: float | None = None
        # The longest Reset told.
        self._reset = 0.0

    def declared_rate(self, told: QuotaHeaders) -> float | None:
        """Take in one answer's headers; return the rate to keep to, if a policy declares one."""
        limit, window = told.limit, told.window
        if limit is not None:
            self._limit = limit
        if told.reset is not None:
            self._reset = max(self._reset, told.reset)
        if window is None or not limit or window > max(self._pause_after, 1.0):
            return None
        self._window = window
        return limit / window * (1 - MARGIN) / self._processes

    def wait(self, told: QuotaHeaders) -> float | None:
        """Seconds everyone should wait: the window is spent and resets beyond the threshold."""
        reset = told.reset
        if told.remaining != 0 or reset is None:
            return None
        return reset if self._pause_after < reset <= self._longest_wait else None

    def describe(self) -> str | None:
        """Say what the headers told, in words for the summary (None: they told nothing)."""
        if self._limit is None:
            return None
        if self._window is not None:
            said = f"{self._limit} requests per {self._window:g} s"
        else:
            said = f"{self._limit} requests per window, reset within {self._reset:g} s"
        shard = self._processes > 1 and self._window is not None
        mine = f" (1/{self._processes} for this shard)" if shard else ""
        return f"the server's RateLimit headers say {said}{mine}"

    def __repr__(self) -> str:
        return f"<Told limit={self._limit} window={self._window} reset<={self._reset:g}>"
