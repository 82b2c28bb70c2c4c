"""Decide, before any request, what becomes of an input record: send it, or say why not.

A record is not sent when it is invalid, when its run was already seen in this batch, when a
results line fed back in says it is done (or in doubt), or when the state file knows it is done
or in doubt from an earlier invocation. Everything else is sent (or, with ``--dry-run``,
reported as ``would_retrigger``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._config import Settings
from ._dedup import SeenSet
from ._result import ErrorInfo, Outcome
from ._source import InputRecord

if TYPE_CHECKING:
    from ._ledger import Admission

__all__ = ["Triage", "Verdict"]

# PriorState values, compared as strings so that batches without --state never load sqlite3.
_DUPLICATE, _RETRIGGERED, _IN_DOUBT = "duplicate", "retriggered", "in_doubt"

#: Outcomes of a results line that mean the run was re-triggered already: never send it again.
_DONE = frozenset({Outcome.RETRIGGERED.value, Outcome.ALREADY_RETRIGGERED.value})
_HELD = "it may have been re-triggered already; pass --retry-in-doubt to send it again"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A record's outcome without a request; ``durable`` asks for it in the state file."""

    outcome: Outcome
    error: ErrorInfo | None = None
    new_run_id: str | None = None
    etag: str | None = None
    attempts: int = 0
    durable: bool = False


class Triage:
    """Judge records in input order; keeps the in-memory set of runs seen when no ledger does."""

    def __init__(self, settings: Settings, *, with_ledger: bool) -> None:
        self._only = settings.only
        self._retry_in_doubt = settings.retry_in_doubt
        self._seen = None if with_ledger else SeenSet()

    def __repr__(self) -> str:
        return f"Triage(seen={self._seen!r}, only={sorted(self._only or ())})"

    def admissible(self, record: InputRecord) -> bool:
        """True for a record the state file should know: valid, and not skipped by ``--only``."""
        return record.run_id is not None and not self._skipped(record)

    def _skipped(self, record: InputRecord) -> bool:
        return self._only is not None and record.prior not in self._only

    def judge(self, record: InputRecord, admission: Admission | None = None) -> Verdict | None:
        """Return the record's outcome if it is not to be sent, else None."""
        if record.run_id is None:
            message = record.error or "not a valid run ID"
            return Verdict(Outcome.INVALID, ErrorInfo(kind="invalid_input", message=message))
        if self._skipped(record):
            return Verdict(Outcome.SKIPPED)
        if admission is not None:
            if admission.state == _DUPLICATE:
                return Verdict(Outcome.DUPLICATE)
        elif self._seen is not None and not self._seen.add(record.run_id):
            return Verdict(Outcome.DUPLICATE)
        if record.prior in _DONE:
            return Verdict(
                Outcome.ALREADY_RETRIGGERED,
                new_run_id=record.prior_new_run_id,
                etag=record.prior_etag,
                durable=True,
            )
        if record.prior == Outcome.IN_DOUBT and not self._retry_in_doubt:
            error = ErrorInfo(kind="in_doubt", message="in doubt in an earlier run: " + _HELD)
            return Verdict(Outcome.IN_DOUBT, error, durable=True)
        if admission is None:
            return None
        if admission.state == _RETRIGGERED:
            return Verdict(
                Outcome.ALREADY_RETRIGGERED,
                new_run_id=admission.new_run_id,
                etag=admission.etag,
                attempts=admission.attempts,
            )
        if admission.state == _IN_DOUBT and not self._retry_in_doubt:
            message = "in doubt since an earlier run of this batch: " + _HELD
            return Verdict(
                Outcome.IN_DOUBT,
                ErrorInfo(kind="in_doubt", message=message),
                attempts=admission.attempts,
            )
        return None
