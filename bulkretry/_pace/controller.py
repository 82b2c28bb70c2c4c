"""Learn the server's quota from its answers and steer a token bucket by it.

A 429 cuts the rate to ``BETA`` (0.7) of what it was; successes bring it back along a CUBIC
curve (:mod:`.curve`), flat near the rate of the last cut, so that the limiter dwells just below
the quota it found and probes above it slowly. The rate never exceeds the configured one. A
429 after a long run of successes is the found rate's edge: it shaves a few per cent instead.

The 429s for requests sent before a cut are one *episode* and cut once (by send time; without
it, until a slot was handed out after the cut or twice the mean latency). A ``Retry-After`` over
``pause_after``, or a third 429 in a row news after a cut, none scattered among successes
(:mod:`.passes`), pauses the whole limiter until then. A moderate share refused at a new rate
holds the next cut until it is measured; refused nearly as often at half the rate, saying wait
seconds, they are not the quota's (:mod:`.share`): each run waits its own Retry-After. A quota
the server declares (:mod:`.told`) lowers the configured rate.

A pause of a second or two after N successes sent in less than that is a short window's: the
rate goes to N per that wait (:mod:`.short`), never above the rate the pass went at. With a long
wait, two pauses in a row with successes between mean a *fixed window* (:mod:`.window`): in
*window mode* each pass goes at the configured rate and holds after N + 1 slots; the last
throttled, everyone waits its Retry-After; the last a success, the pass ran into the next window
and goes on. A window costs one 429. A success sent after a 429 of the same pass, or two passes
far short of N or past N + 1, end it.

The controller decides; the bucket paces, on the clock given: nothing here awaits or schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .._config import DEFAULT_PAUSE_AFTER
from .bucket import TokenBucket
from .curve import BETA, Curve
from .passes import Pass
from .share import RejectShare
from .short import CYCLE_BETA, is_short_window
from .window import FixedWindow

__all__ = ["BETA", "DEFAULT_EPISODE", "DEFAULT_RECOVERY", "MIN_RATE_FRACTION", "RateController"]

#: The fewest requests a climb back to the rate of the last cut takes, for each one in flight
#: (up to 4) plus a quarter (or the K of :mod:`.curve` for the rate, if longer): more
#: means fewer 429s at a slow quota, and shares of one quota converging more slowly.
DEFAULT_RECOVERY = 50
#: Seconds after a cut during which further 429s are taken as answers to requests sent before it,
#: until a latency has been observed (then twice the average latency is used).
DEFAULT_EPISODE = 1.0
#: Without ``min_rate``, the rate is never cut below this fraction of the configured one.
MIN_RATE_FRACTION = 0.01

# Weight of the newest latency sample in the moving average.
_LATENCY_WEIGHT = 0.2
# Weight of the newest answer in the moving share of 429s that sizes a cut: about the last 64.
_SHARE_WEIGHT = 1 / 64
# A cut at the edge takes this many times the recent share of 429s off the rate (at most
# 1 - BETA): a few per cent for a rare one (timer jitter at a strict quota), more for a run.
_SHAVE = 3.0
# A 429 that is news after a cut pauses everyone when it is the third in a row with no success
# between: a spent quota answers every request so; 429s at random rarely come three in a row.
_PAUSE_RUN = 3
# Successes since the last cut that make the next 429 one at the edge of the rate found.
_EDGE_SUCCESSES = 32


class RateController:
    """Cut a bucket's rate on 429s, let it recover on successes, pause it, run window mode.

    The *bucket*'s rate when it is handed over is the configured maximum. *clock* returns the
    time the bucket runs on (the loop's). *min_rate* is the floor of cuts (default:
    ``MIN_RATE_FRACTION`` of the maximum); *pause_after* the longest Retry-After that does not
    pause everyone; *recovery* the fewest requests a climb back to the rate of the last cut
    takes (see ``DEFAULT_RECOVERY``; at most 10 min).
    """

    __slots__ = (
        "_bucket",
        "_clock",
        "_curve",
        "_latency",
        "_max_rate",
        "_min_rate",
        "_pass",
        "_pause_after",
        "_recent",
        "_share",
        "_successes_since_cut",
        "_successes_since_pause",
        "_throttled_count",
        "_window",
    )

    def __init__(
        self,
        bucket: TokenBucket,
        *,
        clock: Callable[[], float],
        min_rate: float | None = None,
        pause_after: float = DEFAULT_PAUSE_AFTER,
        recovery: int = DEFAULT_RECOVERY,
    ) -> None:
        rate = bucket.rate
        if min_rate is None:
            min_rate = rate * MIN_RATE_FRACTION
        if not 0 < min_rate <= rate:
            raise ValueError(f"min_rate must be positive and at most rate, not {min_rate!r}")
        if not pause_after >= 0:
            raise ValueError(f"pause_after must not be negative, not {pause_after!r}")
        self._curve = Curve(rate, recovery=recovery)
        self._bucket, self._clock, self._max_rate = bucket, clock, rate
        self._min_rate, self._pause_after = float(min_rate), float(pause_after)
        self._throttled_count = 0
        self._pass = Pass()
        self._latency: float | None = None
        self._successes_since_cut = self._successes_since_pause = 0
        # Window mode (None: not a fixed window, or not yet).
        self._window: FixedWindow | None = None
        # Whether slowing down lowers the share of 429s (if not, they are not the quota's).
        self._share = RejectShare()
        self._share.level(rate)
        self._recent = 0.0

    @property
    def max_rate(self) -> float:
        """The configured rate: the learned rate never goes above it."""
        return self._max_rate

    @property
    def min_rate(self) -> float:
        """The floor below which 429s no longer cut the rate."""
        return self._min_rate

    @property
    def throttled_count(self) -> int:
        """How many 429s were reported, including those that did not cut the rate."""
        return self._throttled_count

    @property
    def latency(self) -> float | None:
        """The moving average of observed request latency, in seconds, if any was observed."""
        return self._latency

    @property
    def window_requests(self) -> int | None:
        """The requests per window learned from a fixed-window quota (None: not one, or not yet)."""
        return None if self._window is None else self._window.requests

    def observe_latency(self, seconds: float) -> None:
        """Feed one request's latency into the moving average that sizes episodes."""
        old = self._latency
        self._latency = seconds if old is None else old + _LATENCY_WEIGHT * (seconds - old)

    def on_success(self, sent_at: float | None = None) -> None:
        """Record an answer other than a throttle, for a request given its slot at *sent_at*
        (default: now, which blurs passes and windows): let the rate climb back."""
        self._successes_since_cut += 1
        self._successes_since_pause += 1
        sent = self._clock() if sent_at is None else sent_at
        self._pass.succeeded(sent)
        self._recent -= _SHARE_WEIGHT * self._recent
        curve = self._curve
        if (curve.cut_at is None or sent > curve.cut_at) and self._share.answered(False):
            self._share_changed()
        if self._window is not None:
            self._window_success(self._window, sent)
            return
        bucket = self._bucket
        if curve.cut_at is None or bucket.rate >= self._max_rate:
            return
        now = self._clock()
        bucket.set_rate(now, min(self._max_rate, max(self._min_rate, curve.target(now))))
        if self._share.levels > 1 and curve.shortfall(now) <= 0:  # the episode's levels are stale
            self._share.restart(bucket.rate)

    def on_lost(self, sent_at: float) -> None:
        """Record a request given its slot at *sent_at* whose answer never came (a timeout, a
        reset): if a hold waits for that answer, the next slot asks in its place.

        (Without this, a fixed window's hold whose last slot timed out kept the gate shut for
        good, and the batch hung until it was stopped.)
        """
        bucket = self._bucket
        if bucket.paused_until == math.inf and sent_at >= bucket.held_slot:
            bucket.hold_after(bucket.acquired_count + 1)
            bucket.end_hold(self._clock())
            bucket.wake()

    def on_throttled(self, retry_after: float | None, *, sent_at: float | None = None) -> None:
        """Record a 429 (or a 503 with Retry-After): cut the rate once per episode, maybe pause.

        *retry_after* is the server's wait in seconds, if it gave one. *sent_at*, the time at
        which the throttled request got its slot, tells exactly whether the 429 is news or an
        answer to a request sent before the last cut; without it a time window is used.
        """
        now = self._clock()
        self._throttled_count += 1
        sent = now if sent_at is None else sent_at
        self._pass.throttled(sent, self._bucket.rate)
        self._recent += _SHARE_WEIGHT * (1 - self._recent)
        news = self._curve.cut_at is None or sent > self._curve.cut_at
        if news and self._share.answered(True, retry_after=retry_after):
            self._share_changed()
        if self._share.independent is not None:
            # Slowing down did not lower them: the run waits its own Retry-After, the rest go on.
            return
        if self._window is not None:
            self._window_throttled(self._window, now, retry_after, sent_at)
        else:
            self._cut_or_pause(now, retry_after, sent_at)

    def _cut_or_pause(self, now: float, retry_after: float | None, sent_at: float | None) -> None:
        """Act on a 429 counted already, outside window mode."""
        bucket = self._bucket
        # (Read before a pause below starts the next pass.)
        resumed_at, first_429, pass_rate = (
            bucket.paused_until,
            self._pass.first_429,
            self._pass.rate,
        )
        allowed = self._successes_since_pause
        same_episode = self._same_episode(now, sent_at)
        pause = retry_after is not None and (
            retry_after > self._pause_after
            # A new episode hard on the heels of the last cut: the cut did not help, so stop
            # everyone rather than collect 429s until the next one.
            or (
                not same_episode
                and self._curve.cut_at is not None
                and not self._successes_since_cut
                and self._pass.run >= _PAUSE_RUN
                and not self._pass.scattered
            )
        )
        if retry_after is not None and pause:
            self.pause_until(now + retry_after)
        if same_episode or (self._share.holding() and not pause):
            # (A moderate share not yet measured at this rate: see whether the cut helped.)
            return
        bucket.refill(now)
        if pause and retry_after is not None and allowed and not self._pass.scattered:
            first = resumed_at == -math.inf  # a first pass: the window may hold others' requests
            took = first_429 - (self._pass.first_sent if first else resumed_at)
            if is_short_window(allowed, retry_after, took):
                if first:
                    # N is read from the next pass, which finds the window drained
                    # (:mod:`.short`), at the rate this one ran (cut by its 429s, it took longer
                    # and the window went unread); its 429s still to come answer for this.
                    self._cut(now, min(self._max_rate, pass_rate), 1.0)
                else:
                    self._learn_window(now, allowed, retry_after, pass_rate)
                return
            if -math.inf < resumed_at <= now:
                # Two pauses in a row for 429s that went on after a cut, with successes between
                # them: the quota is a fixed window, and the successes were its N (or a bit more).
                self._enter_window(now, allowed, resumed_at)
                return
        # The first cut finds the quota. A 429 after a long run of successes is that rate's edge
        # (a strict quota grazed by timer jitter): shave by the recent share of 429s.
        edge = self._successes_since_cut >= _EDGE_SUCCESSES
        if edge:  # maybe a quota with no burst, refusing a slot a late timer brought too close
            bucket.strict()
        self._cut(now, bucket.rate, max(BETA, 1 - _SHAVE * self._recent) if edge else BETA)

    def _learn_window(self, now: float, allowed: int, wait: float, pass_rate: float) -> None:
        """Pace at N (*allowed*) per *wait*, a short window's (:mod:`.short`); *pass_rate* is the
        rate the pass went at when its first 429 came."""
        self._curve.learn(allowed, wait)
        # Never above the rate the pass went at (a client's own burst is not a window's), which
        # its own 429s have cut already (from there, a window of 200/s read at 250/s was probed
        # past slowly, and once past, refused every request for a second).
        self._cut(now, min(self._max_rate, pass_rate, allowed / wait), CYCLE_BETA)

    def _cut(self, now: float, rate: float, beta: float) -> None:
        """Cut from *rate* by *beta*: the climb back starts when the pause, if any, ends."""
        bucket = self._bucket
        start = max(now, bucket.paused_until)
        cut = self._curve.cut(now, rate, beta=beta, start=start, latency=self._latency or 0.0)
        bucket.mark()
        self._successes_since_cut = 0
        # The server's bucket is empty; a burst saved up in ours would only earn more 429s.
        bucket.drain()
        bucket.set_rate(now, max(self._min_rate, cut))
        self._share.level(bucket.rate)

    def on_unavailable(self, retry_after: float) -> None:
        """Record a 503 with a Retry-After: nobody sends before then (the service asks it, not
        the quota), and the rate stays as it was, to be back at the quota when the service is."""
        self.pause_until(self._clock() + retry_after)

    def lower_max(self, rate: float) -> None:
        """Lower the configured rate to *rate*, a quota the server declared (never raise it)."""
        if rate < self._max_rate:
            self._max_rate, self._min_rate = rate, min(self._min_rate, rate)
            self._curve.top = min(self._curve.top, rate)
            self._bucket.set_rate(self._clock(), min(self._bucket.rate, rate))
            self._share.restart(self._bucket.rate)  # levels compare cuts, not this

    def learned(self) -> str | None:
        """Say in one line what the answers taught about the quota (None: nothing yet)."""
        window = self._window
        if window is not None:
            return f"fixed window of {window.requests} requests"
        share = self._share.independent
        if share is not None:
            return f"{share:.0%} of requests refused whatever the rate (not cut for)"
        if self._curve.learned is not None:
            return "a window of about {} requests in {:.3g} s".format(*self._curve.learned)
        return None

    def _share_changed(self) -> None:
        """The 429s turned out rate-independent (or a quota's after all): act on it."""
        if self._share.independent is None:
            return  # a quota's after all: the next 429 cuts as usual
        now = self._clock()
        if self._window is not None:
            self._leave_window(now)
        self._curve.forget(self._max_rate)
        # The cuts bought nothing: back to the configured rate. Should a quota lie below it,
        # its 429s raise the share and cutting resumes.
        self._bucket.set_rate(now, self._max_rate)

    def pause_until(self, when: float) -> None:
        """Hand out no slot before time *when*; extends a pause, never shortens one."""
        if self._bucket.pause_until(when):
            self._successes_since_pause = 0
            self._curve.delay(when)
            self._pass.restart(when)

    def _same_episode(self, now: float, sent_at: float | None) -> bool:
        if sent_at is not None:
            return self._curve.answered_by_cut(sent_at)
        if self._curve.cut_at is None:
            return False
        if self._bucket.since_mark == 0:
            return True
        window = DEFAULT_EPISODE if self._latency is None else 2 * self._latency
        return now < self._curve.epoch + window

    # -- window mode -----------------------------------------------------------------------

    def _enter_window(self, now: float, allowed: int, resumed_at: float) -> None:
        """Switch to window mode after a pass of *allowed* successes from *resumed_at* to now."""
        window = self._window = FixedWindow(allowed, start=resumed_at, first_429=now)
        self._curve.forget(self._max_rate)
        self._bucket.set_rate(now, self._max_rate)
        self._next_pass(window)

    def _next_pass(self, window: FixedWindow) -> None:
        """Close the pass under way; the next starts when the pause ends, and holds after N+1."""
        bucket = self._bucket
        window.next_pass(bucket.paused_until)
        bucket.hold_after(bucket.acquired_count + window.requests + 1)
        bucket.drain()

    def _window_throttled(
        self, window: FixedWindow, now: float, retry_after: float | None, sent_at: float | None
    ) -> None:
        sent = now if sent_at is None else sent_at
        if not window.in_this_pass(sent):
            return  # an answer to an earlier pass, whose window is spent already
        if retry_after is None or window.spent(sent):
            # Without a Retry-After there is no window's end to wait for; twice a pass spent far
            # short of N is 429s at random, not a window's end: cut the rate instead.
            self._leave_window(now)
            self._cut_or_pause(now, retry_after, sent_at)
            return
        self._bucket.end_hold(now)  # the hold ends; the window's Retry-After begins
        self.pause_until(now + retry_after)
        # A Retry-After of 0 (or a date already past) extends no pause, and so wakes nobody:
        # without this, waiters stayed stuck until some other acquire came in.
        self._bucket.wake()
        self._next_pass(window)

    def _window_success(self, window: FixedWindow, sent: float) -> None:
        verdict = window.count_success(sent)
        bucket = self._bucket
        if verdict == "this pass" and sent >= bucket.held_slot:
            if window.ran_on():
                self._leave_window(self._clock())  # twice in a row: passes of random length
                return
            # The slot after N succeeded: this pass ran into the next window. Go on.
            bucket.unhold()
            bucket.resume(self._clock())
        elif verdict == "not a window":
            self._leave_window(self._clock())

    def _leave_window(self, now: float) -> None:
        self._window = None
        bucket = self._bucket
        bucket.unhold()
        bucket.end_hold(now)
        self._curve.forget(self._curve.top)
        # Back to cutting afresh: the window's successes say nothing of a rate's edge.
        self._successes_since_cut = 0
        bucket.wake()

    def __repr__(self) -> str:
        state = (
            f"rate={self._bucket.rate:.4g}/{self._max_rate:.4g} (floor {self._min_rate:.4g}), "
            f"throttled={self._throttled_count}"
        )
        cut_at = self._curve.cut_at
        if cut_at is not None:
            state += f", cut at t={cut_at:.3f} from {self._curve.top:.4g}"
        if self._window is not None:
            state += f", window of {self._window.requests}"
        if self._latency is not None:
            state += f", latency={self._latency:.3f}s"
        return f"<RateController {state}>"
