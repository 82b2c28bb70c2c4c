"""Decide, after each attempt, whether a record is done, retried (and after how long), or stops.

Everything about classification lives in :func:`decide`, and nowhere else. ``failed`` means
known not to have been processed: once any attempt of a record was ambiguous, every verdict
marked † below is ``in_doubt`` instead of ``failed`` (same kind and code, and a message that says
an earlier attempt may have re-triggered the run).

=====================================  ==========  =========================================
what happened                          processed?  decision
=====================================  ==========  =========================================
2xx with a new run ID                  yes         succeed
2xx without one                        maybe       ``in_doubt``, ``bad_response``, counted as
                                                   ambiguous; never retried
3xx                                    no          fail†, ``http`` (never followed for a POST)
429                                    no          retry after max(Retry-After, backoff);
                                                   slows the shared throttle
503                                    no          retry after max(Retry-After, backoff)
500, 502, 504, other 5xx               maybe       ``--on-ambiguous hold`` (default):
                                                   ``in_doubt``; ``retry``: retry, counted as
                                                   ambiguous
501, 505                               no          fail† (the server cannot do this at all)
connect failed, request not sent       no          retry after backoff
timeout or reset after sending         maybe       as 500
400 1409/1422/1444, 409                no          fail†; after an ambiguous attempt the
                                                   message says it probably went through
400 1434 (unsupported operation)       no          halt the batch: the ``--op`` is wrong
401, 403                               no          halt the batch (or renew the token)
404 in Flow Service's error format     no          fail†
404 in any other format                no          halt: the base URL is not Flow Service
other 4xx                              no          fail†
=====================================  ==========  =========================================

A retry is given up when attempts reach ``max_attempts`` or the wait would pass the record's
deadline: the record ends ``failed``† (``in_doubt`` if that last attempt was ambiguous). A
``Retry-After`` beyond ``retry_after_cap`` halts the batch rather than retrying early. A halt
stays a halt whatever came before; the engine reports a record that had an ambiguous attempt
``in_doubt``.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeGuard

from ._config import Settings
from ._exceptions import TransportError
from ._http.client import Answer, one_line
from ._model import ErrorInfo

__all__ = [
    "Action",
    "Decision",
    "adobe_error",
    "backoff_delay",
    "decide",
    "parse_retry_after",
]

_FLOW_CODE = re.compile(r"FLOW-(\d+)-(\d+)")
_STATE_CONFLICT_CODES = frozenset({"1409", "1422", "1444"})
_UNSUPPORTED_OP_CODE = "1434"
#: Run IDs are 36 characters and etags about 40; a longer "ID" is a broken answer.
_MAX_ID_CHARS = 256
#: What a refusal's message adds once an earlier attempt of the record was ambiguous.
_EARLIER_MAYBE = "an earlier ambiguous attempt may have re-triggered the run"
_EARLIER_PROBABLY = "an earlier ambiguous attempt probably re-triggered the run"


class Action(Enum):
    """What the engine does next with a record."""

    SUCCEED = "succeed"
    RETRY = "retry"
    FAIL = "fail"
    IN_DOUBT = "in_doubt"
    HALT = "halt"


# Not frozen: one is made per attempt, and a frozen dataclass's __init__ costs twice as much.
@dataclass(slots=True, kw_only=True)
class Decision:
    """The verdict on one attempt.

    ``delay`` is the wait before the next attempt (``RETRY``); ``throttled`` tells the shared
    throttle to slow down; ``ambiguous`` says the attempt may have re-triggered the run;
    ``token_expired`` asks for a token renewal (401 ``401013``) before the batch gives up.
    """

    action: Action
    delay: float = 0.0
    error: ErrorInfo | None = None
    ambiguous: bool = False
    throttled: bool = False
    retry_after: float | None = None
    token_expired: bool = False
    new_run_id: str | None = None
    etag: str | None = None
    halt_reason: str | None = None


def parse_retry_after(value: str | None, *, wall_now: float) -> float | None:
    """Return the seconds a ``Retry-After`` value asks for (either RFC 9110 form), or None."""
    if value is None:
        return None
    value = value.strip()
    # str.isdigit() also accepts superscripts and non-ASCII digits, which RFC 9110 does not.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # An HTTP-date is always GMT; the asctime form carries no zone at all.
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - wall_now)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Return a full-jitter wait after attempt ``n``: uniform in [0, min(cap, base·2ⁿ⁻¹)]."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, ceiling)


def adobe_error(body: Any) -> tuple[str | None, str | None, str | None]:
    """Return ``(error_code, type, message)`` from a gateway or Flow Service error body."""
    if not isinstance(body, dict):
        return None, None, None
    code = body.get("error_code")
    etype = body.get("type")
    message = body.get("message") or body.get("title")
    report = body.get("report")
    if isinstance(report, dict) and isinstance(report.get("detailed-message"), str):
        message = report["detailed-message"]
    if isinstance(etype, str) and code is None:
        match = _FLOW_CODE.search(etype)
        if match:
            code = f"FLOW-{match.group(1)}-{match.group(2)}"
    return (
        str(code) if code is not None else None,
        etype if isinstance(etype, str) else None,
        message if isinstance(message, str) else None,
    )


def _is_flow_service_error(body: Any) -> bool:
    code, etype, _ = adobe_error(body)
    return code is not None or (etype is not None and "ns.adobe.com" in etype)


def _flow_number(code: str | None) -> str | None:
    if code is None:
        return None
    match = _FLOW_CODE.fullmatch(code)
    return match.group(1) if match else None


def _success_fields(answer: Answer) -> tuple[str | None, str | None]:
    """Find the new run's ID and etag in any of the three shapes Adobe documents."""
    body = answer.body
    if isinstance(body, dict):
        items = body.get("items")
        if "id" not in body and isinstance(items, list) and items and isinstance(items[0], dict):
            body = items[0]
        new_id = body.get("id")
        etag = body.get("etag", body.get("eTag"))
        if _plausible(new_id):
            return new_id, etag if _plausible(etag) else answer.etag_header
    return None, None


def _plausible(value: object) -> TypeGuard[str]:
    """A run ID or etag is a short printable string; anything else is no answer at all."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS and value.isprintable()


def _http_error(answer: Answer, fallback: str) -> ErrorInfo:
    code, etype, message = adobe_error(answer.body)
    # Whatever the server wrote is shown as one short printable line (logs, halt reasons).
    text = f"HTTP {answer.status}: {one_line(message or fallback)}"
    return ErrorInfo(
        kind="http",
        message=text,
        error_code=one_line(code) if code is not None else None,
        type=one_line(etype, 1000) if etype is not None else None,
    )


def decide(
    outcome: Answer | TransportError,
    *,
    attempt: int,
    ambiguous_before: int,
    elapsed: float,
    settings: Settings,
    rng: random.Random,
    wall_now: float,
) -> Decision:
    """Classify one attempt's ``outcome`` and decide what happens next (see the module table)."""
    retry_after: float | None = None
    throttled = False
    if isinstance(outcome, TransportError):
        error = ErrorInfo(kind=outcome.kind, message=str(outcome))
        if outcome.kind == "tls":
            # A certificate that cannot be verified fails every record alike: stop, once.
            return Decision(action=Action.HALT, error=error, halt_reason=str(outcome))
        ambiguous = outcome.sent
    else:
        answer = outcome
        status = answer.status
        if 200 <= status < 300:
            new_id, etag = _success_fields(answer)
            if new_id is not None:
                return Decision(action=Action.SUCCEED, new_run_id=new_id, etag=etag)
            # A 2xx says the service took the request: without the new run's ID nobody can tell
            # whether it re-triggered the run, and sending it again could ingest it twice.
            problem = answer.body_problem or "the body has no new run ID"
            error = ErrorInfo(
                kind="bad_response", message=f"HTTP {status} without a new run ID ({problem})"
            )
            if ambiguous_before:
                error = _noted(error, _EARLIER_MAYBE)
            return Decision(action=Action.IN_DOUBT, error=error, ambiguous=True)
        if 300 <= status < 400:
            redirect = f"redirect to {answer.location or '?'} not followed"
            return _refused(_http_error(answer, redirect), ambiguous_before)
        code, _, _ = adobe_error(answer.body)
        number = _flow_number(code)
        if status in (401, 403):
            error = _http_error(answer, "access refused")
            expired = status == 401 and code == "401013"
            reason = (
                f"the API refused the credentials ({error.message}); "
                "check the token, API key, org and sandbox"
            )
            return Decision(
                action=Action.HALT, error=error, token_expired=expired, halt_reason=reason
            )
        if status == 400 and number == _UNSUPPORTED_OP_CODE:
            other = "RE_TRIGGER" if settings.op != "RE_TRIGGER" else "re-trigger"
            return Decision(
                action=Action.HALT,
                error=_http_error(answer, "unsupported operation"),
                halt_reason=(
                    f"Flow Service does not support op={settings.op!r} (error 1434); "
                    f"try --op {other}"
                ),
            )
        if status == 409 or (status == 400 and number in _STATE_CONFLICT_CODES):
            # The run is no longer failed: evidence that an earlier ambiguous attempt went through.
            error = _http_error(answer, "operation not allowed in the current state")
            return _refused(error, ambiguous_before, _EARLIER_PROBABLY)
        if status == 404 and not _is_flow_service_error(answer.body):
            return Decision(
                action=Action.HALT,
                error=_http_error(answer, "not found"),
                halt_reason=(
                    f"{settings.base_url} answered 404 in a format that is not Flow Service's; "
                    "check --base-url"
                ),
            )
        if status == 429 or status == 503:
            retry_after = parse_retry_after(answer.retry_after, wall_now=wall_now)
            throttled = status == 429 or retry_after is not None
            error = _http_error(answer, "too many requests" if status == 429 else "unavailable")
            ambiguous = False
        elif status in (501, 505) or 400 <= status < 500:
            return _refused(_http_error(answer, "request refused"), ambiguous_before)
        else:
            error = _http_error(answer, "server error")
            ambiguous = True

    return _retry_or_give_up(
        error,
        ambiguous=ambiguous,
        throttled=throttled,
        retry_after=retry_after,
        attempt=attempt,
        ambiguous_before=ambiguous_before,
        elapsed=elapsed,
        settings=settings,
        rng=rng,
    )


def _retry_or_give_up(
    error: ErrorInfo,
    *,
    ambiguous: bool,
    throttled: bool,
    retry_after: float | None,
    attempt: int,
    ambiguous_before: int,
    elapsed: float,
    settings: Settings,
    rng: random.Random,
) -> Decision:
    def verdict(
        action: Action, err: ErrorInfo, delay: float = 0.0, halt: str | None = None
    ) -> Decision:
        return Decision(
            action=action,
            error=err,
            delay=delay,
            halt_reason=halt,
            ambiguous=ambiguous,
            throttled=throttled,
            retry_after=retry_after,
        )

    def give_up(why: str) -> Decision:
        if ambiguous:
            return verdict(Action.IN_DOUBT, _gave_up(error, why))
        if ambiguous_before > 0:
            return verdict(Action.IN_DOUBT, _noted(_gave_up(error, why), _EARLIER_MAYBE))
        return verdict(Action.FAIL, _gave_up(error, why))

    if ambiguous and settings.on_ambiguous == "hold":
        return verdict(Action.IN_DOUBT, error)
    if retry_after is not None and retry_after > settings.retry_after_cap:
        return verdict(
            Action.HALT,
            error,
            halt=(
                f"the server asked to wait {retry_after:.0f} s before retrying, more than "
                f"the {settings.retry_after_cap:.0f} s cap; run the batch again after that"
            ),
        )
    if attempt >= settings.max_attempts:
        return give_up(f"gave up after {attempt} attempts")
    delay = backoff_delay(attempt, base=settings.backoff_base, cap=settings.backoff_cap, rng=rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if elapsed + delay > settings.deadline:
        return give_up(f"gave up: the next wait would pass the {settings.deadline:g} s deadline")
    return verdict(Action.RETRY, error, delay)


def _refused(error: ErrorInfo, ambiguous_before: int, note: str = _EARLIER_MAYBE) -> Decision:
    """Fail a refused request, or hold it in doubt when an earlier attempt may have gone through."""
    if ambiguous_before:
        return Decision(action=Action.IN_DOUBT, error=_noted(error, note))
    return Decision(action=Action.FAIL, error=error)


def _noted(error: ErrorInfo, note: str) -> ErrorInfo:
    return ErrorInfo(
        kind=error.kind,
        message=f"{error.message} ({note})",
        error_code=error.error_code,
        type=error.type,
    )


def _gave_up(error: ErrorInfo, why: str) -> ErrorInfo:
    return ErrorInfo(
        kind=error.kind,
        message=f"{error.message}; {why}",
        error_code=error.error_code,
        type=error.type,
    )
