"""When a results line's doubt arose: a look-up's verdict settles the doubts before it, not after.

``check`` writes its verdict on a run in doubt into that run's line and keeps the line's
``finished_at``. Fed back, a ``not_processed`` verdict outranks the ``in_doubt`` it resolves, and
the run is sent again. Should that request's answer be lost too, the new ``in_doubt`` line is a
doubt the verdict never looked at: it must win over the verdict, or the run is sent a third
time. So a line's doubt has a time, its ``finished_at``, when the line's own pass sent the run
(a verdict or an ``in_doubt`` line), or for a ``run --follow`` line whose further round may have
landed. A line held from an earlier pass (``attempts`` 0) repeats a doubt from no later than
its ``finished_at``; a verdict written into it has no time.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .._model import ROUND_LANDED

__all__ = ["doubt_at", "instant_ms", "interrupted", "next_round_outcome", "sent_by_its_pass"]


def instant_ms(text: object) -> int | None:
    """Return an ISO-8601 time (UTC when it names no zone) in epoch milliseconds, else None."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def sent_by_its_pass(obj: Mapping[str, Any]) -> bool:
    """True for a results line whose own pass sent the run and may not know what came of it:
    an attempt or more, an ambiguous one among them (or the pass interrupted mid-request)."""
    attempts, ambiguous = obj.get("attempts"), obj.get("ambiguous_attempts")
    if not isinstance(attempts, int) or attempts < 1:
        return False
    return (isinstance(ambiguous, int) and ambiguous >= 1) or interrupted(obj)


def interrupted(obj: Mapping[str, Any]) -> bool:
    """True for a results line whose request a stop cut off on the wire (``error.kind``)."""
    error = obj.get("error")
    return isinstance(error, dict) and error.get("kind") == "interrupted"


def doubt_at(obj: Mapping[str, Any], outcome: str | None) -> int | None:
    """Return when the doubt a line speaks of arose (epoch ms), or None when it has no time.

    *outcome* is the one the line stands for. A verdict written into a line its own pass sent
    settles the doubts up to that line's ``finished_at``; written into a line held from an
    earlier pass it has no time (its ``finished_at`` is when the run was held, later than any
    request the look-up saw). An ``in_doubt`` line raises its doubt no later than its
    ``finished_at``: then, when its pass sent the run; before, when it only repeats a doubt it
    was held for, which may be newer than a verdict fed with it, so a verdict must be as late to
    settle it. A ``run --follow`` line whose further round may have landed raises one then, for
    its chain's last run.
    """
    if isinstance(obj.get("resolved_by"), str):
        # check replaced the line's error with its verdict's (an interrupted request's kind is
        # gone): that the line's pass sent the run is its attempts alone.
        attempts = obj.get("attempts")
        dated = isinstance(attempts, int) and attempts >= 1
    else:
        dated = outcome == "in_doubt"
    if dated or _round_in_doubt(obj):
        return instant_ms(obj.get("finished_at"))
    return None


def _round_in_doubt(obj: Mapping[str, Any]) -> bool:
    """True for a ``run --follow`` line whose further round may have made a run no line names."""
    return next_round_outcome(obj) in ROUND_LANDED


def next_round_outcome(obj: Mapping[str, Any]) -> str | None:
    """A ``run --follow`` results line's ``next_round.outcome``, if it holds one."""
    next_round = obj.get("next_round")
    outcome = next_round.get("outcome") if isinstance(next_round, dict) else None
    return outcome if isinstance(outcome, str) else None
