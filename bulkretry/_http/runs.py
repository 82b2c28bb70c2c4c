"""What Flow Service says of a failed run, as ``list-failed`` gets it: :class:`ListedRun`.

Each item of a ``GET /runs`` page becomes a :class:`ListedRun`, or is left out when it does not
hold a clean run ID. Its other fields are the server's own text, kept as one safe line each
(:func:`~bulkretry._text.one_line`); of the reasons it failed, a few at most. The readers of an
item's parts (:func:`clean_id`, :func:`millis`, :func:`run_errors`) serve the look-ups'
:class:`~bulkretry._http.lookups.RunView` too.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any

import orjson

from .._text import server_text

__all__ = ["ListedRun", "clean_id", "millis", "run_errors"]

_MAX_ERRORS = 5
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedRun:
    """One failed run as listed: its ID, its flow, when it ran, and why it failed."""

    run_id: str
    flow_id: str | None = None
    created_at_ms: int | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    status: str | None = None
    errors: tuple[tuple[str | None, str | None], ...] = ()

    @classmethod
    def from_item(cls, item: object) -> ListedRun | None:
        """Read one item of a page; None if it has no usable run ID."""
        if not isinstance(item, dict):
            return None
        run_id = clean_id(item.get("id"))
        if run_id is None:
            return None
        metrics = _dict(item.get("metrics"))
        duration = _dict(metrics.get("durationSummary"))
        summary = _dict(metrics.get("statusSummary"))
        return cls(
            run_id=run_id,
            flow_id=server_text(item.get("flowId")),
            created_at_ms=millis(item.get("createdAt")),
            started_at_ms=millis(duration.get("startedAtUTC")),
            completed_at_ms=millis(duration.get("completedAtUTC")),
            status=server_text(summary.get("status")),
            errors=run_errors(item),
        )

    def to_json(self) -> dict[str, object]:
        """Return the ``--format jsonl`` record; ``bulkretry run`` reads its ``run_id``."""
        return {
            "run_id": self.run_id,
            "flow_id": self.flow_id,
            "started_at": _iso(self.started_at_ms),
            "completed_at": _iso(self.completed_at_ms),
            "status": self.status,
            "errors": [{"code": code, "message": message} for code, message in self.errors],
        }

    def to_json_line(self) -> bytes:
        """Return :meth:`to_json` as one line of JSON, newline included."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_APPEND_NEWLINE)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def clean_id(value: object) -> str | None:
    """Return ``value`` if it is an ID that can stand alone on an output line, else None.

    Printable, no spaces: a server's ID that is not so is no ID at all.
    """
    if not isinstance(value, str) or not value:
        return None
    if not value.isprintable() or any(c.isspace() for c in value):
        return None
    return value


def millis(value: object) -> int | None:
    """Return an epoch-milliseconds field as an int; None if it is not a (finite) number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    try:
        when = _EPOCH + datetime.timedelta(milliseconds=ms)
    except OverflowError:
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_errors(item: dict[str, Any]) -> tuple[tuple[str | None, str | None], ...]:
    """Collect ``(code, message)`` of the run's failure reasons, then its activities', a few.

    Each is one safe line (:func:`~bulkretry._text.server_text`); pairs without either are left
    out, and so are repeats.
    """
    summary = _dict(_dict(item.get("metrics")).get("statusSummary"))
    lists: list[object] = [summary.get("errors")]
    # The spec spells the field "activites"; the live API is said to write "activities".
    for key in ("activities", "activites"):
        activities = item.get(key)
        if isinstance(activities, list):
            for activity in activities:
                status = _dict(_dict(activity).get("statusSummary"))
                lists.append(status.get("errors"))
    found: dict[tuple[str | None, str | None], None] = {}
    for errors in lists:
        if not isinstance(errors, list):
            continue
        for error in errors:
            error = _dict(error)
            entry = (server_text(error.get("code")), server_text(error.get("message")))
            if entry != (None, None):
                found[entry] = None
            if len(found) >= _MAX_ERRORS:
                return tuple(found)
    return tuple(found)
