"""What a listing asks for and what it gets: :class:`ListQuery` and :class:`ListedRun`.

A query becomes ``property`` filters of ``GET /runs``; each item of a page becomes a
:class:`ListedRun`, or is left out when it does not hold a clean run ID or contradicts the
filters (a server that ignored one must not make ``run`` re-trigger the wrong runs).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .._exceptions import ConfigurationError

__all__ = ["DEFAULT_PAGE_SIZE", "ListQuery", "ListedRun", "shorten"]

#: Runs asked for per page (the ``limit`` parameter).
DEFAULT_PAGE_SIZE = 100
FAILED = "failed"
STATUS_FIELD = "metrics.statusSummary.status"
STARTED_FIELD = "metrics.durationSummary.startedAtUTC"

#: What a flow ID may contain: enough for UUIDs, nothing that the filter syntax reads (``,=<>``).
_FLOW_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_ERRORS = 5
_MAX_MESSAGE = 300
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListQuery:
    """What to list: failed runs of ``flow_ids`` (or of every flow), started in a window.

    ``since_ms`` and ``until_ms`` are epoch milliseconds, both exclusive, as the API's ``>``
    and ``<`` filters are. Listing every flow must be asked for with ``all_flows``.
    """

    flow_ids: tuple[str, ...] = ()
    all_flows: bool = False
    since_ms: int | None = None
    until_ms: int | None = None
    page_size: int | None = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        if not self.flow_ids and not self.all_flows:
            raise ConfigurationError(
                "name the flows with --flow-id, or list them all (--all-flows)"
            )
        if self.flow_ids and self.all_flows:
            raise ConfigurationError("--flow-id and --all-flows cannot be used together")
        for flow_id in self.flow_ids:
            if not _FLOW_ID.fullmatch(flow_id):
                raise ConfigurationError(
                    f"flow ID {flow_id!r} is not valid (expected a UUID such as "
                    "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d)"
                )
        if (
            self.since_ms is not None
            and self.until_ms is not None
            and self.since_ms >= self.until_ms
        ):
            raise ConfigurationError("--since must be earlier than --until")
        if self.page_size is not None and self.page_size < 1:
            raise ConfigurationError("the page size must be at least 1")

    def flows(self) -> tuple[str | None, ...]:
        """Return the flows to list one after another; None stands for every flow."""
        return tuple(dict.fromkeys(self.flow_ids)) or (None,)

    def params(self, flow_id: str | None) -> list[tuple[str, str]]:
        """Return the first page's query parameters for ``flow_id`` (None: every flow)."""
        properties = [] if flow_id is None else [f"flowId=={flow_id}"]
        properties.append(f"{STATUS_FIELD}=={FAILED}")
        if self.since_ms is not None:
            properties.append(f"{STARTED_FIELD}>{self.since_ms}")
        if self.until_ms is not None:
            properties.append(f"{STARTED_FIELD}<{self.until_ms}")
        params = [("property", p) for p in properties]
        if self.page_size is not None:
            params.append(("limit", str(self.page_size)))
        return params

    def admits(self, run: ListedRun, flow_id: str | None) -> bool:
        """Tell whether ``run`` fits the filters as far as it shows (the API may ignore one)."""
        if run.status is not None and run.status.casefold() != FAILED:
            return False
        if flow_id is not None and run.flow_id is not None and run.flow_id != flow_id:
            return False
        started = run.started_at_ms
        if started is not None:
            if self.since_ms is not None and started <= self.since_ms:
                return False
            if self.until_ms is not None and started >= self.until_ms:
                return False
        return True


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
        status = summary.get("status")
        flow_id = item.get("flowId")
        return cls(
            run_id=run_id,
            flow_id=flow_id if isinstance(flow_id, str) else None,
            started_at_ms=_millis(duration.get("startedAtUTC")),
            completed_at_ms=_millis(duration.get("completedAtUTC")),
            status=status if isinstance(status, str) else None,
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


def shorten(value: object) -> str | None:
    """Return ``value`` on one line, cut to a readable length; None when it is no string."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


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
            entry = (shorten(error.get("code")), shorten(error.get("message")))
            if entry != (None, None):
                found[entry] = None
            if len(found) >= _MAX_ERRORS:
                return tuple(found)
    return tuple(found)
