"""Choose the look-ups that show every due run for the fewest requests: listings or GETs.

A listing (``GET /runs?property=createdAt>T``, of one flow or of the whole sandbox, paged)
shows every run created since ``T`` in one request per page; ``GET /runs/{id}`` shows one run.
:func:`plan` weighs them for the runs that are due:

- a run whose creation time is not known at all, or that a listing missed, is looked up alone;
- otherwise either one listing of the sandbox since the oldest due run covers them all, or, flow
  by flow, a listing of the flow or a GET per run, whichever costs fewer requests; the runs
  whose flow is not known are looked up alone then. The cheaper of the two ways is taken.

What a listing will cost is estimated from what earlier listings of the same scope showed
(:class:`Sizes`: the creation time of every run they held), and never below the runs being
followed there: a sandbox full of other flows' runs is learnt after its first listing.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .._http.lookups import RunView
from .._model import Followed

__all__ = ["Ended", "Listing", "Plan", "Sizes", "Watch", "plan"]

Scope = str | None
"""A flow ID, or None for the whole sandbox."""


@dataclass(frozen=True, slots=True)
class Ended:
    """How a followed run ended: its last view, or why its end is unknown.

    ``final_status`` is the view's ``final`` once the run is done, else ``"unknown"``
    (following timed out, the run vanished, look-ups stopped: ``why`` says which).
    """

    run_id: str
    view: RunView | None
    why: str | None = None

    @property
    def final_status(self) -> str:
        """Return ``success``, ``failed``, ``partial`` or ``unknown``."""
        view = self.view
        return view.final if view is not None and view.final is not None else "unknown"

    def followed(self, chain: Sequence[str]) -> Followed:
        """Return what this adds to the results line of a record whose new runs were ``chain``."""
        view = self.view
        return Followed(
            final_status=self.final_status,
            final_status_raw=view.status_raw if view is not None else None,
            chain=tuple(chain),
            final_error=view.errors if view is not None else (),
        )


@dataclass(slots=True, eq=False)
class Watch:
    """One run being followed, and what is known of it.

    ``since_ms`` is a lower bound of its ``createdAt`` (epoch ms), exact once a look-up showed
    the run; ``flow_id`` its flow, a hint until then. ``due`` is the loop time of its next
    look; ``missed`` says a listing that should have shown it did not (it is looked up alone).
    """

    run_id: str
    flow_id: str | None
    since_ms: int | None
    due: float
    added: float
    future: asyncio.Future[Ended] = field(repr=False)
    exact: bool = False
    missed: bool = False
    looks: int = 0
    last: RunView | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """A listing of ``flow_id``'s runs (None: the sandbox's) created after ``after_ms``."""

    flow_id: str | None
    after_ms: int

    def covers(self, watch: Watch) -> bool:
        """Tell whether this listing must show ``watch``'s run, if it still exists."""
        if watch.since_ms is None or watch.since_ms < self.after_ms:
            return False
        return self.flow_id is None or watch.flow_id == self.flow_id


@dataclass(frozen=True, slots=True)
class Plan:
    """The look-ups of one pass: listings, and runs to get one by one; ``cost`` in requests."""

    listings: tuple[Listing, ...]
    gets: tuple[Watch, ...]
    cost: int


class Sizes:
    """Remember, per scope, the creation times of the runs the last listing of it showed."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[Scope, list[int]] = {}

    def __repr__(self) -> str:
        return f"Sizes({ {scope: len(times) for scope, times in self._seen.items()}!r})"

    def saw(self, listing: Listing, views: Iterable[RunView]) -> None:
        """Take in what ``listing`` showed; a sandbox listing tells each flow's share too."""
        times: list[int] = []
        by_flow: defaultdict[str, list[int]] = defaultdict(list)
        for view in views:
            if view.created_at is None:
                continue
            times.append(view.created_at)
            if view.flow_id is not None:
                by_flow[view.flow_id].append(view.created_at)
        times.sort()
        self._seen[listing.flow_id] = times
        if listing.flow_id is None:
            for flow, flow_times in by_flow.items():
                flow_times.sort()
                self._seen[flow] = flow_times

    def runs(self, scope: Scope, after_ms: int) -> int | None:
        """Return how many runs created after ``after_ms`` the last listing showed (None: none)."""
        times = self._seen.get(scope)
        if times is None:
            return None
        return len(times) - bisect.bisect_right(times, after_ms)


def _pages(runs: int, page_size: int) -> int:
    return max(1, math.ceil(runs / page_size))


def plan(due: Sequence[Watch], pending: Iterable[Watch], sizes: Sizes, *, page_size: int) -> Plan:
    """Return the cheapest look-ups that show every run of ``due`` (see the module docstring).

    ``pending`` is every run still followed: a listing shows those of its scope too, and they
    count in its estimated size.
    """
    alone = [w for w in due if w.since_ms is None or w.missed]
    listable = [w for w in due if w.since_ms is not None and not w.missed]
    if not listable:
        return Plan((), tuple(alone), len(alone))
    others = [w for w in pending if w.since_ms is not None]

    def estimate(listing: Listing) -> int:
        ours = sum(listing.covers(w) for w in others)
        seen = sizes.runs(listing.flow_id, listing.after_ms)
        return _pages(max(ours, seen or 0), page_size)

    everything = Listing(None, min(w.since_ms for w in listable if w.since_ms is not None))
    sandbox_cost = estimate(everything)
    by_flow: defaultdict[str | None, list[Watch]] = defaultdict(list)
    for watch in listable:
        by_flow[watch.flow_id].append(watch)
    listings: list[Listing] = []
    gets = list(alone)
    for flow, watches in by_flow.items():
        if flow is None:
            gets += watches
            continue
        listing = Listing(flow, min(w.since_ms for w in watches if w.since_ms is not None))
        if estimate(listing) < len(watches):
            listings.append(listing)
        else:
            gets += watches
    split_cost = len(gets) + sum(estimate(listing) for listing in listings)
    if sandbox_cost + len(alone) < split_cost:
        return Plan((everything,), tuple(alone), sandbox_cost + len(alone))
    return Plan(tuple(listings), tuple(gets), split_cost)
