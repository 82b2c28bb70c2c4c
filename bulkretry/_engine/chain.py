"""One record's chain of new runs under ``run --follow``: what its results line will say."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .._model import ErrorInfo, Followed, RunResult
from .follow_plan import Ended

__all__ = ["Chain"]


@dataclass(slots=True, eq=False)
class Chain:
    """A record re-triggered under ``--follow``: its line as the first round left it, and more.

    ``runs`` are the new run IDs in order (the first is ``line.new_run_id``), ``etag`` the last
    one's etag, ``since_ms`` a lower bound of its ``createdAt`` (None: unknown), ``ended`` how it
    ended, once it did. ``next_round`` is the outcome and error of a further re-trigger that
    created no run (refused, stopped, in doubt); ``next_doubt`` says it may have landed.
    """

    line: RunResult
    runs: list[str]
    etag: str | None = None
    since_ms: int | None = None
    ended: Ended | None = None
    next_round: str | None = None
    next_error: ErrorInfo | None = field(default=None, repr=False)
    #: A further round's send may have landed: no look-up may decide this chain is over.
    next_doubt: bool = False

    @property
    def final_status(self) -> str:
        """Return how the chain ended: its last run's final status, ``unknown`` when not known."""
        if self.next_doubt or self.ended is None:
            return "unknown"
        return self.ended.final_status

    def results_line(self) -> RunResult:
        """Return the record's results line, with what following found."""
        ended = self.ended
        followed = (
            ended.followed(self.runs)
            if ended is not None
            else Followed(final_status="unknown", chain=tuple(self.runs))
        )
        if self.next_doubt:
            followed = dataclasses.replace(followed, final_status="unknown")
        return dataclasses.replace(
            self.line,
            new_run_id=self.runs[-1],
            etag=self.etag,
            followed=followed,
            next_round=self.next_round,
            next_error=self.next_error,
        )
