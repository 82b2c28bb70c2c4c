"""Follow new runs to their end, cheaply: a few listings show many runs; GETs for the rest.

A :class:`Follower` is given runs to follow (:meth:`Follower.add`: a new run's ID, its flow if
known, a lower bound of its creation time) and answers, for each, a future of how it
:class:`~.follow_plan.Ended`. :meth:`Follower.run` is the one task that looks: it sleeps until
a run is due, then makes the look-ups that :func:`~.follow_plan.plan` finds cheapest for every
due run (one listing of the runs created since the oldest of them, per flow or for the
sandbox, paged; ``GET /runs/{id}`` for a few), and takes in every followed run those show.
Runs can be added while it runs (``run --follow``) or all before it starts (``watch``).

Timing, on the event loop's clock:

- a run is first looked at ``first_look`` seconds after it is added (default ``--poll``: a run
  just created is not done yet; ``watch`` passes 0);
- after a look, a run is due again after ``--poll`` seconds, or a tenth of the time it has been
  followed when that is longer (at most ten times ``--poll``): a run that goes on for hours is
  looked at less often;
- passes of look-ups are at least half a ``--poll`` apart, so that runs coming due one by one
  (as re-triggers succeed) are looked at together: a run may wait up to that much longer;
- a listing made for due runs shows the other runs of its scope too, which saves them a look;
- ``--follow-timeout`` after :meth:`Follower.run` starts, every run still followed ends
  ``unknown``, as does a run that vanished (404) and every run once look-ups were refused.

A run that a listing should have shown but did not (a hint that was wrong, a run deleted, a
listing that lags) is looked up alone at once; what that shows is exact from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Iterable

from yarl import URL

from .._config import Settings
from .._exceptions import AuthenticationError, BatchHalted
from .._http.auth import TokenProvider
from .._http.client import FlowServiceClient
from .._http.links import resolve_next
from .._http.lookups import RunView, listing_url, parse_run_page, parse_single, run_url
from .follow_fetch import FollowStats, GaveUp, Looker
from .follow_plan import Ended, Listing, Sizes, Watch, plan
from .governor import Governor

__all__ = ["LOOKUP_PAGE_SIZE", "Ended", "FollowStats", "Follower"]

log = logging.getLogger("bulkretry")

#: Runs asked for per page of a look-up listing (the API's ``limit``).
LOOKUP_PAGE_SIZE = 100
#: A run followed for T seconds is looked at every T/10 seconds, between one and ten polls.
_THINNING = 0.1
_MAX_POLLS = 10.0
#: Two passes of look-ups are at least this share of --poll apart.
_GATHER = 0.5
#: A run due this close to now is due now: a shorter wait could end with no time passed.
_EPSILON = 1e-3


class Follower:
    """Follow runs to their end under a batch's governor, tokens and retry decision.

    ``governor`` is the batch's (look-ups share its throttle and cap with the re-triggers);
    ``settings`` gives ``poll``, ``follow_timeout``, ``concurrency`` and the retry limits.
    """

    def __init__(
        self,
        *,
        client: FlowServiceClient,
        tokens: TokenProvider,
        governor: Governor,
        settings: Settings,
        rng: random.Random | None = None,
        page_size: int = LOOKUP_PAGE_SIZE,
    ) -> None:
        self.poll = settings.poll
        self.timeout = settings.follow_timeout
        self.stats = FollowStats()
        self._looker = Looker(
            client, tokens, governor, settings, self.stats, rng or random.Random()
        )
        self._base = URL(client.base_url)
        self._page_size = page_size
        self._room = asyncio.Semaphore(settings.concurrency)
        self._sizes = Sizes()
        self._pending: dict[str, Watch] = {}
        self._ended: dict[str, Ended] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._stopping = False
        self._over: str | None = None
        self._deadline: float | None = None
        self._pass: asyncio.Task[None] | None = None
        #: Why look-ups stopped for good (credentials refused…); None while they go on.
        self.halt_reason: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Follower pending={len(self._pending)} ended={len(self._ended)} poll={self.poll:g} "
            f"timeout={self.timeout:g} closed={self._closed} {self.stats!r} {self._sizes!r}>"
        )

    @property
    def pending(self) -> int:
        """How many runs are still followed."""
        return len(self._pending)

    def add(
        self,
        run_id: str,
        *,
        flow_id: str | None = None,
        since_ms: int | None = None,
        first_look: float | None = None,
    ) -> asyncio.Future[Ended]:
        """Follow ``run_id``; return a future of how it ends (never an exception).

        ``flow_id`` is its flow if known; ``since_ms`` a time (epoch ms) before its creation,
        such as the wall clock before the re-trigger was sent, less the clocks' skew; without
        it the run is looked up alone. ``first_look`` is the wait before the first look-up
        (default ``poll``). A run already followed shares its future.
        """
        loop = asyncio.get_running_loop()
        known = self._ended.get(run_id)
        if known is not None:
            done: asyncio.Future[Ended] = loop.create_future()
            done.set_result(known)
            return done
        watch = self._pending.get(run_id)
        if watch is not None:
            if not watch.exact:
                watch.flow_id = watch.flow_id or flow_id
                if since_ms is not None:
                    watch.since_ms = min(since_ms, watch.since_ms or since_ms)
            return watch.future
        if self._closed:
            raise RuntimeError("Follower.add() after close()")
        now = loop.time()
        delay = self.poll if first_look is None else max(0.0, first_look)
        watch = Watch(run_id, flow_id, since_ms, now + delay, now, loop.create_future())
        self.stats.followed += 1
        self._pending[run_id] = watch
        if self._over is not None:
            self._end(watch, self._over)
        else:
            self._wake.set()
        return watch.future

    def close(self) -> None:
        """Say that no run will be added: :meth:`run` returns once every run has ended."""
        self._closed = True
        self._wake.set()

    def stop(self) -> None:
        """Stop following now: every run still followed ends ``unknown``."""
        self._stopping = True
        self._wake.set()
        if self._pass is not None:
            self._pass.cancel()

    async def run(self) -> FollowStats:
        """Look runs up until every one has ended and :meth:`close` was called; return the cost.

        Returns early, with every run ended ``unknown``, at the follow timeout, on
        :meth:`stop`, or when look-ups are refused (:attr:`halt_reason` says why).
        """
        loop = asyncio.get_running_loop()
        deadline = self._deadline = loop.time() + self.timeout
        last_pass = -float("inf")
        while True:
            now = loop.time()
            if self._stopping:
                self._end_all("following was stopped")
                return self.stats
            if now >= deadline:
                self.stats.timed_out += len(self._pending)
                self._end_all(f"still going after --follow-timeout {self.timeout:g} s")
                return self.stats
            if not self._pending:
                if self._closed:
                    return self.stats
                await self._sleep(deadline - now)
                continue
            next_due = max(
                min(w.due for w in self._pending.values()), last_pass + _GATHER * self.poll
            )
            if next_due > now + _EPSILON:
                await self._sleep(min(next_due, deadline) - now)
                continue
            last_pass = now
            self._pass = loop.create_task(self._look(now))
            try:
                async with asyncio.timeout_at(deadline):
                    await self._pass
            except (BatchHalted, AuthenticationError) as exc:
                self.halt_reason = str(exc)
                self._end_all(str(exc))
                return self.stats
            except (TimeoutError, asyncio.CancelledError):
                if not (self._stopping or loop.time() >= deadline):
                    raise
            finally:
                self._pass = None

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))

    async def _look(self, now: float) -> None:
        """Make one pass of look-ups for the runs due at ``now``."""
        now += _EPSILON
        due = [w for w in self._pending.values() if w.due <= now]
        chosen = plan(due, self._pending.values(), self._sizes, page_size=self._page_size)
        log.debug("look-ups for %d due runs: %s", len(due), chosen)
        await self._all(
            [*(self._list(listing, now) for listing in chosen.listings)],
            chosen.gets,
        )
        missed = [w for w in self._pending.values() if w.missed]
        if missed:
            await self._all([], missed)
        later = asyncio.get_running_loop().time()
        for watch in due:
            if watch.due <= now and watch.run_id in self._pending:
                # Not shown by any look-up (the service kept failing): try again next time.
                watch.due = later + self._interval(watch, later)

    async def _all(self, listings: list[Awaitable[None]], gets: Iterable[Watch]) -> None:
        """Make these look-ups, as many at once as the batch's concurrency allows."""

        async def bounded(step: Awaitable[None]) -> None:
            async with self._room:
                await step

        steps = [*listings, *(self._get(watch) for watch in gets)]
        await asyncio.gather(*(bounded(step) for step in steps))

    async def _list(self, listing: Listing, started: float) -> None:
        """List the runs ``listing`` asks for, page by page; note the due runs it missed."""
        url = listing_url(
            self._base,
            flow_id=listing.flow_id,
            created_after_ms=listing.after_ms,
            limit=self._page_size,
            # Oldest first: runs created while the pages are read come last, not skipped.
            orderby="createdAt",
        )
        visited = {str(url)}
        shown: list[RunView] = []
        while True:
            answer = await self._looker.get(url, page=True)
            if isinstance(answer, GaveUp):
                log.warning("a look-up listing gave up (%s); looking again later", answer.reason)
                return
            self.stats.pages += 1
            views, href = parse_run_page(answer.body)
            self._saw(views)
            shown += views
            if href is None:
                break
            url = resolve_next(self._base, href)
            key = url.query.get("continuationToken") or str(url)
            if key in visited:
                raise BatchHalted("look-ups stopped: a listing's next-page link repeats a page")
            visited.add(key)
        self.stats.listings += 1
        self._sizes.saw(listing, shown)
        ids = {view.id for view in shown}
        for watch in self._pending.values():
            if watch.due <= started and listing.covers(watch) and watch.run_id not in ids:
                watch.missed = True

    async def _get(self, watch: Watch) -> None:
        """Look ``watch``'s run up alone: what it is now, or that it is gone."""
        if watch.run_id not in self._pending:
            return
        answer = await self._looker.get(run_url(self._base, watch.run_id), page=False)
        if isinstance(answer, GaveUp):
            log.warning("looking up run %s gave up (%s); again later", watch.run_id, answer.reason)
            return
        self.stats.gets += 1
        watch.missed = False
        view = parse_single(answer.body) if answer.status == 200 else None
        if view is not None and view.id == watch.run_id:
            self._saw([view])
        elif answer.status == 404 or _empty(answer.body):
            self.stats.vanished += 1
            self._end(watch, f"the run vanished: GET /runs/{watch.run_id} answered no run")
        else:
            log.warning("the look-up of run %s answered no run of that ID", watch.run_id)

    def _saw(self, views: Iterable[RunView]) -> None:
        """Take in what a look-up showed of the runs followed; end those that are done."""
        now = asyncio.get_running_loop().time()
        for view in views:
            watch = self._pending.get(view.id)
            if watch is None:
                continue
            watch.last = view
            watch.looks += 1
            watch.missed = False
            if view.flow_id is not None:
                watch.flow_id = view.flow_id
            if view.created_at is not None:
                watch.since_ms = view.created_at - 1
                watch.exact = True
            if view.done:
                self._resolve(watch, Ended(watch.run_id, view))
            else:
                watch.due = now + self._interval(watch, now)

    def _interval(self, watch: Watch, now: float) -> float:
        return max(self.poll, min(_MAX_POLLS * self.poll, _THINNING * (now - watch.added)))

    def _end(self, watch: Watch, why: str) -> None:
        self._resolve(watch, Ended(watch.run_id, watch.last, why))

    def _end_all(self, why: str) -> None:
        self._over = why
        for watch in list(self._pending.values()):
            self._end(watch, why)

    def _resolve(self, watch: Watch, ended: Ended) -> None:
        del self._pending[watch.run_id]
        self._ended[watch.run_id] = ended
        if not watch.future.done():
            watch.future.set_result(ended)


def _empty(body: object) -> bool:
    """Tell whether a 200's body is ``{"items": []}``: no such run."""
    return isinstance(body, dict) and body.get("items") == []
