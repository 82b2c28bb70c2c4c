"""Make one look-up GET under the batch's flow control: slot, token, send, decide, retry.

A look-up takes a slot of the governor's throttle and of its cap, as a re-trigger does, so
that look-ups and re-triggers share one quota; its answer steers the same throttle (a 429 slows
everyone). It reserves no place under ``--max-retriggers`` and counts as no re-trigger, so it
does not go through :meth:`Governor.answered`. What to do after each answer is
:func:`~bulkretry._retry.decide_read`'s call; a 401 ``401013`` renews the token once.

Giving up is one of two things: a :class:`GaveUp` answer when the service failed for a while
(a 429, 5xx or network storm outlasting the retries: look again later), :class:`BatchHalted` or
:class:`AuthenticationError` when it refused (credentials, a base URL that is no Flow
Service): following cannot go on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from yarl import URL

from .._config import Settings
from .._exceptions import AuthenticationError, BatchHalted, BulkRetryError, TransportError
from .._http.auth import TokenProvider
from .._http.client import FlowServiceClient
from .._http.lookups import page_problem
from .._model import Answer
from .._retry import Action, Decision, decide_read
from .governor import Governor

__all__ = ["FollowStats", "GaveUp", "Looker"]

log = logging.getLogger("bulkretry")


@dataclass(slots=True)
class FollowStats:
    """What following cost and found: every GET counted, retries and renewals included."""

    requests: int = 0
    listings: int = 0
    pages: int = 0
    gets: int = 0
    retries: int = 0
    throttled: int = 0
    token_renewals: int = 0
    followed: int = 0
    vanished: int = 0
    timed_out: int = 0

    def per_run(self) -> float:
        """Return the look-up requests per followed run (0 when none was followed)."""
        return self.requests / self.followed if self.followed else 0.0


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The service kept failing one look-up (429, 5xx, network); ``reason`` says how."""

    reason: str


class Looker:
    """Send look-up GETs through ``governor``'s throttle and cap, with ``tokens``' token."""

    def __init__(
        self,
        client: FlowServiceClient,
        tokens: TokenProvider,
        governor: Governor,
        settings: Settings,
        stats: FollowStats,
        rng: random.Random,
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._gov = governor
        self._settings = settings
        self._rng = rng
        self.stats = stats

    def __repr__(self) -> str:
        return f"Looker({self._client!r}, {self.stats!r})"

    async def get(self, url: URL, *, page: bool) -> Answer | GaveUp:
        """GET ``url`` until an answer holds what was asked: a page of runs, or a run (or 404).

        ``page`` asks for a page of runs (a 200 without its ``items`` list is retried);
        otherwise a 404 is an answer too (the run does not exist). Return :class:`GaveUp`, or
        raise :class:`BatchHalted` or :class:`AuthenticationError` (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            outcome, sent_at, token = await self._send(url, page=page)
            if not page and isinstance(outcome, Answer) and outcome.status == 404:
                return outcome
            decision = decide_read(
                outcome,
                attempt=attempt,
                elapsed=loop.time() - started,
                settings=self._settings,
                rng=self._rng,
                wall_now=time.time(),
                wanted="a page of runs" if page else "a run",
            )
            self._pace(outcome, decision, sent_at)
            if decision.action is Action.SUCCEED:
                assert isinstance(outcome, Answer)
                return outcome
            if decision.token_expired and not renewed:
                # A renewal is no failed attempt: the next one has a new token.
                renewed = True
                attempt -= 1
                self.stats.token_renewals += 1
                await self._tokens.renew(token)
                continue
            if decision.action is Action.HALT:
                stop = self._halted(outcome, decision)
                if isinstance(stop, GaveUp):
                    return stop
                raise stop
            error = decision.error
            log.info(
                "look-up %s: %s; again in %.1f s",
                url.path,
                error.message if error else "failed",
                decision.delay,
            )
            self.stats.retries += 1
            await asyncio.sleep(decision.delay)

    async def _send(self, url: URL, *, page: bool) -> tuple[Answer | TransportError, float, str]:
        """Take a slot of the throttle, then send (:meth:`_on_slot`); return what came back."""
        gov = self._gov
        await gov.throttle.acquire()
        slot_at = asyncio.get_running_loop().time()
        try:
            outcome, sent_at, token = await self._on_slot(url)
        except BaseException:
            # Cancelled (a look-up's deadline): no answer comes, and a hold must not wait for it.
            gov.throttle.on_lost(slot_at)
            raise
        if (
            page
            and isinstance(outcome, Answer)
            and outcome.status == 200
            and outcome.body_problem is None
            and (problem := page_problem(outcome.body))
        ):
            outcome.body_problem = problem
        return outcome, sent_at, token

    async def _on_slot(self, url: URL) -> tuple[Answer | TransportError, float, str]:
        """Take a slot of the cap and send; return what came back, when it left, the token."""
        gov = self._gov
        await gov.cap.acquire()
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        outcome: Answer | TransportError
        try:
            token = await self._tokens.token()
            self.stats.requests += 1
            try:
                outcome = await self._client.get(url, token)
            except TransportError as exc:
                outcome = exc
        finally:
            gov.cap.release()
        gov.cap.observe(loop.time() - sent_at)
        return outcome, sent_at, token

    def _pace(self, outcome: Answer | TransportError, decision: Decision, sent_at: float) -> None:
        """Steer the shared throttle as a re-trigger's answer does (:meth:`Governor.steer`)."""
        if decision.throttled:
            self.stats.throttled += 1
        self._gov.steer(outcome, decision, sent_at=sent_at)

    @staticmethod
    def _halted(outcome: Answer | TransportError, decision: Decision) -> GaveUp | BulkRetryError:
        """Return what a give-up means: look again later, or following cannot go on."""
        error = decision.error
        reason = decision.halt_reason or (error.message if error else "the look-up failed")
        if isinstance(outcome, TransportError):
            if outcome.kind == "tls":
                return BatchHalted(f"look-ups stopped: {reason}")
            return GaveUp(reason)
        status = outcome.status
        if status == 429 or (status >= 500 and status not in (501, 505)):
            return GaveUp(reason)
        if status in (401, 403):
            return AuthenticationError(
                f"look-ups stopped: {reason}",
                status=status,
                error_code=error.error_code if error else None,
            )
        return BatchHalted(f"look-ups stopped: {reason}")
