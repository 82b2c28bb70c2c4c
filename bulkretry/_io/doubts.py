"""When a results line's doubt arose: a look-up's verdict settles the doubts before it, not after.

``check`` writes its verdict on a run in doubt into that run's line and keeps the line's
``finished_at``. Fed back, a ``not_processed`` verdict outranks the ``in_doubt`` it resolves, and
the run is sent again. Should that request's answer be lost too, the new ``in_doubt`` line is a
doubt the verdict never looked at: it must win over the verdict, or the run is sent a third
time. So a line's doubt has a time: its ``finished_at``, for a verdict and for an ``in_doubt``
line whose own pass sent the run. A line held from an earlier pass (``attempts`` 0) only
repeats an older doubt, and has none.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

__all__ = ["doubt_at", "instant_ms", "sent_by_its_pass"]


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
    error = obj.get("error")
    kind = error.get("kind") if isinstance(error, dict) else None
    return (isinstance(ambiguous, int) and ambiguous >= 1) or kind == "interrupted"


def doubt_at(obj: Mapping[str, Any], outcome: str | None) -> int | None:
    """Return when the doubt a line speaks of arose (epoch ms), or None when it has no time.

    *outcome* is the one the line stands for. A verdict (``resolved_by``) settles the doubts up
    to its ``finished_at``; an ``in_doubt`` line its pass sent raises a doubt then.
    """
    if isinstance(obj.get("resolved_by"), str) or (outcome == "in_doubt" and sent_by_its_pass(obj)):
        return instant_ms(obj.get("finished_at"))
    return None
