"""Resolve a lost answer by looking, not guessing (``--on-ambiguous check``).

When a re-trigger's answer is lost (a reset or timeout after the request left, a 5xx that may
follow processing, a 2xx without a usable body), the attempt registers an open check with its
window: from when the request left to when its answer was lost, widened by ``check_skew`` for
the clocks of client and service. After ``check_delay`` (so that a new run has time to show),
the resolver:

1. learns the run's flow: ``GET /runs/{RUN_ID}`` (once per run);
2. waits until every request that left before now is answered: a clear answer still to come
   would claim a new run the listing already shows;
3. lists the flow's runs created since the window began (one listing, paged);
4. leaves out the runs that clear answers claimed, and attributes the rest:

=========================================  =========================================================
what the listing shows                     verdict
=========================================  =========================================================
no new run since the window began          not processed: sent again (the doubt is cleared)
new runs only after the window closed, or  ``in_doubt`` (a 504 may come while the service works;
since a request still unanswered left      its answer may name the run)
one new run, no other open check of the    ``retriggered`` with that run, ``resolved_by: lookup``
flow overlapping the window
several runs, or other open checks of the  each run inside exactly one check's window goes to it;
flow overlapping                           the others: ``retriggered`` without a new run ID and
                                           with the ``candidates`` when there are at least as many
                                           runs as checks (each was re-triggered), else ``in_doubt``
a look-up that failed                      ``in_doubt``: nothing is sent again on a guess
a new run inside the window of a lost      ``in_doubt``: it may be that answer's (see
answer left in doubt                       :mod:`.windows`)
=========================================  =========================================================

A check decides for the other checks of its group only when their own ``check_delay`` was over
when its listing began. A scheduled run of the same flow created inside the window looks like a
re-trigger: it can turn "not processed" into a wrong ``retriggered``, never into a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from yarl import URL

from .._config import Settings
from .._exceptions import BulkRetryError, ListingHalted
from .._http.auth import TokenProvider
from .._http.client import FlowServiceClient
from .._http.links import resolve_next
from .._http.lookups import RunView, listing_url, parse_run_page, parse_single, run_url
from .._model import Answer, Outcome
from .._stats import Stats
from .claims import Claims, horizon
from .follow_fetch import FollowStats, GaveUp, Looker
from .governor import Governor
from .steps import AT_ONCE, Done, Flight, Step
from .verdicts import AMBIGUOUS_MATCH, SEND_AGAIN, cannot_tell, found, unsure
from .windows import ALL_TIME, Ghosts, Open, chain, created_after, created_in, meet, within

__all__ = ["Resolver"]

#: Pages of one flow's listing read for one check, at most.
_MAX_PAGES = 20
#: The page of the sandbox's runs that measures the clocks' offset: how many, from how long
#: before the window (ms).
_CALIBRATION_PAGE = 100
_CALIBRATION_MS = 5_000
#: Listings one check makes at most while answers lost meanwhile link it to earlier windows.
_LISTINGS = 3


class Resolver:
    """The open checks of a batch, the new runs clear answers claimed, and the look-ups."""

    def __init__(
        self,
        *,
        client: FlowServiceClient,
        tokens: TokenProvider,
        governor: Governor,
        settings: Settings,
        stats: Stats,
        rng: random.Random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._looker = Looker(client, tokens, governor, settings, FollowStats(), rng)
        self._settings = settings
        self._stats = stats
        self._wall = wall
        self._open: dict[str, Open] = {}
        self._ghosts = Ghosts()
        self._decided: dict[str, Done] = {}
        self._claims = Claims()
        self._in_flight: dict[int, float] = {}
        self._counted = 0  # the Looker's requests already added to stats.lookups
        self._calibrated = False
        #: Set when a request is answered or a check learns its flow or ends.
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"Resolver(open={len(self._open)}, {self._claims!r})"

    # -- what the attempts tell it -----------------------------------------------------------

    def sending(self, key: int) -> None:
        """A re-trigger is leaving now (``key`` names it until :meth:`answered`)."""
        self._in_flight[key] = self._wall()

    def answered(self, key: int, new_run_id: str | None) -> None:
        """The re-trigger ``key`` was answered; ``new_run_id`` when the answer named one."""
        sent = self._in_flight.pop(key, None)
        if new_run_id is not None:
            self.claim(new_run_id, None if sent is None else (sent, self._wall()))
        self._changed.set()

    def claim(self, new_run_id: str, window: tuple[float, float] | None = None) -> None:
        """A new run known to belong to some record: never a candidate for another."""
        now = self._wall()
        self._claims.add(new_run_id, now, window)
        # The oldest request still unanswered is the first in ``_in_flight``.
        oldest = next(iter(self._in_flight.values()), now)
        opened = min((o.since_ms for o in self._open.values()), default=None)
        self._claims.forget_before(horizon(now, self._settings, oldest, opened))
        # No check to come starts before the oldest request in flight, or an open one.
        earliest = int((oldest - self._settings.check_skew) * 1000)
        self._ghosts.forget_before(earliest if opened is None else min(earliest, opened))

    def open(self, flight: Flight, sent_wall: float) -> None:
        """Register the check of ``flight``, whose attempt left at ``sent_wall`` (epoch s)."""
        run_id = flight.record.run_id
        assert run_id is not None
        skew = self._settings.check_skew
        now = self._wall()
        self._open[run_id] = Open(
            since_ms=int((sent_wall - skew) * 1000),
            until_ms=int((now + skew) * 1000),
            sent_ms=int(sent_wall * 1000),
            lost_ms=int(now * 1000),
        )
        self._decided.pop(run_id, None)
        flight.checking = True

    # -- the check -----------------------------------------------------------------------------

    async def resolve(self, flight: Flight) -> Step:
        """Look ``flight``'s run up (see the module table) and return what comes next."""
        run_id = flight.record.run_id
        assert run_id is not None
        flight.checking = False
        try:
            mine = self._open.get(run_id)
            if mine is not None and await self._place(run_id, mine) is None:
                return self._close(run_id, cannot_tell("the run's flow could not be found"))
            for _ in range(_LISTINGS):
                mine = self._open.get(run_id)
                if mine is None:  # another check of its flow decided for this one meanwhile
                    return self._decided_for(run_id, flight)
                seen = self._wall()
                await self._answers_before(seen)
                await self._place_others(mine)
                if run_id not in self._open:
                    return self._decided_for(run_id, flight)
                assert mine.flow is not None
                # From the earliest window of the flow's checks chained to this one: one for all.
                since = min(o.since_ms for o in chain(self._open, mine).values())
                listed = await self._listed(mine.flow, since)
                if self._calibrating(mine):
                    await self._calibrate(since)
                # Checks opened meanwhile: placed, they leave the chain (another flow) or join it
                # not due; the listing answers for it unless a window began before the listing.
                await self._place_others(mine)
                if run_id not in self._open:
                    return self._decided_for(run_id, flight)
                if all(o.since_ms >= since for o in chain(self._open, mine).values()):
                    return self._attribute(run_id, mine, listed, flight, int(seen * 1000))
        except BulkRetryError as exc:
            return self._close(run_id, cannot_tell(f"the look-up failed: {exc}"))
        return self._close(run_id, cannot_tell("unclear answers kept coming in"))

    async def _place(self, run_id: str, check: Open) -> str | None:
        """Learn the flow of ``check`` (one ``GET /runs/{id}``, shared); None if none."""
        if check.flow is not None:
            return check.flow
        if check.placing is None:
            check.placing = asyncio.ensure_future(self._flow_of(run_id))
        flow = await asyncio.shield(check.placing)
        if flow is not None:
            check.flow = flow
            self._changed.set()
        return flow

    async def _flow_of(self, run_id: str) -> str | None:
        view = await self._one(run_id)
        return None if view is None else view.flow_id

    def _decided_for(self, run_id: str, flight: Flight) -> Step:
        done = self._decided.pop(run_id, None)
        if done is None:
            return cannot_tell("the check was lost")
        if done is SEND_AGAIN:
            flight.ambiguous = 0
            return AT_ONCE
        return done

    def _attribute(
        self, run_id: str, mine: Open, listed: list[RunView], flight: Flight, seen_ms: int
    ) -> Step:
        """Decide for the open checks of ``mine``'s flow whose windows meet it.

        ``seen_ms``: every request sent before it was answered when the listing began, so an
        unclaimed run created up to then (and the clocks' skew) may be a lost answer's, even
        after its window (a 504 while the service still works). A check is only decided for
        when its own ``check_delay`` was over by then: a run shows in listings late.
        """
        group = chain(self._open, mine)
        if any(o.flow is None for o in group.values()):
            # Another lost answer whose flow is still unknown may own what the listing shows.
            return self._close(
                run_id, cannot_tell("another unclear answer of the same time could not be placed")
            )
        full = int(self._settings.check_skew * 1000)
        delay = int(self._settings.check_delay * 1000)
        due = {i for i, o in group.items() if i == run_id or o.lost_ms + delay <= seen_ms}
        since = min(o.since_ms for o in group.values())
        until = max(o.until_ms for o in group.values())
        self._claims.measure(listed)
        narrow = self._claims.skew_ms(full)
        unclaimed = [v for v in listed if v.id not in self._claims and v.id not in group]
        if not any(created_in(v, mine.since_ms, seen_ms + full) for v in unclaimed):
            # Nothing unclaimed created since its own request left: it was not processed,
            # whatever the other windows of the chain hold.
            self._decide(run_id, SEND_AGAIN)
            return self._decided_for(run_id, flight)
        pool = [v for v in unclaimed if created_in(v, since, until)]
        after = [v for v in unclaimed if created_after(v, until, seen_ms + full)]
        if self._in_flight:  # made (or maybe) since a request unanswered left: it may be its
            left_ms = min(self._in_flight.values()) * 1000 - narrow
            after += [v for v in pool if v.created_at is None or v.created_at >= left_ms]
            pool = [v for v in pool if v not in after]
        if pool and any(self._ghosts.holds(v, mine.flow) for v in pool):
            names = tuple(sorted(v.id for v in pool + after))
            why = "that another lost answer, left in doubt, may have made"
            return self._close(run_id, unsure(names, why))
        if not pool:
            if after:  # since the windows closed (processed late?) or a request unanswered left
                why = "after its answer was lost, or that a request still unanswered may name"
                return self._close(run_id, unsure(tuple(sorted(v.id for v in after)), why))
            # Nothing was created since the group's first request left: none was processed.
            for other_id in due:
                self._decide(other_id, SEND_AGAIN)
            return self._decided_for(run_id, flight)
        left = dict(group)
        decided: dict[str, Done] = {}
        changed = True
        while changed:
            changed = False
            for other_id, other in list(left.items()):
                # A run no other check's window holds is this check's; with exactly one such
                # run, it is its re-trigger (a second one would be a run of the flow's own).
                private = [
                    v
                    for v in pool
                    if within(v, other, narrow)
                    and not any(within(v, o, narrow) for o in left.values() if o is not other)
                ]
                if len(private) == 1:
                    view = private[0]
                    decided[other_id] = found(view)
                    if other_id in due:
                        # A check not decided now keeps its run unclaimed for its own look.
                        self.claim(view.id)
                    pool.remove(view)
                    del left[other_id]
                    changed = True
        names = tuple(sorted(v.id for v in pool + after))
        # A run outside every undecided check's own window is none of theirs (another writer's).
        inside = [v for v in pool if any(within(v, o, narrow) for o in left.values())]
        for other_id in left:
            if len(inside) >= len(left):
                decided[other_id] = Done(
                    Outcome.RETRIGGERED, AMBIGUOUS_MATCH, resolved_by="lookup", candidates=names
                )
            else:
                decided[other_id] = unsure(
                    names, f"fewer new runs ({len(pool)}) than unclear answers ({len(left)})"
                )
        for other_id, done in decided.items():
            if other_id in due:
                self._decide(other_id, done)
        return self._decided_for(run_id, flight)

    def _decide(self, run_id: str, done: Done) -> None:
        """Close ``run_id``'s check with ``done``, kept for its own check to pick up."""
        self._close(run_id, done)
        self._decided[run_id] = done

    def _close(self, run_id: str, done: Done) -> Done:
        check = self._open.pop(run_id, None)
        if check is not None and done is not SEND_AGAIN and done.new_run_id is None:
            # Ended without a run of its own (in doubt, or candidates only): a ghost.
            # Its run shows within check_delay, as every look-up here assumes of its own.
            delay = int(self._settings.check_delay * 1000)
            self._ghosts.add(check.since_ms, check.until_ms + delay, check.flow)
        self._changed.set()
        return done

    def haunt(self, sent_wall: float | None) -> None:
        """A lost answer no check will look up (sent at ``sent_wall``; None: at a time not
        known, as a run held from an earlier pass): a run of its time may be its re-trigger."""
        s, now = self._settings, self._wall()
        since = ALL_TIME if sent_wall is None else int((sent_wall - s.check_skew) * 1000)
        # A request of another process may still be with the service: up to its timeout.
        later = s.timeout if sent_wall is None else s.check_delay
        self._ghosts.add(since, int((now + s.check_skew + later) * 1000), None)

    def _calibrating(self, mine: Open) -> bool:
        """True when telling ``mine`` from another check of its flow needs the clocks' offset,
        which the clear answers listed so far have not shown yet (once a batch)."""
        if self._calibrated or self._claims.trusted:
            return False
        return sum(meet(o, mine, mine.flow) for o in self._open.values()) > 1

    async def _calibrate(self, since_ms: int) -> None:
        """One page of the sandbox's runs created since ``since_ms``: the new runs clear answers
        claimed there show the clocks' offset, which narrows every window from then on."""
        self._calibrated = True
        url = listing_url(
            URL(self._client.base_url),
            created_after_ms=since_ms - _CALIBRATION_MS,
            limit=_CALIBRATION_PAGE,
            orderby="createdAt",
        )
        with contextlib.suppress(BulkRetryError):
            self._claims.measure(parse_run_page((await self._look(url, page=True)).body)[0])

    async def _place_others(self, mine: Open) -> None:
        """Learn the flow of every other open check the chain of ``mine``'s window links.

        Each costs the ``GET /runs/{id}`` its own check would make (then skipped): without
        it, a run the listing shows might be that check's.
        """
        placed = True
        while placed:  # a check placed in this flow may link the chain to further ones
            placed = False
            for other_id, other in list(chain(self._open, mine).items()):
                if other.flow is None and other is not mine:
                    placed = await self._place(other_id, other) is not None
                    if placed:
                        break

    async def _answers_before(self, seen: float) -> None:
        """Wait until every re-trigger that left before ``seen`` (epoch s) is answered (bounded
        by the timeout): a clear answer still to come may claim a run listed."""
        loop = asyncio.get_running_loop()
        limit = loop.time() + self._settings.timeout + 1.0
        while any(t <= seen for t in self._in_flight.values()):
            remaining = limit - loop.time()
            if remaining <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # -- the requests --------------------------------------------------------------------------

    async def _one(self, run_id: str) -> RunView | None:
        """``GET /runs/{run_id}``: the run as Flow Service shows it, None if it has none."""
        answer = await self._look(run_url(self._client.base_url, run_id), page=False)
        return None if answer.status == 404 else parse_single(answer.body)

    async def _listed(self, flow: str, since_ms: int) -> list[RunView]:
        """The runs of ``flow`` created after ``since_ms``, every page of them (bounded)."""
        base = URL(self._client.base_url)
        url: URL | None = listing_url(base, flow_id=flow, created_after_ms=since_ms)
        views: list[RunView] = []
        pages = 0
        while url is not None and pages < _MAX_PAGES:
            pages += 1
            page, href = parse_run_page((await self._look(url, page=True)).body)
            views += page
            url = None if href is None else resolve_next(base, href)
        if url is not None:
            raise ListingHalted(f"more than {_MAX_PAGES} pages of runs for flow {flow}")
        return views

    async def _look(self, url: URL, *, page: bool) -> Answer:
        """One look-up through the batch's :class:`Looker` (paced, retried, counted)."""
        try:
            answer = await self._looker.get(url, page=page)
        finally:
            # From the Looker's total: looks overlap, and a delta per look counts others' too.
            total = self._looker.stats.requests
            self._stats.lookups += total - self._counted
            self._counted = total
        if isinstance(answer, GaveUp):
            raise ListingHalted(f"GET {url.path}: {answer.reason}")
        return answer
