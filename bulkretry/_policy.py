"""Decide, after each attempt, whether a request is done, retried (and after how long), or stops.

This module is the one place to ask, for every request bulkretry makes: :func:`decide` for a
re-trigger, a POST that is not safe to repeat (the table below); :func:`decide_read` for a GET
and :func:`decide_token` for an IMS token request, both safe to repeat (their tables are in
:mod:`._retry`, with the waits all three share: full jitter, Retry-After, giving up).

For a re-trigger, ``failed`` means known not to have been processed: once any attempt of a
record was ambiguous, every verdict marked † below is ``in_doubt`` instead of ``failed`` (same
kind and code, and a message that says an earlier attempt may have re-triggered the run).

=====================================  ==========  =========================================
what happened                          processed?  decision
=====================================  ==========  =========================================
2xx with a new run ID                  yes         succeed
2xx without one                        maybe       ``in_doubt``, ``bad_response``, counted as
                                                   ambiguous; never retried
3xx                                    no          fail†, ``http`` (never followed for a POST)
429                                    no          retry after Retry-After (or backoff);
                                                   slows the shared throttle
503                                    no          retry after Retry-After (or backoff)
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

import random
from typing import Any, TypeGuard

from ._config import Settings
from ._exceptions import TransportError
from ._model import Answer, ErrorInfo
from ._retry import (
    Action,
    Decision,
    GiveUp,
    Limits,
    backoff_delay,
    decide_read,
    decide_token,
    next_try,
    parse_retry_after,
)
from ._text import FLOW_CODE, adobe_error, one_line

__all__ = [
    "Action",
    "Decision",
    "adobe_error",
    "backoff_delay",
    "decide",
    "decide_read",
    "decide_token",
    "parse_retry_after",
]

_STATE_CONFLICT_CODES = frozenset({"1409", "1422", "1444"})
_UNSUPPORTED_OP_CODE = "1434"
#: Run IDs are 36 characters and etags about 40; a longer "ID" is a broken answer.
_MAX_ID_CHARS = 256
#: What a refusal's message adds once an earlier attempt of the record was ambiguous.
_EARLIER_MAYBE = "an earlier ambiguous attempt may have re-triggered the run"
_EARLIER_PROBABLY = "an earlier ambiguous attempt probably re-triggered the run"


def _is_flow_service_error(body: Any) -> bool:
    code, etype, _ = adobe_error(body)
    return code is not None or (etype is not None and "ns.adobe.com" in etype)


def _flow_number(code: str | None) -> str | None:
    if code is None:
        return None
    match = FLOW_CODE.fullmatch(code)
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

    if ambiguous and settings.on_ambiguous != "retry":  # hold, or check: the engine looks
        return verdict(Action.IN_DOUBT, error)
    wait = next_try(
        attempt, elapsed=elapsed, retry_after=retry_after, limits=Limits.of(settings), rng=rng
    )
    if not isinstance(wait, GiveUp):
        return verdict(Action.RETRY, error, wait)
    if wait.over_cap:
        return verdict(Action.HALT, error, halt=f"{wait.reason}; run the batch again after that")
    if ambiguous:
        return verdict(Action.IN_DOUBT, _gave_up(error, wait.reason))
    if ambiguous_before > 0:
        return verdict(Action.IN_DOUBT, _noted(_gave_up(error, wait.reason), _EARLIER_MAYBE))
    return verdict(Action.FAIL, _gave_up(error, wait.reason))


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
