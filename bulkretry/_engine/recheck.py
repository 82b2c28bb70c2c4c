"""Resolve runs left ``in_doubt`` after the fact (``bulkretry check``): look, never send.

The same evidence as ``--on-ambiguous check`` (:mod:`.resolve`), read later. Each run in doubt
comes with a window (:class:`Doubt`): no later than its first maybe-processed request left, no
earlier than its answer was lost. The window is widened by ``check_skew`` on both sides for the
clocks, and never starts before the run's own ``createdAt`` (a re-trigger comes after its run).
Then:

1. the run's flow and ``createdAt``: ``GET /runs/{RUN_ID}`` (one per run);
2. once every window closed ``settle`` seconds ago (the longer of ``check_delay`` and
   ``--timeout``: a service may still create a run after its answer was lost), one listing
   per flow and stretch of overlapping windows: ``createdAt`` from the first window's start
   to the last one's end plus ``settle``;
3. the new runs that clear answers named (``claimed``: ``new_run_id`` and ``chain`` of
   re-triggered records) are left out; runs only named as ``candidates`` count as new runs
   that may be anybody's, never as this run's;
4. per run (:func:`attribute`):

=========================================  ========================================================
what the listing shows                     verdict
=========================================  ========================================================
no new run in its window, nor up to        ``failed``, ``error.kind: "not_processed"``: safe to
``settle`` after it                        send again
new runs only after its window (within     ``in_doubt`` (a 504 may come while the service works)
``settle``), or only runs named as         with the runs in its message
candidates of other records
exactly one new run no other in-doubt      ``retriggered`` with that run, ``resolved_by: lookup``
window holds (others taken out in turn)
several, shared with other in-doubt        ``retriggered`` without a new run ID and with the
windows of the flow                        ``candidates`` when there are at least as many runs as
                                           in-doubt records sharing them, else ``in_doubt``
a look-up that failed, a run that          ``in_doubt``; and a run of unknown flow keeps every
vanished, a window not known               other window it overlaps from being attributed
=========================================  ========================================================

A scheduled run of the same flow created inside a window looks like a re-trigger: it can make
a run that was not processed end ``retriggered``, never ``not_processed``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
from .._model import ErrorInfo, Outcome
from .follow_fetch import FollowStats, GaveUp, Looker
from .governor import Governor
from .steps import Done

__all__ = ["NOT_PROCESSED", "Claimed", "Doubt", "Rechecker", "Window", "attribute", "cannot_tell"]

log = logging.getLogger("bulkretry")

#: Pages of one listing read at most; more leave its runs in doubt.
_MAX_PAGES = 50
T = TypeVar("T")

#: Given the IDs of every run listed, return those a clear answer named (``hard``) and those
#: only named as candidates of a record (``soft``).
Claimed = Callable[[set[str]], tuple[set[str], set[str]]]


@dataclass(frozen=True, slots=True)
class Doubt:
    """A run in doubt and its window (epoch ms, our clock); None where it is not known."""

    run_id: str
    since_ms: int | None
    until_ms: int | None
    #: Why the window is not known (stays in doubt with this message).
    why: str = "when its request was sent is not known"


@dataclass(frozen=True, slots=True)
class Window:
    """A run in doubt placed in its flow: its window widened for the clocks (epoch ms)."""

    run_id: str
    since: int
    until: int


NOT_PROCESSED = ErrorInfo(
    kind="not_processed",
    message="a look-up found no new run of its flow created from when its request may have "
    "left until after its answer was lost: the re-trigger was not processed; safe to send again",
)
_AMBIGUOUS_MATCH = ErrorInfo(
    kind="ambiguous_match",
    message="re-triggered (a look-up found as many new runs of its flow and time as runs in "
    "doubt), but which new run is this one's cannot be told; see candidates",
)


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
        self._wall = wall

    def __repr__(self) -> str:
        return f"Rechecker(settle={self._settle} ms, skew={self._skew} ms, {self.stats!r})"

    async def check(self, doubts: Sequence[Doubt], claimed: Claimed) -> dict[str, Done]:
        """Return a verdict for each of ``doubts`` (by run ID); see the module table.

        Raise :class:`~bulkretry._exceptions.BatchHalted` or
        :class:`~bulkretry._exceptions.AuthenticationError` when the look-ups are refused.
        """
        verdicts: dict[str, Done] = {}
        known: list[Window] = []
        for doubt in doubts:
            if doubt.since_ms is None or doubt.until_ms is None:
                verdicts[doubt.run_id] = cannot_tell(doubt.why)
            else:
                since, until = doubt.since_ms - self._skew, doubt.until_ms + self._skew
                known.append(Window(doubt.run_id, since, until))
        views = await _all([self._one(w.run_id) for w in known])
        flows: dict[str, list[Window]] = {}
        foreign: list[tuple[int, int]] = []
        for window, view in zip(known, views, strict=True):
            if isinstance(view, str):
                verdicts[window.run_id] = cannot_tell(view)
                foreign.append((window.since, window.until))  # its new run: in any flow
                continue
            if view.created_at is not None and view.created_at > window.since:
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
        for (_, part), (listed_at, found) in zip(stretches, listed, strict=True):
            if isinstance(found, str):
                verdicts.update((w.run_id, cannot_tell(found)) for w in part)
                continue
            verdicts.update(
                attribute(
                    part,
                    found,
                    hard=hard,
                    soft=soft,
                    listed_at=listed_at,
                    settle=self._settle,
                    foreign=foreign,
                )
            )
        return verdicts

    async def _settled(self, latest_until: int) -> None:
        """Wait until ``settle`` passed since the last window closed (at most ``settle``)."""
        delay = min(
            latest_until + self._settle - int(self._wall() * 1000), self._settle + self._skew
        )
        if delay > 0:
            # Said, not only logged at info: a check right after its batch waits this long.
            log.warning(
                "waiting %.0f s before listing: a new run may show up to %.0f s after an answer "
                "was lost (--timeout)",
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


def attribute(
    windows: Sequence[Window],
    listed: Sequence[RunView],
    *,
    hard: set[str],
    soft: set[str],
    listed_at: int,
    settle: int,
    foreign: Sequence[tuple[int, int]] = (),
) -> dict[str, Done]:
    """Decide for one flow's ``windows`` from the runs ``listed`` at ``listed_at`` (the table).

    ``foreign``: windows of runs in doubt whose flow is unknown: a run inside one may be theirs.
    """
    runs = [v for v in listed if v.id not in hard]
    verdicts: dict[str, Done] = {}
    open_: dict[str, Window] = {}
    inside: dict[str, list[RunView]] = {}
    for w in windows:
        mine = [v for v in runs if v.id != w.run_id and _inside(v, w.since, w.until)]
        late = [v for v in runs if v.id != w.run_id and _after(v, w.until, w.until + settle)]
        owned = [v for v in mine if v.id not in soft]
        if owned:
            open_[w.run_id], inside[w.run_id] = w, owned
        elif mine or late:
            why = "only among others' candidates" if mine else "just after its answer was lost"
            verdicts[w.run_id] = _unsure(_names(mine + late), why)
        elif listed_at < w.until + settle:
            verdicts[w.run_id] = cannot_tell("its answer was lost too recently: check again later")
        else:
            verdicts[w.run_id] = Done(Outcome.FAILED, NOT_PROCESSED, resolved_by="lookup")

    def shared(view: RunView, me: str) -> bool:
        return any(_inside(view, o.since, o.until) for k, o in open_.items() if k != me) or any(
            _inside(view, since, until) for since, until in foreign
        )

    changed = True
    while changed:
        changed = False
        for run_id in list(open_):
            # A run no other window holds is this one's; with exactly one such run, it is its
            # re-trigger (a second one would be a run of the flow's own).
            private = [v for v in inside[run_id] if not shared(v, run_id)]
            if len(private) == 1:
                view = private[0]
                verdicts[run_id] = Done(
                    Outcome.RETRIGGERED, None, view.id, view.etag, resolved_by="lookup"
                )
                del open_[run_id]
                for other in open_:
                    inside[other] = [v for v in inside[other] if v.id != view.id]
                changed = True
    for group in _groups(open_):
        pool = {v.id for run_id in group for v in inside[run_id]}
        clash = any(
            o.since <= until and since <= o.until
            for o in group.values()
            for since, until in foreign
        )
        for run_id in group:
            names = _names(inside[run_id])
            if clash:
                verdicts[run_id] = _unsure(names, "while a run in doubt of unknown flow was sent")
            elif not names:
                verdicts[run_id] = cannot_tell("the new runs of its time were found to be others'")
            elif inside[run_id] and len(pool) >= len(group):
                verdicts[run_id] = Done(
                    Outcome.RETRIGGERED, _AMBIGUOUS_MATCH, resolved_by="lookup", candidates=names
                )
            else:
                why = f"but fewer ({len(pool)}) than the runs in doubt of their time ({len(group)})"
                verdicts[run_id] = _unsure(names, why)
    return verdicts


def _groups(open_: dict[str, Window]) -> list[dict[str, Window]]:
    """Split the windows left into groups that overlap one another (transitively)."""
    groups: list[dict[str, Window]] = []
    for run_id, window in sorted(open_.items(), key=lambda item: item[1].since):
        if groups and window.since <= max(w.until for w in groups[-1].values()):
            groups[-1][run_id] = window
        else:
            groups.append({run_id: window})
    return groups


def _after(view: RunView, since: int, until: int) -> bool:
    created = view.created_at
    return created is not None and since < created <= until


def _inside(view: RunView, since: int, until: int) -> bool:
    created = view.created_at
    return created is None or since <= created <= until


def _names(views: Iterable[RunView]) -> tuple[str, ...]:
    return tuple(sorted({v.id for v in views}))


def _unsure(names: tuple[str, ...], why: str) -> Done:
    """In doubt: a look-up found new runs of its flow ``why`` it cannot attribute."""
    message = f"a look-up found new runs of its flow {why}; candidates: " + ", ".join(names)
    return Done(Outcome.IN_DOUBT, ErrorInfo(kind="in_doubt", message=message))


def cannot_tell(why: str) -> Done:
    """In doubt: the look-up could not tell (``why``)."""
    return Done(
        Outcome.IN_DOUBT,
        ErrorInfo(
            kind="in_doubt", message=f"a look-up could not tell whether it was processed: {why}"
        ),
    )
