"""Check, before the first re-trigger, that the base URL and the credentials reach Flow Service.

One cheap request, ``GET {base}/runs?limit=1`` with the batch's headers, checks the base URL,
the token, the org and the sandbox at once:

=============================================  ===============================================
what happened                                  :func:`preflight`
=============================================  ===============================================
200 with a JSON object                         pass
no such host (DNS), connection refused         :class:`BaseUrlError` (no retry: a typo is no
                                               outage)
3xx, 404, 405, 501, 505, a 200 that is not a   :class:`BaseUrlError`
JSON object (HTML, an array…), a TLS failure
401 ``401013``                                 renew the token once and ask again
401, 403; another 4xx in Adobe's error format  :class:`AuthenticationError`
another 4xx                                    :class:`BaseUrlError`
429, other 5xx, timeout, reset                 retried as :func:`~bulkretry._policy.decide_read`
                                               says; given up: :class:`BatchHalted`
=============================================  ===============================================

Waits go through ``wait`` and time through ``clock``, so that tests never sleep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._config import Settings
from .._exceptions import (
    AuthenticationError,
    BaseUrlError,
    BatchHalted,
    BulkRetryError,
    TransportError,
)
from .._model import Answer
from .._retry import Action, Decision, decide_read
from .auth import TokenProvider
from .client import FlowServiceClient
from .lookups import listing_url
from .translate import unreachable

__all__ = ["PreflightResult", "preflight"]

#: What a 200 must hold, in the words of a message that says it did not.
_WANTED = "a Flow Service answer"
#: Statuses that say the URL names something other than Flow Service's run listing.
_NOT_FLOW_SERVICE = frozenset({404, 405, 501, 505})

Wait = Callable[[float], Awaitable[None]]
OnAttempt = Callable[[Answer | TransportError, Decision], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class PreflightResult:
    """A pre-flight that passed: the GETs it took (retries included), renewals, seconds."""

    requests: int
    token_renewals: int
    elapsed: float


async def preflight(
    client: FlowServiceClient,
    tokens: TokenProvider,
    settings: Settings,
    *,
    wait: Wait = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    acquire: Callable[[], Awaitable[None]] | None = None,
    on_attempt: OnAttempt | None = None,
) -> PreflightResult:
    """Make the pre-flight request (retried as the module table says); return what it took.

    ``acquire`` is awaited before each attempt (a throttle's slot: the pre-flight counts
    against the quota like any request); ``on_attempt`` hears each attempt's outcome and
    decision (to slow the throttle after a 429). Raise :class:`BaseUrlError`,
    :class:`AuthenticationError` or :class:`BatchHalted` when it does not pass.
    """
    rng = rng or random.Random()
    base = client.base_url
    url = listing_url(base, limit=1)
    started = clock()
    attempt = requests = renewals = 0
    while True:
        if acquire is not None:
            await acquire()
        attempt += 1
        requests += 1
        token = await tokens.token()
        outcome: Answer | TransportError
        try:
            outcome = await client.get(url, token)
        except TransportError as exc:
            why = unreachable(exc)
            if why is not None:
                raise BaseUrlError(f"--base-url {base}: {why}; check --base-url", url=base) from exc
            outcome = exc
        else:
            _check_body(outcome, base, str(url))
        decision = decide_read(
            outcome,
            attempt=attempt,
            elapsed=clock() - started,
            settings=settings,
            rng=rng,
            wall_now=time.time(),
            wanted=_WANTED,
        )
        if on_attempt is not None:
            on_attempt(outcome, decision)
        if decision.action is Action.SUCCEED:
            return PreflightResult(
                requests=requests, token_renewals=renewals, elapsed=clock() - started
            )
        if decision.token_expired and not renewals:
            # Renewal is not a failed attempt: the next try uses a new token.
            renewals += 1
            attempt -= 1
            await tokens.renew(token)
            continue
        if decision.action is Action.HALT:
            raise _refused(outcome, decision, base, str(url))
        await wait(decision.delay)


def _check_body(answer: Answer, base: str, url: str) -> None:
    """Refuse a 200 that is not a JSON object: whatever answered is not Flow Service."""
    if answer.status != 200 or isinstance(answer.body, dict):
        return
    problem = answer.body_problem
    if problem is None:
        kind = "an array" if isinstance(answer.body, list) else "a JSON value"
        problem = f"the body is {kind}, not an object"
    raise BaseUrlError(
        f"--base-url {base} does not look like Flow Service: GET {url} answered HTTP 200 "
        f"but {problem}; check --base-url",
        url=base,
        status=200,
    )


def _refused(
    outcome: Answer | TransportError, decision: Decision, base: str, url: str
) -> BulkRetryError:
    """Return the error a pre-flight halt stands for (see the module table)."""
    error = decision.error
    assert error is not None
    reason = decision.halt_reason or error.message
    if isinstance(outcome, TransportError):
        if outcome.kind == "tls":
            return BaseUrlError(f"--base-url {base}: {reason}", url=base)
        return BatchHalted(f"the pre-flight GET {url} gave up: {reason}")
    status = outcome.status
    if status in (401, 403):
        if decision.token_expired:
            reason = f"the API refused the renewed access token too ({error.message})"
        return AuthenticationError(
            f"pre-flight: {reason}", status=status, error_code=error.error_code
        )
    if status == 429 or (status >= 500 and status not in _NOT_FLOW_SERVICE):
        return BatchHalted(f"the pre-flight GET {url} gave up: {reason}")
    if 400 <= status < 500 and status not in _NOT_FLOW_SERVICE and error.error_code is not None:
        # Adobe's gateway or Flow Service spoke, and refused these headers: the org or sandbox.
        return AuthenticationError(
            f"pre-flight: the API refused the request ({error.message}); check the org and sandbox",
            status=status,
            error_code=error.error_code,
        )
    return BaseUrlError(
        f"--base-url {base} does not look like Flow Service: GET {url} answered "
        f"{error.message}; check --base-url",
        url=base,
        status=status,
    )
