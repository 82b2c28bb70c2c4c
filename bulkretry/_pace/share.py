"""Tell a quota's 429s from 429s that do not depend on the rate, by whether slowing down helps.

A quota's 429s come from sending too fast: at half the rate, a quota that refused a moderate
share of requests refuses next to nothing (a token bucket at 1.4 times its rate refuses 29%; at
0.7 times, none). Throttling per resource (a flow busy, a run locked) refuses a share of
requests whatever the rate: cutting only slows the batch, and the share stays.

:class:`RejectShare` counts the answers at each *level*, the rate set by a cut. While the share
refused since the last cut is moderate (at most 40%), a level must see :data:`LEVEL` answers
before the next cut: an overrun far past the quota is still cut at once, but a share that may be
rate-independent is measured instead of cut to a crawl. Once a level at half the rate (or less)
of earlier moderate ones has its answers, the verdict falls: refused at least 0.4 times as
often, most with a Retry-After of seconds, means the 429s are not the quota's (the controller
stops cutting; each refused run waits its own Retry-After and the others go on at the configured
rate); refused far less means they are, and the levels are measured afresh from there. Should
the share later climb well above the one found (a quota after all), cutting resumes.
Everything here is counting: no clock.
"""

from __future__ import annotations

__all__ = ["LEVEL", "LONG_WAIT", "MAX_SHARE", "MIN_SHARE", "RejectShare"]

#: A Retry-After this long (seconds) amid successes is about the run, not a shared quota.
LONG_WAIT = 2.0
#: Answers a level needs before its share counts (and, while it is moderate, before a cut).
LEVEL = 20
#: A share of 429s below this says nothing (a quota grazed now and then).
MIN_SHARE = 0.05
#: A share above this is an overrun (a quota far exceeded), never rate-independent 429s.
MAX_SHARE = 0.5
#: Answers over which a share found rate-independent is watched for a quota appearing.
WATCH = 100
# Slowed down this much (or more) since a level, and refused at least AS_OFTEN its share:
# the 429s do not depend on the rate; at most FAR_LESS of it: they are the quota's.
_SLOWER = 0.5
_AS_OFTEN = 0.4
_FAR_LESS = 0.1
# A level's share up to this holds a cut until the level is measured (more is an overrun).
_HOLD = 0.4
# Levels remembered: enough to reach from the configured rate down to a quarter of it.
_KEPT = 8


class RejectShare:
    """The share refused at each rate level; whether slowing down lowered it."""

    __slots__ = ("_answers", "_levels", "_throttled", "independent")

    def __init__(self) -> None:
        # (rate, answers, refused) of each level, the current one last.
        self._levels: list[list[float]] = []
        # Answers and 429s of the watch window, once found independent.
        self._answers = 0
        self._throttled = 0
        #: The share of 429s taken as rate-independent (None: 429s are the quota's, or no
        #: verdict yet).
        self.independent: float | None = None

    def __repr__(self) -> str:
        levels = ", ".join(f"{r:.4g}/s: {int(t)}/{int(a)}" for r, a, t, _ in self._levels)
        return f"RejectShare([{levels}], independent={self.independent})"

    def level(self, rate: float) -> None:
        """A cut (or a return to the configured rate) set a new level at *rate*."""
        levels = self._levels
        levels.append([rate, 0.0, 0.0, 0.0])
        if len(levels) > _KEPT:
            del levels[0]

    @property
    def levels(self) -> int:
        """How many levels are remembered (the current one included)."""
        return len(self._levels)

    def restart(self, rate: float) -> None:
        """Forget every level: measure afresh from one at *rate* (an episode is over)."""
        self._levels = [[rate, 0.0, 0.0, 0.0]]

    def holding(self) -> bool:
        """True while a cut should wait: the level's share is moderate and not yet measured.

        (Nothing but 429s at a level is never moderate; two in its first five answers, with a
        success among them, are not yet more than that: 429s at random come in pairs too.)
        """
        if self.independent is not None or len(self._levels) < 2:
            return False  # the first 429 cuts: a cut is what the levels compare
        _, answers, refused, _ = self._levels[-1]
        return answers < LEVEL and refused < answers and refused <= _HOLD * max(answers, 5)

    def answered(self, throttled: bool, *, retry_after: float | None = None) -> bool:
        """Count one answer at the current level; True when it changed the verdict (429s
        found rate-independent, or a quota's after all).

        *retry_after*: the 429's, if it gave one. Only 429s asking to wait :data:`LONG_WAIT`
        or more can be rate-independent: a quota shared with other clients refuses a share
        that slowing down does not lower either (the others take up the slack), but it names
        the wait for its next slot, not seconds while most requests still go through.
        """
        if self.independent is not None:
            return self._watch(throttled)
        if not self._levels:
            return False
        current = self._levels[-1]
        current[1] += 1
        current[2] += throttled
        current[3] += throttled and retry_after is not None and retry_after >= LONG_WAIT
        rate, answers, refused, long_waits = current
        if answers % LEVEL:
            return False
        # Every level at twice this rate or more, pooled: what slowing down changed.
        n = t = 0.0
        for faster, answered, thrown, _ in self._levels[:-1]:
            if rate <= _SLOWER * faster:
                n += answered
                t += thrown
        if n < LEVEL or not MIN_SHARE <= t / n <= MAX_SHARE:
            return False
        share, before = refused / answers, t / n
        if share >= _AS_OFTEN * before and 2 * long_waits >= refused:
            # The share found: of every answer counted, the best estimate there is.
            self.independent = sum(x[2] for x in self._levels) / sum(x[1] for x in self._levels)
            self._answers = self._throttled = 0
            return True
        if share <= _FAR_LESS * before:
            del self._levels[:-1]  # slowing down helped: the quota's; measure afresh from here
        return False

    def _watch(self, throttled: bool) -> bool:
        """Once independent: a share far above the one found means a quota after all."""
        independent = self.independent
        assert independent is not None
        self._answers += 1
        self._throttled += throttled
        if self._answers < WATCH:
            return False
        share = self._throttled / self._answers
        self._answers = self._throttled = 0
        if share > max(2 * independent, independent + 0.2):
            self.independent = None
            self._levels.clear()
            return True
        return False
