"""How re-triggered runs live: in progress for a while, then a success or a failure, by fate.

A run started by a re-trigger is in progress from its ``createdAt`` until `duration` seconds of
the simulator's clock (plus up to `jitter`, drawn for each run) have passed; then it ends as
``success`` or ``failed``, a failed run with an error in its status, and its ``updatedAt``,
``completedAtUTC``, records and etag are updated. Nothing runs in the background: runs that are
due end whenever the simulator is next asked about runs (`Lifecycle.settle`).

How it ends is the fate of its line. A line starts at a run no re-trigger started (a seeded or
loaded failed run) and takes every run re-triggered from it, directly or not; its re-triggers
are counted in order, repeated ones included:

- ``succeeds``: the first re-trigger's run succeeds;
- ``fails-once``: the first re-trigger's run fails, the next one's succeeds;
- ``always-fails``: every re-trigger's run fails.

A line's fate is given by the ID of its first run (`fates`), else drawn with `shares` (e.g.
``{"fails-once": 0.2}``; what the shares leave succeeds) from a generator seeded with the seed
and that ID, so that it does not depend on the order the runs are re-triggered in.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from ._state import FAILED, FAILURES, SUCCESS, Run, new_etag

Fate: TypeAlias = Literal["succeeds", "fails-once", "always-fails"]
FATES: tuple[Fate, ...] = get_args(Fate)
DEFAULT_FATE: Fate = "succeeds"

# How many of a line's re-triggers fail before one succeeds.
_FAILURES_FIRST: Mapping[str, float] = {"succeeds": 0, "fails-once": 1, "always-fails": math.inf}

# Forgives clock rounding: a run due at 1000.0 + 5.0 has ended at that instant.
_EPSILON = 1e-6


def check_fates(fates: Mapping[str, str], shares: Mapping[Fate, float]) -> None:
    """Raise ValueError unless every fate is known and the shares are a distribution's part."""
    unknown = sorted({*fates.values(), *shares} - set(FATES))
    if unknown:
        raise ValueError(f"unknown fate {unknown[0]!r}: choose from {', '.join(FATES)}")
    if any(share < 0 for share in shares.values()) or sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError("fate shares must be >= 0 and add up to at most 1")


@dataclass(frozen=True, slots=True)
class _Ending:
    status: str
    completed_at: int
    records: int
    failure: tuple[str, str] | None
    etag: str


class Lifecycle:
    """Decide how each re-triggered run ends, and end it when the clock says so."""

    __slots__ = (
        "_due",
        "_duration",
        "_fates",
        "_jitter",
        "_lines",
        "_rng",
        "_seed",
        "_seq",
        "_shares",
        "counts",
    )

    def __init__(
        self,
        *,
        seed: int,
        fates: Mapping[str, Fate],
        shares: Mapping[Fate, float],
        duration: float,
        jitter: float,
    ) -> None:
        check_fates(fates, shares)
        if duration < 0 or jitter < 0:
            raise ValueError("a run's duration and its jitter cannot be negative")
        self._seed = seed
        self._fates = dict(fates)
        self._shares = {fate: share for fate, share in shares.items() if share > 0}
        self._duration = duration
        self._jitter = jitter
        self._rng = random.Random(f"{seed}:lifecycle")
        self._due: list[tuple[float, int, Run, _Ending]] = []
        self._seq = 0
        self._lines: dict[str, int] = {}
        # Runs started by re-triggers, by status: what a follow benchmark wants to know.
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"Lifecycle(duration={self._duration!r}, jitter={self._jitter!r}, "
            f"due={len(self._due)}, counts={dict(+self.counts)!r})"
        )

    def fate(self, run_id: str) -> Fate:
        """Return the fate of the line that starts at `run_id`."""
        given = self._fates.get(run_id)
        if given is not None:
            return given
        if not self._shares:
            return DEFAULT_FATE
        draw = random.Random(f"{self._seed}:fate:{run_id}").random()
        cut = 0.0
        for fate, share in self._shares.items():
            cut += share
            if draw < cut:
                return fate
        return DEFAULT_FATE

    def begin(self, run: Run, now: float) -> None:
        """Decide now how `run`, just started by a re-trigger, will end, and when."""
        line = run.lineage or run.id
        attempt = self._lines.get(line, 0) + 1
        self._lines[line] = attempt
        fails = attempt <= _FAILURES_FIRST[self.fate(line)]
        duration = self._duration
        if self._jitter:
            duration += self._rng.uniform(0.0, self._jitter)
        completed = run.started_at + round(duration * 1000)
        ending = _Ending(
            status=FAILED if fails else SUCCESS,
            completed_at=completed,
            records=self._rng.randrange(1, 50_000),
            failure=self._rng.choice(FAILURES) if fails else None,
            etag=new_etag(self._rng, completed),
        )
        # The sequence number breaks ties, so runs are never compared.
        heapq.heappush(self._due, (now + duration, self._seq, run, ending))
        self._seq += 1
        self.counts[run.status] += 1

    def settle(self, now: float) -> int:
        """End every run whose time has come; return how many ended."""
        due = self._due
        ended = 0
        while due and due[0][0] <= now + _EPSILON:
            _, _, run, ending = heapq.heappop(due)
            self.counts[run.status] -= 1
            run.status = ending.status
            run.completed_at = run.updated_at = ending.completed_at
            run.records = ending.records
            run.failure = ending.failure
            run.etag = ending.etag
            self.counts[run.status] += 1
            ended += 1
        return ended
