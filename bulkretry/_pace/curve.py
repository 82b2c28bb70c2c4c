"""The curve a cut rate climbs back along, and which 429s one cut answers for.

After a cut from rate W (``top``) to ``beta`` times W, successes bring the rate back along CUBIC's
curve (as in the AWS SDKs' adaptive retry mode): fast at first, flat near W, then probing above
it ever faster, as fast after a shave as after a full cut (unless a window is learned). The
climb lasts like TCP CUBIC's K, but growing with W to the power 2/3 where CUBIC's grows with its
cube root (3 s at 200/s): of several clients on one quota, the slower climbs back sooner, so
their shares converge. Cuts of one quota shared come to each client about as often whatever its
share, so how much sooner decides how fast (the cube root left two processes started 0.3 s apart
a third apart in time). A climb of a fixed number of requests lasts longer at a lower rate:
shares drifted apart, and a client left alone at a low rate took tens of seconds. A climb is never
shorter than ``recovery`` requests for each one in flight (up to 4) plus a quarter, which keeps the
share of 429s low at a slow quota with a long latency, nor, once a window is learned (until
forgotten), than 600 requests; and it lasts 1 s to 10 min whatever the rate. Cuts that follow the
shave of a rate proven by a second's worth of successes, with no success between, climb back to
that rate, not to the last cut's: a window that counts its refusals, grazed, refuses a few in a
row.

A 429 for a request sent before the cut answers for that cut (the same *episode*). At a quota
that counts requests over a window (N per W seconds, once learned), a cut shows only once the
window has slid past the requests that overran it: 429s for requests sent within W of a cut
still answer for it (cutting again for each cut a dropped quota to a fraction within a quarter
of a second). Bookkeeping on the times given: no clock, no asyncio.
"""

from __future__ import annotations

import math

__all__ = ["BETA", "DEFAULT_EPISODE", "Curve"]

#: A 429 multiplies the rate by this (CUBIC's beta).
BETA = 0.7
# Weight of the newest latency sample in the moving average.
_LATENCY_WEIGHT = 0.2
#: Seconds after a cut during which further 429s are taken as answers to requests sent before it,
#: until a latency has been observed (then twice the average latency is used).
DEFAULT_EPISODE = 1.0

# Bounds of a climb's length, in seconds, whatever the rate.
_MIN_SECONDS = 1.0
_MAX_SECONDS = 600.0
# A climb back to a cut from this rate (requests per second) lasts this long (seconds), and at
# other rates scales with the ratio to this power. CUBIC's K, cbrt(W (1 - BETA) / C), has 1/3;
# AIMD's additive increase has 1, and would climb for 15 s at 1000/s. A shave climbs as long (a
# shorter climb back from one let a sliding window's overrun cascade).
_K_RATE = 200.0
_K_SECONDS = 3.0
_K_POWER = 2 / 3
# The requests in flight that lengthen the shortest climb count up to this many: an overshoot
# refuses its share of them, not all (and a timeout's latency must not stretch a climb to
# minutes).
_IN_FLIGHT = 4.0
# With nothing in flight, the shortest climb counts this fraction of ``recovery`` (with one
# whole, a process cut to 12/s by a quota's other clients took 4 s to climb back, and four
# processes started in two pairs 0.6 s apart spread 0.34; now 0.14).
_IDLE = 0.25
# The fewest requests a climb back to a learned window's rate takes: its N per W is a ceiling
# known already (with K alone, a sliding window halved mid-run: 92.7% of it, 4.6% refused).
_WINDOW_RECOVERY = 600


class Curve:
    """Where the rate stands after the last cut: the rate cut from, how deep, and since when.

    *rate* is the configured one (nothing cut yet); *recovery* the fewest requests a climb back
    to the rate of a cut takes (for each one in flight, up to 4, plus a quarter; at most 10 min).
    """

    __slots__ = (
        "_beta",
        "_epoch",
        "_recovery",
        "_seconds",
        "cut_at",
        "latency",
        "learned",
        "proven",
        "top",
    )

    def __init__(self, rate: float, *, recovery: int) -> None:
        if recovery < 1:
            raise ValueError(f"recovery must be at least one request, not {recovery!r}")
        self._recovery = recovery
        #: The time of the last cut (None: none since the start or the last :meth:`forget`).
        #: Read on every answer, so a plain attribute; only :meth:`cut` and :meth:`forget` set it.
        self.cut_at: float | None = None
        #: The rate of the last cut (CUBIC's W_max), or the configured one.
        self.top = rate
        self._beta = BETA
        # The curve starts at its epoch (the cut, or the end of a pause that came with it).
        self._epoch = -math.inf
        self._seconds = _MIN_SECONDS
        #: A window quota's requests and seconds, learned from a pass (None: not one, or not yet).
        self.learned: tuple[int, float] | None = None
        #: The moving average of the requests' latency, in seconds (None: none observed yet).
        self.latency: float | None = None
        #: A rate proven by a second's worth of successes, whose shave began the cuts since (no
        #: success between them): the climb aims back at it. None: no such chain.
        self.proven: float | None = None

    def observe_latency(self, seconds: float) -> None:
        """Feed one request's latency into the moving average that sizes climbs and episodes."""
        old = self.latency
        self.latency = seconds if old is None else old + _LATENCY_WEIGHT * (seconds - old)

    @property
    def epoch(self) -> float:
        """The time the climb back from the last cut starts."""
        return self._epoch

    def cut(
        self,
        now: float,
        rate: float,
        *,
        beta: float,
        start: float,
        latency: float | None = None,
        proven: bool = False,
        chained: bool = False,
    ) -> float:
        """Cut from *rate* at time *now* by *beta*; the climb starts at *start*. Return the rate.

        *latency*, the requests' mean (default: the one observed, else 0), sizes the shortest
        climb: an overshoot costs some of the requests in flight when its 429s come back.
        *proven* says a second's worth of successes at up to *rate* came since the last cut
        (this cut is its shave); *chained*, that no success came since the last cut. A chain of
        cuts begun by a proven rate's shave climbs back to that rate, not to the last cut's
        (unless a window is learned: its N per W is the ceiling, and past the top the probe
        goes as slowly as the last cut was shallow).
        """
        if latency is None:
            latency = self.latency or 0.0
        cut = rate * beta
        aim = self.proven if chained and self.learned is None else None
        # (A window that counts its refusals, grazed at a rate held for seconds, refuses a few
        # in a row: each cut for them, and the third paused everyone. Aimed at the rate of the
        # last cut, 133/s of 200/s, the climb took 7 s back to 200/s, half a batch's time.)
        top = rate if aim is None else max(rate, aim)
        self.proven = rate if proven else aim
        self.top, self._beta, self.cut_at, self._epoch = top, cut / top, now, start
        k = _K_SECONDS * (top / _K_RATE) ** _K_POWER
        in_flight = min(top * latency, _IN_FLIGHT)
        fewest = self._recovery * (_IDLE + in_flight) / top
        if self.learned is not None:
            fewest = max(fewest, _WINDOW_RECOVERY / top)
        self._seconds = min(_MAX_SECONDS, max(_MIN_SECONDS, fewest, k))
        return cut

    def target(self, now: float) -> float:
        """The rate the curve reaches at time *now* (unbounded: the caller caps it)."""
        shortfall = self.shortfall(now)
        # Past the top, probe as after a full cut: a shave's depth says how near the edge was,
        # not how slowly to look beyond it (after a shave of 5%, 6 times slower). A window
        # learned is a known ceiling, though: beyond it, as slowly as the cut was shallow.
        full = shortfall <= 0 and self.learned is None
        depth = 1 - (BETA if full else self._beta)
        return self.top * (1 - depth * shortfall**3)

    def shortfall(self, now: float) -> float:
        """The share of the climb left at *now*: 1 at its start, 0 back at the top, then < 0."""
        return 1 - max(0.0, now - self._epoch) / self._seconds

    def lower(self, rate: float) -> None:
        """Never climb back above *rate* (a quota the server declared), proven or not; the climb
        still starts where it did (a deep cut's depth under a lower top dropped the rate)."""
        if rate < self.top:
            self._beta = min(1.0, self.top * self._beta / rate)
            self.top = rate
        if self.proven is not None:
            self.proven = min(self.proven, rate)

    def delay(self, until: float) -> None:
        """Start the climb no sooner than *until* (a pause holds the rate where it is)."""
        self._epoch = max(self._epoch, until)

    def learn(self, requests: int, seconds: float) -> None:
        """Remember a window quota of *requests* per *seconds*: its 429s answer for a cut longer."""
        self.learned = (requests, seconds)

    def forget(self, rate: float) -> None:
        """Drop the last cut and any window learned: *rate* is the top, the next 429 cuts afresh."""
        self.cut_at, self.top, self.learned, self.proven = None, rate, None, None

    def answered_by_cut(self, sent: float) -> bool:
        """True if a 429 for a request sent at *sent* answers for the last cut, not news."""
        if self.cut_at is None:
            return False
        memory = 0.0 if self.learned is None else self.learned[1]
        return sent <= self.cut_at or sent < self.cut_at + memory

    def same_episode(self, now: float, sent: float | None, *, since_mark: int) -> bool:
        """True if a 429 at *now* for a request sent at *sent* answers for the last cut.

        Without *sent*: if no slot was handed out since the cut (*since_mark*), or within twice
        the mean latency of the climb's start (``DEFAULT_EPISODE`` while none is known).
        """
        if sent is not None:
            return self.answered_by_cut(sent)
        if self.cut_at is None:
            return False
        if since_mark == 0:
            return True
        window = DEFAULT_EPISODE if self.latency is None else 2 * self.latency
        return now < self._epoch + window

    def __repr__(self) -> str:
        if self.cut_at is None:
            return f"<Curve at {self.top:.4g}>"
        return f"<Curve cut at t={self.cut_at:.3f} from {self.top:.4g} by {self._beta:.3g}>"
