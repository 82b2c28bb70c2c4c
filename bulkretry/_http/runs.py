"""What Flow Service says of a run, as a listing (or a look-up) gets it: :class:`ListedRun`.

Each item of a ``GET /runs`` page becomes a :class:`ListedRun`, or is left out when it does not
hold a clean run ID. Its other fields are the server's own text, kept as one safe line each
(:func:`~bulkretry._text.one_line`); of the reasons it failed, a few at most.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import orjson

from .._text import server_text

__all__ = ["ListedRun"]

_MAX_ERRORS = 5
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedRun:
    """One failed run as listed: its ID, its flow, when it ran, and why it failed."""

    run_id: str
    flow_id: str | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    status: str | None = None
    errors: tuple[tuple[str | None, str | None], ...] = ()

    @classmethod
    def from_item(cls, item: object) -> ListedRun | None:
        """Read one item of a page; None if it has no usable run ID."""
        if not isinstance(item, dict):
            return None
        run_id = item.get("id")
        if not isinstance(run_id, str) or not _is_clean(run_id):
            return None
        metrics = _dict(item.get("metrics"))
        duration = _dict(metrics.get("durationSummary"))
        summary = _dict(metrics.get("statusSummary"))
        return cls(
            run_id=run_id,
            flow_id=server_text(item.get("flowId")),
            started_at_ms=_millis(duration.get("startedAtUTC")),
            completed_at_ms=_millis(duration.get("completedAtUTC")),
            status=server_text(summary.get("status")),
            errors=_errors(item, summary),
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


def _is_clean(text: str) -> bool:
    """Tell whether ``text`` can stand alone on an output line: printable, no spaces."""
    return bool(text) and text.isprintable() and not any(c.isspace() for c in text)


def _millis(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
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


def _errors(
    item: dict[str, Any], summary: dict[str, Any]
) -> tuple[tuple[str | None, str | None], ...]:
    """Collect the failure reasons of the run, then of its activities, a few at most."""
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
