"""When to try a request again, and the decisions for requests that are safe to repeat.

:func:`next_try` is the one place where waits are computed, for every request bulkretry makes
(:func:`._policy.decide` asks it for re-triggers, and :func:`decide_read` and
:func:`decide_token` below for GETs and IMS token requests):

- the wait after attempt n is drawn uniformly from [0, min(cap, base·2ⁿ⁻¹)] (full jitter, so
  that clients refused at once do not come back at once);
- a ``Retry-After`` (either RFC 9110 form) is a floor on that wait, and one beyond
  ``retry_after_cap`` is not waited out: give up (``over_cap``);
- at ``max_attempts``, or when the wait would pass the ``deadline``, give up.

A GET (a listing page, a look-up) changes nothing, so any failure but a refusal is retried;
:func:`decide_read` (giving up is a ``HALT``, whose ``halt_reason`` says why):

==================================  ==================================================
what happened                       decision
==================================  ==================================================
200 with the body asked for         succeed
200 without it (HTML, cut short…)   retry
other 2xx, 3xx                      halt: a redirect could carry the token elsewhere
401 ``401013``                      halt, ``token_expired``: renew once, ask again
other 401, 403                      halt: the credentials are refused
404, other 4xx, 501, 505            halt
429, 503                            retry after Retry-After (backoff without one); a 429 or a
                                    Retry-After slows the throttle
other 5xx, network error, timeout   retry after backoff
TLS failure                         halt
==================================  ==================================================

An IMS token request (:func:`decide_token`) is retried after a 5xx, a 429 (Retry-After
honoured) or a failure below HTTP other than TLS; any other answer is final: ``SUCCEED`` for a
200 and ``FAIL`` otherwise, for the caller to read. Giving up is a ``FAIL`` saying why.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
from dataclasses import dataclass
from enum import Enum

from ._config import Settings
from ._exceptions import TransportError
from ._model import Answer, ErrorInfo
from ._text import adobe_error, one_line

__all__ = [
    "Action",
    "Decision",
    "GiveUp",
    "Limits",
    "backoff_delay",
    "decide_read",
    "decide_token",
    "next_try",
    "parse_retry_after",
]


class Action(Enum):
    """What happens next with a request (for a re-trigger: with its record)."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How far a request is retried: attempts, backoff, deadline, longest Retry-After obeyed.

    ``deadline`` counts seconds since the first attempt.
    """

    max_attempts: int
    backoff_base: float
    backoff_cap: float
    deadline: float = math.inf
    retry_after_cap: float = math.inf

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """Return the limits a batch's settings give every Flow Service request."""
        return cls(
            max_attempts=settings.max_attempts,
            backoff_base=settings.backoff_base,
            backoff_cap=settings.backoff_cap,
            deadline=settings.deadline,
            retry_after_cap=settings.retry_after_cap,
        )


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Why a request is not tried again; ``over_cap``: the server asked too long a wait."""

    reason: str
    over_cap: bool = False


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


def next_try(
    attempt: int,
    *,
    elapsed: float,
    retry_after: float | None,
    limits: Limits,
    rng: random.Random,
) -> float | GiveUp:
    """Return the wait before attempt ``attempt + 1``, or why there is none.

    ``elapsed`` is the time since the first attempt; ``retry_after`` what the server asked for.
    """
    if retry_after is not None and retry_after > limits.retry_after_cap:
        return GiveUp(
            f"the server asked to wait {retry_after:.0f} s before retrying, more than "
            f"the {limits.retry_after_cap:.0f} s cap",
            over_cap=True,
        )
    if attempt >= limits.max_attempts:
        return GiveUp(f"gave up after {attempt} attempts")
    if retry_after:
        # The server said when: that time, not a backoff grown by earlier attempts (the shared
        # throttle slows everyone when the quota is short; this run waits only its own time).
        # "0" (or a date past) says nothing of when: the backoff, or it would be sent in a loop.
        delay = retry_after
    else:
        delay = backoff_delay(attempt, base=limits.backoff_base, cap=limits.backoff_cap, rng=rng)
    if elapsed + delay > limits.deadline:
        return GiveUp(f"gave up: the next wait would pass the {limits.deadline:g} s deadline")
    return delay


def _read_error(answer: Answer) -> ErrorInfo:
    """Describe an answer to a GET in one safe line: ``HTTP <status> <code>: <message>``."""
    code, _, message = adobe_error(answer.body)
    text = f"HTTP {answer.status}"
    safe_code = one_line(code, 100) if code is not None else None
    if safe_code:
        text += f" {safe_code}"
    if message:
        text += f": {one_line(message)}"
    return ErrorInfo(kind="http", message=text, error_code=safe_code)


def decide_read(
    outcome: Answer | TransportError,
    *,
    attempt: int,
    elapsed: float,
    settings: Settings,
    rng: random.Random,
    wall_now: float,
    wanted: str = "the body asked for",
) -> Decision:
    """Classify one attempt at a GET and decide what happens next (see the module table).

    ``wanted`` names what a 200 should have held (``"a page of runs"``); a 200 whose
    ``body_problem`` is set did not hold it.
    """
    retry_after: float | None = None
    throttled = False
    if isinstance(outcome, TransportError):
        error = ErrorInfo(kind=outcome.kind, message=str(outcome))
        if outcome.kind == "tls":
            return Decision(action=Action.HALT, error=error, halt_reason=error.message)
    else:
        status = outcome.status
        error = _read_error(outcome)
        reason: str | None = None
        if status == 200:
            if outcome.body_problem is None:
                return Decision(action=Action.SUCCEED)
            error = ErrorInfo(
                kind="bad_response",
                message=f"HTTP 200 without {wanted} ({outcome.body_problem})",
            )
        elif status < 400:
            reason = (
                f"{error.message}: not {wanted}, and redirects are not followed "
                "(they could carry the token elsewhere); check --base-url"
            )
        elif status in (401, 403):
            reason = (
                f"the API refused the credentials ({error.message}); "
                "check the token, API key, org and sandbox"
            )
            if status == 401 and error.error_code == "401013":
                return Decision(
                    action=Action.HALT, error=error, token_expired=True, halt_reason=reason
                )
        elif status == 404:
            reason = f"{error.message}; check --base-url"
        elif status in (429, 503):
            retry_after = parse_retry_after(outcome.retry_after, wall_now=wall_now)
            throttled = status == 429 or retry_after is not None
        elif status < 500 or status in (501, 505):
            reason = f"the API refused the request ({error.message})"
        if reason is not None:
            return Decision(action=Action.HALT, error=error, halt_reason=reason)
    wait = next_try(
        attempt, elapsed=elapsed, retry_after=retry_after, limits=Limits.of(settings), rng=rng
    )
    if isinstance(wait, GiveUp):
        advice = "; try again after that" if wait.over_cap else ""
        return Decision(
            action=Action.HALT,
            error=error,
            throttled=throttled,
            retry_after=retry_after,
            halt_reason=f"{error.message}; {wait.reason}{advice}",
        )
    return Decision(
        action=Action.RETRY, delay=wait, error=error, throttled=throttled, retry_after=retry_after
    )


def decide_token(
    outcome: Answer | TransportError,
    *,
    attempt: int,
    elapsed: float,
    limits: Limits,
    rng: random.Random,
    wall_now: float,
) -> Decision:
    """Classify one attempt at an IMS token request: final, retry after a wait, or give up.

    A final answer is ``SUCCEED`` (a 200) or ``FAIL`` without an error, for the caller to read;
    giving up is a ``FAIL`` whose error says what failed (and after how many attempts).
    """
    retry_after: float | None = None
    if isinstance(outcome, TransportError):
        error = ErrorInfo(kind=outcome.kind, message=str(outcome))
        if outcome.kind == "tls":
            return Decision(action=Action.FAIL, error=error)
    elif outcome.status >= 500 or outcome.status == 429:
        retry_after = parse_retry_after(outcome.retry_after, wall_now=wall_now)
        error = ErrorInfo(kind="http", message=f"HTTP {outcome.status}")
    else:
        return Decision(action=Action.SUCCEED if outcome.status == 200 else Action.FAIL)
    wait = next_try(attempt, elapsed=elapsed, retry_after=retry_after, limits=limits, rng=rng)
    if not isinstance(wait, GiveUp):
        return Decision(action=Action.RETRY, delay=wait, error=error, retry_after=retry_after)
    if attempt >= limits.max_attempts and not wait.over_cap:
        why = error.message + (f" after {attempt} attempts" if attempt > 1 else "")
    else:
        why = f"{error.message}; {wait.reason}"
    return Decision(
        action=Action.FAIL,
        error=ErrorInfo(kind=error.kind, message=why),
        retry_after=retry_after,
    )
