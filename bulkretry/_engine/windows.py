"""The windows of lost answers during a batch: open checks, and ghosts of those left in doubt.

A lost answer's *window* runs from when its request left to when its answer was lost (epoch
ms). An open check (:class:`Open`) waits for its look-up. A *ghost* (:class:`Ghosts`) is the
window of a lost answer no look-up gave a run of its own: one closed in doubt or with only
candidates, one lost on its record's last attempt (no check), a run held in doubt from an
earlier pass. Its re-trigger, if it was processed, is an unclaimed new run inside its window:
such a run still proves that something was processed, but is never another check's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from .._http.lookups import RunView

__all__ = ["ALL_TIME", "Ghosts", "Open", "chain", "created_after", "created_in", "meet", "within"]

#: The start of a window whose request left at a time not known (epoch ms).
ALL_TIME = -(2**62)


@dataclass(slots=True)
class Open:
    """An open check: the run, its window in epoch ms, and its flow once known."""

    since_ms: int
    until_ms: int
    #: When its request left and when its answer was lost (epoch ms), before any widening.
    sent_ms: int
    lost_ms: int
    flow: str | None = None
    #: The look-up of its flow, once one started (shared by every check that needs it).
    placing: asyncio.Task[str | None] | None = None


@dataclass(frozen=True, slots=True)
class _Ghost:
    since_ms: int
    until_ms: int
    flow: str | None  # None: a flow not known, so any


class Ghosts:
    """The windows of lost answers that ended without a run of their own (see the module)."""

    __slots__ = ("_all",)

    def __init__(self) -> None:
        self._all: list[_Ghost] = []

    def __len__(self) -> int:
        return len(self._all)

    def __repr__(self) -> str:
        return f"Ghosts({len(self._all)})"

    def add(self, since_ms: int, until_ms: int, flow: str | None) -> None:
        """A lost answer of ``flow`` (None: any) may have made a run created in this window."""
        last = self._all[-1] if self._all else None
        if last is not None and (last.since_ms, last.flow) == (since_ms, flow):
            # One ghost for held runs read one after another (each from ``ALL_TIME``), not
            # one each: a results file fed back may hold thousands.
            self._all[-1] = _Ghost(since_ms, max(last.until_ms, until_ms), flow)
            return
        self._all.append(_Ghost(since_ms, until_ms, flow))

    def holds(self, view: RunView, flow: str | None) -> bool:
        """True when ``view``, a run of ``flow``, may be the re-trigger of a ghost."""
        return any(
            (g.flow is None or g.flow == flow) and created_in(view, g.since_ms, g.until_ms)
            for g in self._all
        )

    def forget_before(self, ms: int) -> None:
        """Drop the ghosts whose windows closed before ``ms``: no check to come meets them."""
        if self._all and self._all[0].until_ms < ms:
            self._all = [g for g in self._all if g.until_ms >= ms]


def meet(other: Open, mine: Open, flow: str | None) -> bool:
    """True when ``other`` is a check of ``flow`` whose window overlaps ``mine``'s."""
    return (
        other.flow == flow and other.since_ms <= mine.until_ms and mine.since_ms <= other.until_ms
    )


def within(view: RunView, check: Open, skew_ms: int) -> bool:
    """True when ``view`` was created inside ``check``'s own window, widened by ``skew_ms``."""
    created = view.created_at
    return created is None or check.sent_ms - skew_ms <= created <= check.lost_ms + skew_ms


def chain(checks: Mapping[str, Open], mine: Open) -> dict[str, Open]:
    """The open checks linked to ``mine`` by overlapping windows, one after another: of its
    flow, or of a flow not known yet (any). A run in one window of the chain may be the
    answer to a check two windows away once a nearer one takes its own."""
    linked = {k: o for k, o in checks.items() if o is mine}
    grew = True
    while grew:
        grew = False
        for k, o in checks.items():
            linked_to = any(meet(o, m, o.flow) for m in linked.values())
            if k not in linked and o.flow in (mine.flow, None) and linked_to:
                linked[k] = o
                grew = True
    return linked


def created_in(view: RunView, since_ms: int, until_ms: int) -> bool:
    """True when ``view`` was created from ``since_ms`` to ``until_ms`` (or when not known)."""
    created = view.created_at
    return created is None or since_ms <= created <= until_ms


def created_after(view: RunView, since_ms: int, until_ms: int) -> bool:
    """True when ``view`` is known to have been created after ``since_ms``, up to ``until_ms``."""
    created = view.created_at
    return created is not None and since_ms < created <= until_ms
