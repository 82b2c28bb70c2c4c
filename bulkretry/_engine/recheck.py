"""Resolve runs left ``in_doubt`` after the fact (``bulkretry check``): look, never send.

The same evidence as ``--on-ambiguous check`` (:mod:`.resolve`), read later. Each run in doubt
comes with a window (:class:`Doubt`): no later than its first maybe-processed request left, no
earlier than its answer was lost. The window is widened by ``check_skew`` on both sides for the
clocks, and never starts before the run's own ``createdAt`` (a re-trigger comes after its run).
When the claimed runs listed come with when their requests left and were answered (``timed``:
a state file keeps it), their ``createdAt`` shows how far the clocks are apart, as under
``--on-ambiguous check``: once a few did, that offset (with a margin) replaces ``check_skew``
in the windows attributed, so that runs in doubt a second apart are told apart.
Then:

1. the run's flow and ``createdAt``: ``GET /runs/{RUN_ID}`` (one per run);
2. once every window closed ``settle`` seconds ago (the longer of ``check_delay`` and
   ``--timeout``: a service may still create a run after its answer was lost), one listing
   per flow and stretch of overlapping windows: ``createdAt`` from the first window's start
   to the last one's end plus ``settle``;
3. the new runs that clear answers named (``claimed``: ``new_run_id`` and ``chain`` of
   re-triggered records) are left out; runs only named as ``candidates``, and the runs of
   the input themselves, count as runs that may be anybody's, never as this run's;
4. per run, the verdicts of :mod:`.attribution`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from yarl import URL

from .._config import Settings
from .._exceptions import ListingHalted
from .._http.auth import TokenProvider
from .._http.client import FlowServiceClient
from .._http.links import resolve_next
from .._http.lookups import (
    CREATED_FIELD,
    RunView,
    listing_params,
    parse_run_page,
    parse_single,
    run_url,
    runs_url,
)
from .attribution import ALWAYS, Window, attribute, cannot_tell
from .claims import Claims
from .follow_fetch import FollowStats, GaveUp, Looker
from .governor import Governor
from .steps import Done
from .windows import ALL_TIME

__all__ = ["Claimed", "Doubt", "Rechecker", "Timed"]

log = logging.getLogger("bulkretry")

#: Pages of one listing read at most; more leave its runs in doubt.
_MAX_PAGES = 50
T = TypeVar("T")

#: Given the IDs of every run listed, return those a clear answer named (``hard``) and those
#: only named as candidates of a record, or runs of the input (``soft``).
Claimed = Callable[[set[str]], tuple[set[str], set[str]]]
#: Given the IDs of claimed runs, return when the request of each that a clear answer named
#: left and was answered (epoch s, the batch's clock), where known.
Timed = Callable[[set[str]], Mapping[str, tuple[float, float]]]


@dataclass(frozen=True, slots=True)
class Doubt:
    """A run in doubt and its window (epoch ms, our clock); None where it is not known."""

    run_id: str
    since_ms: int | None
    until_ms: int | None
    #: Why the window is not known (stays in doubt with this message).
    why: str = "when its request was sent is not known"
    #: Not in doubt itself, but an attempt of it may have made a run nobody claims (a lost
    #: answer retried, a further round in doubt): looked up for its flow only, no verdict.
    ghost: bool = False


class Rechecker:
    """Look runs in doubt up and say what became of each; ``wall`` is the clock (epoch s)."""

    def __init__(
        self,
        *,
        client: FlowServiceClient,
        tokens: TokenProvider,
        governor: Governor,
        settings: Settings,
        rng: random.Random | None = None,
        stats: FollowStats | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats or FollowStats()
        self._looker = Looker(
            client, tokens, governor, settings, self.stats, rng or random.Random()
        )
        self._base = URL(client.base_url)
        self._skew = int(settings.check_skew * 1000)
        self._settle = int(max(settings.check_delay, settings.timeout) * 1000)
        # A request never answered (on the wire at a stop) may land until its timeout: its
        # window closes that long after it left, maybe after now.
        self._grace = int(settings.timeout * 1000)
        self._wall = wall

    def __repr__(self) -> str:
        return f"Rechecker(settle={self._settle} ms, skew={self._skew} ms, {self.stats!r})"

    async def check(
        self, doubts: Sequence[Doubt], claimed: Claimed, timed: Timed | None = None
    ) -> dict[str, Done]:
        """Return a verdict for each of ``doubts`` (by run ID); see the module table.

        Raise :class:`~bulkretry._exceptions.BatchHalted` or
        :class:`~bulkretry._exceptions.AuthenticationError` when the look-ups are refused.
        """
        verdicts: dict[str, Done] = {}
        known: list[Window] = []
        unplaced: list[str] = []
        # Each window as given, and the earliest its re-trigger can be: its run's createdAt.
        given: dict[str, tuple[int, int]] = {}
        floor: dict[str, int] = {}
        for doubt in doubts:
            if doubt.ghost:
                unplaced.append(doubt.run_id)
            elif doubt.since_ms is None or doubt.until_ms is None:
                verdicts[doubt.run_id] = cannot_tell(doubt.why)
                unplaced.append(doubt.run_id)
            else:
                since, until = doubt.since_ms - self._skew, doubt.until_ms + self._skew
                known.append(Window(doubt.run_id, since, until))
                given[doubt.run_id] = doubt.since_ms, doubt.until_ms
        if not known:
            return verdicts  # nothing to attribute: the flows of the others need no look-up
        views = await _all([self._one(run_id) for run_id in [w.run_id for w in known] + unplaced])
        flows: dict[str, list[Window]] = {}
        foreign: list[tuple[int, int]] = []
        # A run in doubt sent at a time not known may have made any new run of its flow (of
        # any flow when its flow is not known either): none of those counts for anyone.
        hidden: set[str] = set()
        for view in views[len(known) :]:
            if isinstance(view, str):
                foreign.append(ALWAYS)
            else:
                hidden.add(view.flow_id or "")
        for window, view in zip(known, views[: len(known)], strict=True):
            if isinstance(view, str):
                verdicts[window.run_id] = cannot_tell(view)
                foreign.append((window.since, window.until))  # its new run: in any flow
                continue
            if view.created_at is not None:
                floor[window.run_id] = view.created_at
                if view.created_at > window.since:
                    window = Window(window.run_id, view.created_at, window.until)
            flows.setdefault(view.flow_id or "", []).append(window)
        stretches = [
            (flow, part) for flow, ws in flows.items() for part in _stretches(ws, self._settle)
        ]
        if stretches:
            await self._settled(max(w.until for _, part in stretches for w in part))
        listed = await _all([self._stretch(flow, part) for flow, part in stretches])
        seen: set[str] = set()
        for _, found in listed:
            if not isinstance(found, str):
                seen.update(v.id for v in found)
        hard, soft = claimed(seen) if seen else (set(), set())
        skew = self._measured(timed, hard, listed)

        def narrowed(w: Window) -> Window:
            since, until = given[w.run_id]
            return Window(w.run_id, max(since - skew, floor.get(w.run_id, ALL_TIME)), until + skew)

        narrow = skew < self._skew
        for (flow, part), (listed_at, found) in zip(stretches, listed, strict=True):
            if isinstance(found, str):
                verdicts.update((w.run_id, cannot_tell(found)) for w in part)
                continue
            verdicts.update(
                attribute(
                    [narrowed(w) for w in part] if narrow else part,
                    found,
                    hard=hard,
                    soft=soft,
                    listed_at=listed_at,
                    settle=self._settle,
                    foreign=[*foreign, ALWAYS] if flow in hidden else foreign,
                    wide={w.run_id: w for w in part} if narrow else None,
                )
            )
        return verdicts

    def _measured(
        self,
        timed: Timed | None,
        hard: set[str],
        listed: list[tuple[int, list[RunView] | str]],
    ) -> int:
        """The widening for the clocks: the offset the claimed runs listed show, once enough
        of them came with their requests' times; else ``check_skew``."""
        if timed is None or not hard:
            return self._skew
        claims = Claims()
        for run_id, span in timed(hard).items():
            claims.add(run_id, 0.0, span)
        claims.measure([v for _, found in listed if not isinstance(found, str) for v in found])
        return claims.skew_ms(self._skew)

    async def _settled(self, latest_until: int) -> None:
        """Wait until ``settle`` passed since the last window closed: at most ``settle`` after
        its end, which is at most a request's timeout (and the clocks' margin) from now."""
        longest = self._grace + self._skew + self._settle  # (a clock set back: no longer)
        delay = min(latest_until + self._settle - int(self._wall() * 1000), longest)
        if delay > 0:
            # Said, not only logged at info: a check right after its batch waits this long.
            log.warning(
                "waiting %.0f s before listing: a request left unanswered may land until its "
                "--timeout, and a new run show up to %.0f s after that or after an answer lost",
                delay / 1000,
                self._settle / 1000,
            )
            await asyncio.sleep(delay / 1000)

    async def _one(self, run_id: str) -> RunView | str:
        """``GET /runs/{run_id}``: the run with its flow, or why it cannot be placed."""
        answer = await self._looker.get(run_url(self._base, run_id), page=False)
        self.stats.gets += 1
        if isinstance(answer, GaveUp):
            return f"the look-up of the run failed: {answer.reason}"
        if answer.status == 404:
            return "Flow Service has no such run (any more): its flow cannot be known"
        view = parse_single(answer.body)
        if view is None or view.flow_id is None:
            return "the look-up of the run showed no flow"
        return view

    async def _stretch(self, flow: str, part: list[Window]) -> tuple[int, list[RunView] | str]:
        """List the runs of ``flow`` created in ``part``'s windows; return when, and them."""
        since = min(w.since for w in part) - 1
        until = max(w.until for w in part) + self._settle + 1
        params = listing_params(flow_id=flow, created_after_ms=since)
        params.append(("property", f"{CREATED_FIELD}<{until}"))
        url: URL | None = runs_url(self._base, params)
        listed_at = int(self._wall() * 1000)
        views: list[RunView] = []
        self.stats.listings += 1
        try:
            for _ in range(_MAX_PAGES):
                if url is None:
                    break
                answer = await self._looker.get(url, page=True)
                self.stats.pages += 1
                if isinstance(answer, GaveUp):
                    return listed_at, f"the listing of its flow failed: {answer.reason}"
                page, href = parse_run_page(answer.body)
                views += page
                url = None if href is None else resolve_next(self._base, href)
        except ListingHalted as exc:
            return listed_at, f"the listing of its flow failed: {exc}"
        if url is not None:
            return listed_at, f"its flow has more than {_MAX_PAGES} pages of runs in its time"
        # A service that ignores the upper bound shows more: only the asked span counts.
        return listed_at, [v for v in views if v.created_at is None or since < v.created_at < until]


def _stretches(windows: list[Window], settle: int) -> Iterable[list[Window]]:
    """Split one flow's windows into stretches that overlap (``settle`` after each included)."""
    part: list[Window] = []
    end = 0
    for window in sorted(windows, key=lambda w: w.since):
        if part and window.since > end:
            yield part
            part = []
        end = max(end, window.until + settle) if part else window.until + settle
        part.append(window)
    if part:
        yield part


async def _all(coros: list[Awaitable[T]]) -> list[T]:
    """Await ``coros`` together; if one raises, cancel the others and raise."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
