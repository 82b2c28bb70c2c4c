"""What a listing did: :class:`ListingStats`, and the line that sums it up on stderr."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from .exclusions import FROM_RESULTS, FROM_STATE

__all__ = ["ListingStats"]

_WHY_DONE = {FROM_RESULTS: "by results files", FROM_STATE: "by the state file"}


@dataclass(slots=True, kw_only=True)
class ListingStats:
    """What a listing did: pages read, runs handed out or left out, and the requests it took.

    ``done`` counts the runs left out as re-triggered already, by source; ``superseded`` those
    left out for a newer successful run of their flow, found in ``lookups`` requests.
    """

    started: float = field(default_factory=time.monotonic)
    flows: int = 0
    pages: int = 0
    runs: int = 0
    duplicates: int = 0
    left_out: int = 0
    done: Counter[str] = field(default_factory=Counter)
    superseded: int = 0
    lookups: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    network_errors: int = 0
    token_renewals: int = 0
    #: Flows asked for that Flow Service does not know (a 404 for ``GET /flows/{id}``).
    unknown_flows: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        """Seconds since the listing started."""
        return time.monotonic() - self.started

    def summary(self) -> str:
        """Return the end-of-listing line for stderr."""
        flows = "every flow" if self.flows == 0 else f"{self.flows} flow" + "s" * (self.flows != 1)
        extra = ""
        if self.duplicates:
            extra += f", {self.duplicates} repeated"
        if self.left_out:
            extra += f", {self.left_out} left out (not failed, outside the window, or no ID)"
        if self.done:
            why = ", ".join(f"{n} {_WHY_DONE[source]}" for source, n in sorted(self.done.items()))
            extra += f", {self.done.total()} left out as re-triggered already ({why})"
        if self.lookups:
            extra += (
                f", {self.superseded} left out as superseded by a newer successful run of "
                f"their flow ({self.lookups} look-up" + "s" * (self.lookups != 1) + ")"
            )
        runs = f"{self.runs} failed run" + "s" * (self.runs != 1)
        pages = f"{self.pages} page" + "s" * (self.pages != 1)
        return (
            f"bulkretry: {runs} listed from {flows} in {pages}"
            f"{extra}; {self.requests} requests ({self.retries} retries, {self.throttled} "
            f"answered 429, {self.server_errors} 5xx, {self.network_errors} network errors or "
            f"timeouts, {self.token_renewals} token renewals) in {self.elapsed:.1f} s"
        )
