"""The values that cross stages: an HTTP :class:`Answer`; a :class:`RunResult` per input record.

A results line is one :class:`RunResult` written as one JSON line.
"""

from __future__ import annotations

import datetime  # noqa: F401 (see below)
import json  # noqa: F401
import time
import uuid  # noqa: F401
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# orjson's module init imports datetime, json and uuid (and dataclasses, enum), and crashes the
# process (SIGSEGV) when one of those imports fails, as a Ctrl-C in the middle of it makes it
# (ijl/orjson#310). Imported first, they are only looked up: the init takes a fraction of a
# millisecond instead of ~15 ms at the start of every command.
import orjson

__all__ = [
    "DONE_OUTCOMES",
    "FINAL_STATUSES",
    "ROUND_ANOTHERS",
    "ROUND_LANDED",
    "ROUND_MAY_HAVE_LANDED",
    "ROUND_SEND",
    "Answer",
    "ErrorInfo",
    "Followed",
    "Outcome",
    "QuotaHeaders",
    "RunResult",
    "utc_now_iso",
]


# Not frozen: one is made per request, and a frozen dataclass's __init__ costs twice as much.
@dataclass(slots=True, kw_only=True)
class Answer:
    """An HTTP answer, reduced to what the retry policy and the output need.

    ``body`` is the parsed JSON (None when it could not be had: ``body_problem`` says why).
    """

    status: int
    body: Any = None
    body_problem: str | None = None
    retry_after: str | None = None
    request_id: str | None = None
    etag_header: str | None = None
    location: str | None = None
    #: What the answer's RateLimit-* / X-RateLimit-* headers said of the quota, if any.
    quota: QuotaHeaders | None = None


@dataclass(frozen=True, slots=True)
class QuotaHeaders:
    """The quota's state as an answer's headers told it (each None when not told).

    *limit*: requests allowed per window; *remaining*: left in this one; *reset*: seconds from
    the answer until it is all back; *window*: the policy's window, in seconds.
    """

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    window: float | None = None


class Outcome(StrEnum):
    """What became of one input record; the ``outcome`` field of a results line."""

    RETRIGGERED = "retriggered"
    ALREADY_RETRIGGERED = "already_retriggered"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    WOULD_RETRIGGER = "would_retrigger"
    IN_DOUBT = "in_doubt"
    NOT_ATTEMPTED = "not_attempted"
    SKIPPED = "skipped"


#: Whether a further round (``run --follow``) may re-trigger a failed run: yes; no, the run is
#: another line's (an input line of the batch, another record's chain); no, a request for it
#: may have landed already. The state file answers these (``_ledger.chains``).
ROUND_SEND, ROUND_ANOTHERS, ROUND_MAY_HAVE_LANDED = "send", "duplicate", "in_doubt"

#: Outcomes that mean the run was re-triggered: never send it again.
DONE_OUTCOMES = frozenset({Outcome.RETRIGGERED.value, Outcome.ALREADY_RETRIGGERED.value})
#: A further round's outcomes (``next_round.outcome``) that say its request may have landed:
#: the chain's last run may not be its last.
ROUND_LANDED = frozenset({Outcome.IN_DOUBT.value, *DONE_OUTCOMES})


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """Why a record did not succeed: a ``kind`` (``http``, ``network``…) and one sentence."""

    kind: str
    message: str
    error_code: str | None = None
    type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form, leaving out fields the API did not send."""
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.error_code is not None:
            out["error_code"] = self.error_code
        if self.type is not None:
            out["type"] = self.type
        return out


_cached_second = -1
_cached_prefix = ""


def utc_now_iso() -> str:
    """Return the current UTC time as ISO-8601 with milliseconds and a ``Z``."""
    global _cached_second, _cached_prefix
    now = time.time()
    second = int(now)
    # Formatting the date is most of the cost; it changes once a second, not once a record.
    if second != _cached_second:
        _cached_second = second
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_cached_prefix}.{int((now - second) * 1000):03d}Z"


#: How a followed run ended: Flow Service's ``success``/``completed``, ``failed``, any partial
#: outcome, or ``unknown`` (still going when following timed out, or the run vanished).
FINAL_STATUSES = frozenset({"success", "failed", "partial", "unknown"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Followed:
    """What following a record's new runs found (``run --follow``, ``watch``).

    ``final_status`` is None for a record that was never followed (not re-triggered);
    ``chain`` holds the new run IDs in order (the last is the record's ``new_run_id``);
    ``final_error`` the codes and messages of the last run's status when it did not succeed.
    """

    final_status: str | None = None
    final_status_raw: str | None = None
    chain: tuple[str, ...] = ()
    final_error: tuple[tuple[str | None, str | None], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the keys this adds to a results line."""
        out: dict[str, Any] = {
            "final_status": self.final_status,
            "chain": list(self.chain),
            "rounds": len(self.chain),
        }
        if self.final_status_raw is not None:
            out["final_status_raw"] = self.final_status_raw
        if self.final_error:
            out["final_error"] = [
                {"code": code, "message": message} for code, message in self.final_error
            ]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """One results line. Field order is the documented schema's order.

    ``prior_outcome`` is the outcome of the line a ``skipped`` (or evidence-carrying
    ``duplicate``) line stands for, with that line's ``new_run_id`` and ``etag``: fed back in
    alone, such a line still says what became of the run. ``resolved_by`` (``"lookup"``) marks
    an outcome found by looking the run up after an unclear answer, with the ``candidates``
    when more than one new run could be its re-trigger; ``followed`` what following found;
    ``next_round`` the outcome (and ``next_error`` the error) of a further round's re-trigger
    that created no new run (``run --follow --rounds N``). Those only appear in the JSON when set.
    """

    run_id: str
    outcome: Outcome
    new_run_id: str | None = None
    etag: str | None = None
    prior_outcome: str | None = None
    http_status: int | None = None
    attempts: int = 0
    ambiguous_attempts: int = 0
    error: ErrorInfo | None = None
    request_id: str | None = None
    finished_at: str = ""
    source: str = ""
    line: int = 0
    resolved_by: str | None = None
    candidates: tuple[str, ...] = ()
    followed: Followed | None = None
    next_round: str | None = None
    next_error: ErrorInfo | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON object of this line."""
        out: dict[str, Any] = {
            "run_id": self.run_id,
            # _value_ is the member's plain attribute; .value goes through a descriptor.
            "outcome": self.outcome._value_,
            "new_run_id": self.new_run_id,
            "etag": self.etag,
            "prior_outcome": self.prior_outcome,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "ambiguous_attempts": self.ambiguous_attempts,
            "error": self.error.as_dict() if self.error is not None else None,
            "request_id": self.request_id,
            "finished_at": self.finished_at or utc_now_iso(),
            "source": self.source,
            "line": self.line,
        }
        if self.resolved_by is not None:
            out["resolved_by"] = self.resolved_by
            if self.candidates:
                out["candidates"] = list(self.candidates)
        if self.followed is not None:
            out.update(self.followed.as_dict())
        if self.next_round is not None:
            error = self.next_error.as_dict() if self.next_error is not None else None
            out["next_round"] = {"outcome": self.next_round, "error": error}
        return out

    def to_json_line(self) -> bytes:
        """Return the record as one JSON line, newline included."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_APPEND_NEWLINE)
