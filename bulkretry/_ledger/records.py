"""The values a ledger answers with: what it knew of a run, and which batch a file belongs to.

Nothing here touches SQLite: :func:`admission_of` turns a row the ledger read into an
:class:`Admission`, whoever read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from .._model import ErrorInfo

__all__ = [
    "DUPLICATE",
    "FINAL_STATES",
    "IDENTITY_FIELDS",
    "NEW",
    "STATES",
    "Admission",
    "BatchIdentity",
    "PriorState",
    "Record",
    "admission_of",
]

#: Every value of ``runs.state``; ``in_flight`` at rest (no process holds the lock) is in doubt.
STATES = (
    "pending",
    "in_flight",
    "retriggered",
    "already_retriggered",
    "failed",
    "in_doubt",
    "not_attempted",
)
#: The states :meth:`Ledger.outcome` may record.
FINAL_STATES = frozenset(
    {"retriggered", "already_retriggered", "failed", "in_doubt", "not_attempted"}
)
#: ``(run_id, source, line)``: a run as the input named it.
Record = tuple[str, str, int]
#: The fields of :class:`BatchIdentity`, as the ledger's ``meta`` table keeps them.
IDENTITY_FIELDS = ("base_url", "org_id", "sandbox", "op")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchIdentity:
    """What makes two invocations the same batch; a ledger refuses any other."""

    base_url: str
    org_id: str
    sandbox: str
    op: str


class PriorState(StrEnum):
    """What the ledger knew of a run when the feeder admitted it."""

    NEW = "new"  # never seen: now recorded as pending
    PENDING = "pending"  # known, and never sent, not attempted or failed: send it
    RETRIGGERED = "retriggered"  # done (``retriggered`` or ``already_retriggered``)
    IN_DOUBT = "in_doubt"  # a request may have landed: send only if told to
    DUPLICATE = "duplicate"  # already admitted in this invocation


_PRIOR = {
    "pending": PriorState.PENDING,
    "not_attempted": PriorState.PENDING,
    "failed": PriorState.PENDING,
    "retriggered": PriorState.RETRIGGERED,
    "already_retriggered": PriorState.RETRIGGERED,
    "in_doubt": PriorState.IN_DOUBT,
    "in_flight": PriorState.IN_DOUBT,
}


class Admission(NamedTuple):
    """The answer to ``Ledger.admit``; ``recorded`` is the ledger's state of the run.

    A named tuple rather than a frozen dataclass: a resume builds one per run, and this is
    built five times faster.
    """

    state: PriorState
    recorded: str | None = None
    new_run_id: str | None = None
    etag: str | None = None
    attempts: int = 0
    ambiguous: int = 0
    error: ErrorInfo | None = None
    #: The run's ``seq`` when it is a run of an earlier invocation (else 0): a key for marks
    #: far cheaper than its run ID.
    seq: int = 0


NEW = Admission(PriorState.NEW, "pending")
DUPLICATE = Admission(PriorState.DUPLICATE)
_new = tuple.__new__


def admission_of(row: tuple[Any, ...]) -> Admission:
    """Turn a row of ``schema.lookup_sql`` into the :class:`Admission` of a known run."""
    state = row[3]
    error = row[8]
    return _new(
        Admission,
        (
            _PRIOR[state],
            state,
            row[4],
            row[5],
            row[6],
            row[7],
            None if error is None else _error_info(error),
            row[2],
        ),
    )


def _error_info(text: str) -> ErrorInfo:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return ErrorInfo(kind="unknown", message=text)

    def get(key: str) -> str | None:
        value = obj.get(key)
        return None if value is None else str(value)

    return ErrorInfo(
        kind=get("kind") or "unknown",
        message=get("message") or "",
        error_code=get("error_code"),
        type=get("type"),
    )
