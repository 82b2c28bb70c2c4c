"""When a results line's doubt arose: a look-up's verdict settles the doubts before it, not after.

``check`` writes its verdict on a run in doubt into that run's line and keeps the line's
``finished_at``. Fed back, a ``not_processed`` verdict outranks the ``in_doubt`` it resolves, and
the run is sent again. Should that request's answer be lost too, the new ``in_doubt`` line is a
doubt the verdict never looked at: it must win over the verdict, or the run is sent a third
time. So a line's doubt has a time, its ``finished_at``, when the line's own pass sent the run
(a verdict or an ``in_doubt`` line), or for a ``run --follow`` line whose further round may have
landed. A line held from an earlier pass (``attempts`` 0) only repeats an older doubt, and has
none; so does a verdict written into it.
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

    *outcome* is the one the line stands for. Only a line whose own pass sent the run has a
    time, its ``finished_at``: a verdict written into it settles the doubts up to then, and an
    ``in_doubt`` line raises one then; so does a ``run --follow`` line whose further round may
    have landed, for its chain's last run. A verdict written into a line held from an earlier
    pass has none: its ``finished_at`` is when the run was held, later than any request the
    look-up saw.
    """
    if isinstance(obj.get("resolved_by"), str):
        # check replaced the line's error with its verdict's (an interrupted request's kind is
        # gone): that the line's pass sent the run is its attempts alone.
        attempts = obj.get("attempts")
        sent = isinstance(attempts, int) and attempts >= 1
    else:
        sent = outcome == "in_doubt" and sent_by_its_pass(obj)
    if sent or _round_in_doubt(obj):
        return instant_ms(obj.get("finished_at"))
    return None


def _round_in_doubt(obj: Mapping[str, Any]) -> bool:
    """True for a ``run --follow`` line whose further round may have made a run no line names."""
    round_ = obj.get("next_round")
    outcome = round_.get("outcome") if isinstance(round_, dict) else None
    return outcome in ("in_doubt", "retriggered", "already_retriggered")
