"""Check, before the first re-trigger, that the batch reaches Flow Service: the pre-flight.

The request itself is :func:`~bulkretry._http.preflight.preflight`'s; this room puts it under
the batch's throttle and turns what it finds into what the batch does: a wrong base URL or
credentials are a usage error (exit 2, nothing sent, no record written), and a service that
keeps answering 429 or 5xx stops the batch as an outage would (every record ``not_attempted``).
"""

from __future__ import annotations

import asyncio
import random

from .._exceptions import AuthenticationError, BatchHalted, ConfigurationError, TransportError
from .._http.client import Answer
from .._http.preflight import preflight
from .._policy import Decision
from .._stats import Stats
from .attempt import Attempt
from .governor import Governor
from .steps import Control

__all__ = ["check_first"]


async def check_first(
    control: Control, attempt: Attempt, governor: Governor, rng: random.Random, stats: Stats
) -> None:
    """Make the pre-flight request; raise :class:`ConfigurationError` if it shows a mistake."""
    sent_at = 0.0  # when the pre-flight's last attempt got its slot

    async def slot() -> None:
        nonlocal sent_at
        await governor.throttle.acquire()
        sent_at = asyncio.get_running_loop().time()

    def answered(outcome: Answer | TransportError, decision: Decision) -> None:
        # The first request opened a connection on its way: it reached the server some time
        # before its answer, and the first re-trigger counts its interval from then.
        governor.throttle.count_from(asyncio.get_running_loop().time())
        # Its answer is the first word of the quota (a 429, RateLimit headers): heed it.
        governor.steer(outcome, decision, sent_at=sent_at)

    try:
        result = await preflight(
            attempt.client,
            attempt.tokens,
            attempt.settings,
            rng=rng,
            acquire=slot,
            on_attempt=answered,
        )
    except AuthenticationError as exc:
        # A refusal the policy read says what to check already; say it once.
        hint = (
            ""
            if "; check " in str(exc)
            else "; check the access token, API key, org ID and sandbox"
        )
        raise ConfigurationError(f"{exc}{hint}") from exc
    except BatchHalted as exc:
        control.stop(str(exc))
        return
    stats.lookups += result.requests
