"""Learn the server's quota from its answers and steer a token bucket by it.

A 429 cuts the rate to ``BETA`` (0.7) of what it was; successes bring it back along a CUBIC
curve (:mod:`.curve`), flat near the rate of the last cut, so that the limiter dwells just below
the quota it found and probes above it slowly. The rate never exceeds the configured one. A 429
after a long run of successes is the found rate's edge: it shaves a few per cent instead. After
a second's worth of successes since the last cut the rate is *proven*: cuts that follow its
shave with no success between climb back to it (a window that counts refusals, grazed, refuses
a few in a row).

The 429s for requests sent before a cut are one *episode* and cut once (by send time; without
it, until a slot was handed out after the cut or twice the mean latency). A ``Retry-After`` over
``pause_after``, or a third 429 in a row news after a cut, none scattered among successes
(:mod:`.passes`), pauses the whole limiter until then; so do eight in a row with a Retry-After
for requests sent before a shave, no window learned (a shave slows nothing down). A moderate
share refused at a new rate holds the next cut until it is measured; refused nearly as often at
half the rate, saying wait seconds, they are not the quota's (:mod:`.share`): each run waits its
own Retry-After. A quota the server declares (:mod:`.told`) lowers the configured rate.

A pause of a second or two after N successes sent in less than that is a short window's: the
rate goes to N per that wait (:mod:`.short`), read from a second pass that asks N + 1 and holds
(:mod:`.holds`). With a long wait, two pauses in a row with successes between mean a *fixed
window* (:mod:`.window`): in *window mode* each pass goes at the configured rate and holds after
N + 1 slots; the last throttled, everyone waits its Retry-After; the last a success, the pass
ran into the next window and goes on. A window costs one 429. A success sent after a 429 of the
same pass, or two passes far short of N or past N + 1, end it. A hold whose answer is lost (a
timeout) lets the next slot ask in its place.

The controller decides; the bucket paces, on the clock given: nothing here awaits or schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .._config import DEFAULT_PAUSE_AFTER
from .bucket import TokenBucket
from .curve import BETA, DEFAULT_EPISODE, Curve
from .holds import Probe, WindowPasses, release
from .passes import Pass
from .share import RejectShare
from .short import CYCLE_BETA, is_short_window
from .window import FixedWindow

__all__ = ["BETA", "DEFAULT_EPISODE", "DEFAULT_RECOVERY", "MIN_RATE_FRACTION", "RateController"]

#: The fewest requests a climb back to the rate of the last cut takes, for each one in flight
#: (up to 4) plus a quarter (or the K of :mod:`.curve` for the rate, if longer): more
#: means fewer 429s at a slow quota, and shares of one quota converging more slowly.
DEFAULT_RECOVERY = 50
#: Without ``min_rate``, the rate is never cut below this fraction of the configured one.
MIN_RATE_FRACTION = 0.01

# Weight of the newest answer in the moving share of 429s that sizes a cut: about the last 64.
_SHARE_WEIGHT = 1 / 64
# A cut at the edge takes this many times the recent share of 429s off the rate (at most
# 1 - BETA): a few per cent for a rare one (timer jitter at a strict quota), more for a run.
_SHAVE = 3.0
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
        "_max_rate",
        "_min_rate",
        "_pass",
        "_pause_after",
        "_probe",
        "_recent",
        "_share",
        "_shaved",
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
        self._successes_since_cut = self._successes_since_pause = 0
        # Window mode (None: not a fixed window, or not yet).
        self._window: WindowPasses | None = None
        # Whether slowing down lowers the share of 429s (if not, they are not the quota's).
        self._share = RejectShare()
        self._share.level(rate)
        self._recent = 0.0
        # Whether the last cut was a shave at a rate's edge (sending went on nearly as fast).
        self._shaved = False
        # A pass that asks a window read from a first pass for N + 1, then holds (:mod:`.holds`).
        self._probe: Probe | None = None

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
        return self._curve.latency

    @property
    def window_requests(self) -> int | None:
        """The requests per window learned from a fixed-window quota (None: not one, or not yet)."""
        return None if self._window is None else self._window.window.requests

    def observe_latency(self, seconds: float) -> None:
        """Feed one request's latency into the moving average that sizes episodes."""
        self._curve.observe_latency(seconds)

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
            if not self._window.succeeded(sent, self._clock()):
                self._leave_window(self._clock())
            return
        bucket = self._bucket
        if self._probe is not None and self._probe.succeeded(sent):
            self._end_probe(self._clock())  # the window holds more: the pass goes on
        if curve.cut_at is None or bucket.rate >= self._max_rate:
            return
        now = self._clock()
        bucket.set_rate(now, min(self._max_rate, max(self._min_rate, curve.target(now))))
        if self._share.levels > 1 and curve.shortfall(now) <= 0:  # the episode's levels are stale
            self._share.restart(bucket.rate)

    def on_lost(self, sent_at: float) -> None:
        """Record a request given its slot at *sent_at* whose answer never came (a timeout, a
        reset): if a hold waits for that answer, the next slot asks in its place."""
        if self._probe is not None and self._probe.mine(sent_at):
            self._probe.lost(self._clock())
        elif self._window is not None:
            self._window.lost(sent_at, self._clock())

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
        current = self._pass
        resumed_at, first_429, pass_rate = current.start, current.first_429, current.rate
        # A 429 for a request a probe asked: the window is spent, the pass over (:mod:`.holds`).
        asked = self._probe is not None and self._probe.mine(now if sent_at is None else sent_at)
        allowed = self._successes_since_pause
        same_episode = self._curve.same_episode(now, sent_at, since_mark=bucket.since_mark)
        # A shave goes on sending nearly as fast: if the requests sent before it come back
        # refused solid, stop everyone now rather than when a 429 for one sent after it comes
        # back, a latency later (at 800/s and 0.24 s, 190 more refused).
        spent = (
            retry_after is not None
            and same_episode
            and self._shaved
            and self._curve.learned is None  # (a learned window's 429s answer a shave for W)
            and self._pass.spent
            and bucket.paused_until <= now
        )
        pause = retry_after is not None and (
            retry_after > self._pause_after
            or spent
            or asked
            # A new episode hard on the heels of the last cut: the cut did not help, so stop
            # everyone rather than collect 429s until the next one.
            or (
                not same_episode
                and self._curve.cut_at is not None
                and not self._successes_since_cut
                and self._pass.solid
            )
        )
        if retry_after is not None and pause:
            self.pause_until(now + retry_after)
        elif asked:  # no Retry-After, no end of the window to wait for: cut as usual
            self._end_probe(now)
        if (same_episode and not spent) or (self._share.holding() and not pause):
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
                    self._probe = Probe(bucket, asks=allowed + 1)  # N + 1, then hold
                else:  # N per wait, never above the rate the pass went at (:mod:`.short`)
                    self._curve.learn(allowed, retry_after)
                    rate = min(self._max_rate, pass_rate, allowed / retry_after)
                    self._cut(now, rate, CYCLE_BETA)
                return
            if -math.inf < resumed_at <= now and not (spent or asked):
                # Two pauses in a row for 429s that went on after a cut, with successes between
                # them: the quota is a fixed window, and the successes were its N (or a bit more).
                self._enter_window(now, allowed, resumed_at)
                return
        # The first cut finds the quota. A 429 after a long run of successes is that rate's edge
        # (a strict quota grazed by timer jitter): shave by the recent share of 429s.
        since = self._successes_since_cut
        edge = since >= _EDGE_SUCCESSES
        if edge:  # maybe a quota with no burst, refusing a slot a late timer brought too close
            bucket.strict()
        beta = max(BETA, 1 - _SHAVE * self._recent) if edge else BETA
        self._cut(now, bucket.rate, beta, proven=edge and since >= bucket.rate, chained=not since)
        self._shaved = edge and not pause

    def _end_probe(self, now: float, *, wake: bool = True) -> None:
        """Forget the probe; a gate its hold shut opens at *now* (for the waiters unless not
        *wake*: a pause is about to shut it)."""
        self._probe = None
        release(self._bucket, now)
        if wake:
            self._bucket.wake()

    def _cut(self, now: float, rate: float, beta: float, **chain: bool) -> None:
        """Cut from *rate* by *beta*: the climb back starts when the pause, if any, ends (for
        *chain*, ``proven`` and ``chained``, see :meth:`Curve.cut`)."""
        bucket = self._bucket
        start = max(now, bucket.paused_until)
        cut = self._curve.cut(now, rate, beta=beta, start=start, **chain)
        bucket.mark()
        self._pass.cut()
        self._successes_since_cut = 0
        self._shaved = False
        # The server's bucket is empty; a burst saved up in ours would only earn more 429s.
        bucket.drain()
        bucket.set_rate(now, max(self._min_rate, cut))
        self._share.level(bucket.rate)

    def on_unavailable(self, retry_after: float) -> None:
        """Record a 503 with a Retry-After: nobody sends before then (the service asks it, not
        the quota), and the rate stays as it was, to be back at the quota when the service is."""
        self.pause_until(self._clock() + retry_after)

    def lower_max(self, rate: float) -> None:
        """Lower the configured rate to *rate*: a declared quota, an eased end (never raise it)."""
        if rate < self._max_rate:
            self._max_rate, self._min_rate = rate, min(self._min_rate, rate)
            self._curve.lower(rate)
            self._bucket.set_rate(self._clock(), min(self._bucket.rate, rate))
            self._share.restart(self._bucket.rate)  # levels compare cuts, not this

    def learned(self) -> str | None:
        """Say in one line what the answers taught about the quota (None: nothing yet)."""
        window = self._window
        if window is not None:
            return f"fixed window of {window.window.requests} requests"
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
        if self._probe is not None:  # each run waits its own Retry-After: nothing to hold for
            self._end_probe(now)
        self._curve.forget(self._max_rate)
        # The cuts bought nothing: back to the configured rate. Should a quota lie below it,
        # its 429s raise the share and cutting resumes.
        self._bucket.set_rate(now, self._max_rate)

    def pause_until(self, when: float) -> None:
        """Hand out no slot before time *when*; extends a pause, never shortens one."""
        probing = self._probe is not None
        if probing:  # a pause ends the pass: its hold must not shut the next one
            self._end_probe(self._clock(), wake=False)
        if self._bucket.pause_until(when):
            self._successes_since_pause = 0
            self._curve.delay(when)
            self._pass.restart(when)
        elif probing:  # (a pause already longer, or one of 0): the gate opened for nobody
            self._bucket.wake()

    # -- window mode -----------------------------------------------------------------------

    def _enter_window(self, now: float, allowed: int, resumed_at: float) -> None:
        """Switch to window mode after a pass of *allowed* successes from *resumed_at* to now."""
        window = FixedWindow(allowed, start=resumed_at, first_429=now)
        self._curve.forget(self._max_rate)
        self._bucket.set_rate(now, self._max_rate)
        self._window = WindowPasses(self._bucket, window)

    def _window_throttled(
        self, passes: WindowPasses, now: float, retry_after: float | None, sent_at: float | None
    ) -> None:
        verdict = passes.throttled(now, retry_after, now if sent_at is None else sent_at)
        if verdict == "no window":  # cut the rate instead
            self._leave_window(now)
            self._cut_or_pause(now, retry_after, sent_at)
        elif verdict == "spent" and retry_after is not None:  # the window's Retry-After begins
            self.pause_until(now + retry_after)
            # A Retry-After of 0 (or a date already past) extends no pause, and so wakes nobody:
            # without this, waiters stayed stuck until some other acquire came in.
            self._bucket.wake()
            passes.next_pass()

    def _leave_window(self, now: float) -> None:
        self._window = None
        bucket = self._bucket
        release(bucket, now)
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
            state += f", window of {self._window.window.requests}"
        if (latency := self._curve.latency) is not None:
            state += f", latency={latency:.3f}s"
        return f"<RateController {state}>"
