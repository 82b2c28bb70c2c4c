"""Passes that hold the gate after a number of slots until answers say what comes next.

Two kinds, each steering the bucket's hold (:meth:`~.bucket.TokenBucket.hold_after`):

- A :class:`Probe` asks a short window for N + 1. After a first pass that looks like a
  window's (:mod:`.short`), N is read again from the next one, which finds the window drained.
  Sent at the first pass's rate until its first 429 came back, that pass overran the window by
  everything sent during one latency: at 800/s and 0.24 s, 190 requests refused, and counted by
  a window that counts refusals. So the pass asks N + 1 (N the first pass's successes) and the
  gate stays shut until their answers say which it was: a 429 for any of them, the window is
  spent (a pause reads the pass); all N + 1 through, the window lets more through than the
  first pass found (it held others' requests), and the pass goes on until its 429. A server's
  answers to requests sent together may come in any order, so no single one is *the* answer.
- :class:`WindowPasses` runs a fixed window's passes (window mode, :mod:`.window` learns N):
  each holds after N + 1 slots; the last one's answer says whether the window goes on.

An answer that never comes (a timeout) would leave a hold shut for good: one more request asks
in its place (:func:`ask_one_more`).
"""

from __future__ import annotations

import math
from typing import Literal

from .bucket import TokenBucket
from .window import FixedWindow

__all__ = ["Probe", "WindowPasses", "ask_one_more", "release"]


def ask_one_more(bucket: TokenBucket, hold_at: int, now: float) -> None:
    """Hold the gate after grant *hold_at*; if a hold shut it already, open it now for one."""
    held = bucket.paused_until == math.inf
    bucket.hold_after(hold_at)
    if held:
        bucket.end_hold(now)
        bucket.wake()


def release(bucket: TokenBucket, now: float) -> None:
    """Forget a hold to come; if one shut the gate, let it open at *now*, waking nobody (the
    caller pauses anew or wakes the waiters)."""
    bucket.unhold()
    bucket.end_hold(now)


class Probe:
    """A pass from the end of the bucket's pause that asks *asks* requests, then holds."""

    __slots__ = ("_bucket", "_hold_at", "_need", "_ok", "start")

    def __init__(self, bucket: TokenBucket, *, asks: int) -> None:
        self._bucket = bucket
        self.start = bucket.paused_until
        self._hold_at = bucket.acquired_count + asks
        self._need, self._ok = asks, 0
        bucket.hold_after(self._hold_at)

    def mine(self, sent: float) -> bool:
        """True if a request sent at *sent* is one the pass asked (not an earlier pass's)."""
        return sent >= self.start

    def succeeded(self, sent: float) -> bool:
        """Count a success for a request sent at *sent*; True once all asked went through."""
        if sent >= self.start:
            self._ok += 1
        return self._ok >= self._need

    def lost(self, now: float) -> None:
        """One of the requests asked got no answer: one more asks in its place (all asked
        through still means as many successes)."""
        self._hold_at += 1
        ask_one_more(self._bucket, self._hold_at, now)

    def __repr__(self) -> str:
        return f"<Probe from t={self.start:.3f}: {self._ok}/{self._need} through>"


class WindowPasses:
    """Run a fixed window's passes on *bucket*: each holds after N + 1 slots."""

    __slots__ = ("_bucket", "window")

    def __init__(self, bucket: TokenBucket, window: FixedWindow) -> None:
        self._bucket = bucket
        self.window = window
        self.next_pass()

    def next_pass(self) -> None:
        """Close the pass under way; the next starts when the pause ends, and holds after N+1."""
        bucket = self._bucket
        self.window.next_pass(bucket.paused_until)
        bucket.hold_after(bucket.acquired_count + self.window.requests + 1)
        bucket.drain()

    def throttled(
        self, now: float, retry_after: float | None, sent: float
    ) -> Literal["earlier", "no window", "spent"]:
        """Read a 429 for a request sent at *sent*: an earlier pass's, the window spent (the
        hold ends at *now*; the caller waits *retry_after*, then :meth:`next_pass`), or no
        window at all."""
        window = self.window
        if not window.in_this_pass(sent):
            return "earlier"  # its window is spent already
        if retry_after is None or window.spent(sent):
            # Without a Retry-After there is no window's end to wait for; twice a pass spent far
            # short of N is 429s at random, not a window's end.
            return "no window"
        self._bucket.end_hold(now)
        return "spent"

    def succeeded(self, sent: float, now: float) -> bool:
        """Count a success for a request sent at *sent*; False if it shows no fixed window."""
        verdict = self.window.count_success(sent)
        bucket = self._bucket
        if verdict == "this pass" and sent >= bucket.held_slot:
            if self.window.ran_on():
                return False  # twice in a row: passes of random length
            # The slot after N succeeded: this pass ran into the next window. Go on.
            bucket.unhold()
            bucket.resume(now)
        return verdict != "not a window"

    def lost(self, sent: float, now: float) -> None:
        """The answer to a request sent at *sent* never came: if the hold waits for it, the
        next slot asks in its place."""
        bucket = self._bucket
        if bucket.paused_until == math.inf and sent >= bucket.held_slot:
            ask_one_more(bucket, bucket.acquired_count + 1, now)
