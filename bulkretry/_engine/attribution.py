"""Which run in doubt a listed new run belongs to, after the fact (``bulkretry check``).

Given one flow's windows of runs in doubt (:class:`Window`) and the runs its listing showed,
less those clear answers named (``hard``), and counting as anybody's those only named as
``candidates`` and the runs of the input themselves (``soft``), :func:`attribute` gives each
run its verdict:

=========================================  ========================================================
what the listing shows                     verdict
=========================================  ========================================================
no new run in its window, nor up to        ``failed``, ``error.kind: "not_processed"``: safe to
``settle`` after it                        send again
new runs only after its window (within     ``in_doubt`` (a 504 may come while the service works)
``settle``), or only runs named as         with the runs in its message
candidates of other records, or runs of
the input
exactly one new run no other in-doubt      ``retriggered`` with that run, ``resolved_by: lookup``
window holds (others taken out in turn)
several, shared with other in-doubt        ``retriggered`` without a new run ID and with the
windows of the flow                        ``candidates`` when there are at least as many runs as
                                           in-doubt records sharing them, else ``in_doubt``
a look-up that failed, a run that          ``in_doubt``; and a run of unknown flow keeps every
vanished, a window not known               other window it overlaps from being attributed (one of
                                           unknown window: every window of its flow, or of every
                                           flow when its flow is not known either)
=========================================  ========================================================

Every verdict but ``not_processed`` rests on one assumption: each new run inside the windows
was made by a run in doubt of the input. A run in doubt whose flow or window is not known
(``foreign``) may have made any of them: none inside its span counts for anyone. A scheduled
run of the same flow created inside a window looks like a re-trigger: it can make a run that
was not processed end ``retriggered``, never ``not_processed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .._http.lookups import RunView
from .._model import ErrorInfo, Outcome
from .steps import Done
from .windows import ALL_TIME, created_after, created_in

__all__ = ["ALWAYS", "NOT_PROCESSED", "Window", "attribute", "cannot_tell"]

#: A window that holds every run (epoch ms): that of a run in doubt sent at a time not known.
ALWAYS = (ALL_TIME, -ALL_TIME)


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


def attribute(
    windows: Sequence[Window],
    listed: Sequence[RunView],
    *,
    hard: set[str],
    soft: set[str],
    listed_at: int,
    settle: int,
    foreign: Sequence[tuple[int, int]] = (),
    wide: Mapping[str, Window] | None = None,
) -> dict[str, Done]:
    """Decide for one flow's ``windows`` from the runs ``listed`` at ``listed_at`` (the table).

    ``foreign``: windows of runs in doubt that are not among ``windows`` (their flow or their
    own window is not known): a run inside one may be theirs. ``wide``: each window as widened
    by the full ``check_skew``, when ``windows`` were narrowed by a measured clock offset: only
    an empty wide window (and ``settle`` after it) proves ``not_processed``, which sends the run
    again, so a measurement that missed part of the offset can tell runs apart, never send one.
    """
    runs = [v for v in listed if v.id not in hard]
    verdicts: dict[str, Done] = {}
    open_: dict[str, Window] = {}
    inside: dict[str, list[RunView]] = {}
    for w in windows:
        mine = [v for v in runs if v.id != w.run_id and created_in(v, w.since, w.until)]
        late = [v for v in runs if v.id != w.run_id and created_after(v, w.until, w.until + settle)]
        owned = [v for v in mine if v.id not in soft]
        if owned:
            open_[w.run_id], inside[w.run_id] = w, owned
        elif mine or late:
            why = "only among others' candidates" if mine else "just after its answer was lost"
            verdicts[w.run_id] = _unsure(_names(mine + late), why)
        else:
            outer = w if wide is None else wide.get(w.run_id, w)
            near = [
                v
                for v in runs
                if v.id != w.run_id and created_in(v, outer.since, outer.until + settle)
            ]
            if near:
                why = "within the clocks' full margin (check_skew) of its window"
                verdicts[w.run_id] = _unsure(_names(near), why)
            elif listed_at < outer.until + settle:
                why = "its answer was lost too recently: check again later"
                verdicts[w.run_id] = cannot_tell(why)
            else:
                verdicts[w.run_id] = Done(Outcome.FAILED, NOT_PROCESSED, resolved_by="lookup")

    def shared(view: RunView, me: str) -> bool:
        return any(created_in(view, o.since, o.until) for k, o in open_.items() if k != me) or any(
            created_in(view, since, until) for since, until in foreign
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
                why = "that a run in doubt of unknown flow or time may have made"
                verdicts[run_id] = _unsure(names, why)
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


def _names(views: Iterable[RunView]) -> tuple[str, ...]:
    return tuple(sorted({v.id for v in views}))


def _unsure(names: tuple[str, ...], why: str) -> Done:
    """In doubt: a look-up found new runs of its flow ``why`` it cannot attribute (or none)."""
    if not names:
        return cannot_tell(why)
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
