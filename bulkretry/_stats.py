"""Counters of a batch, shared by the engine, the progress display and the summary."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ._model import Outcome

__all__ = ["Stats"]


@dataclass(slots=True, kw_only=True)
class Stats:
    """What has happened so far in a batch. Read by the progress display; written by the engine."""

    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    attempts: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    network_errors: int = 0
    #: Attempts that may have re-triggered their run without a clear answer.
    ambiguous_attempts: int = 0
    token_renewals: int = 0
    budget_waits: int = 0
    #: GETs made to look runs up (the pre-flight, lost answers resolved, runs followed).
    lookups: int = 0
    #: Lost answers looked up (``--on-ambiguous check``), and those found not processed.
    checks: int = 0
    checks_resent: int = 0
    #: ``run --follow``: how the records' chains ended (``final_status``), and further rounds
    #: that created a new run.
    finals: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    #: Look-up requests made to follow new runs (every GET, retries included).
    follow_lookups: int = 0
    total: int | None = None

    def __repr__(self) -> str:
        counts = ", ".join(f"{o.value}={n}" for o, n in sorted(self.outcomes.items()))
        return (
            f"Stats(done={self.done}, attempts={self.attempts}, retries={self.retries}, "
            f"throttled={self.throttled}, 5xx={self.server_errors}, "
            f"ambiguous={self.ambiguous_attempts}, {counts})"
        )

    @property
    def done(self) -> int:
        """Records finished, whatever their outcome."""
        return sum(self.outcomes.values())

    @property
    def elapsed(self) -> float:
        """Seconds since the batch started."""
        return time.monotonic() - self.started

    def count(self, outcome: Outcome) -> int:
        """Return how many records ended with ``outcome``."""
        return self.outcomes.get(outcome, 0)
