"""Put a record aside until its retry is due: in the dispatcher's heap, or behind a budget token.

A retry that needs a token of the retry budget waits for it as a future held by the
dispatcher; the token's answer decides: a token (then the backoff), or none by the record's
deadline (the worker gives the verdict at once). A lost answer's look-up runs in a task the
dispatcher holds, after its check delay; its verdict goes back to the workers with the record.
A test may replace the heap's timer by a hook of its own (``wait``) to drive backoffs by hand.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from .dispatch import Dispatch
from .governor import Governor
from .steps import Control, Flight, Retry, Step, stopped

__all__ = ["Backoffs", "Wait"]

#: A test hook: awaited, in a task of its own, instead of the dispatcher's timer for a backoff.
Wait = Callable[[float], Awaitable[None]]
#: Look up a lost answer (``Attempt.look``) and say what comes next.
Look = Callable[[Flight], Awaitable[Step]]


class Backoffs:
    """Schedule the retries of one batch's records (see the module docstring)."""

    __slots__ = ("_control", "_dispatch", "_governor", "_looks", "_wait")

    def __init__(
        self,
        control: Control,
        dispatch: Dispatch[Flight],
        governor: Governor,
        wait: Wait | None = None,
    ) -> None:
        self._control = control
        self._dispatch = dispatch
        self._governor = governor
        self._wait = wait
        self._looks: set[asyncio.Future[Step]] = set()

    def retry(self, flight: Flight, step: Retry) -> None:
        """Put ``flight`` aside until its retry is due: in the heap, or behind a budget token."""
        if step.budget_deadline is None:
            self._later(flight, step.delay, aside=step.aside)
        else:
            token = self._governor.budget.reserve(step.budget_deadline)
            then = functools.partial(self._budget_answered, step.delay)
            self._dispatch.hold(flight, token, then)

    def look(self, flight: Flight, delay: float, look: Look) -> None:
        """Look up ``flight``'s lost answer after ``delay``, with no worker waiting for it.

        The look-up's step (or what it raised) rides back on the flight (``verdict``). A stop
        during the delay hands the record back at once (a worker accounts for it as the stop
        left it); a look-up under way finishes, unless the stop is hard.
        """
        # An input record's look-up holds no fresh input back (a further round never held any).
        aside = flight.chain is None
        if delay <= 0:
            self._look_now(look, aside, flight, None)
            return
        waited = asyncio.ensure_future((self._wait or asyncio.sleep)(delay))
        then = functools.partial(self._look_now, look, aside)
        self._dispatch.hold(flight, waited, then, aside=aside)

    def _look_now(
        self, look: Look, aside: bool, flight: Flight, waited: asyncio.Future[Any] | None
    ) -> None:
        if waited is not None and waited.cancelled():  # a stop came first: nothing looked up
            self._dispatch.schedule(flight, asyncio.get_running_loop().time())
            return
        task = asyncio.ensure_future(look(flight))
        self._looks.add(task)
        task.add_done_callback(self._looks.discard)
        self._dispatch.hold(flight, task, self._looked, aside=aside, drained=False)
        if waited is not None:
            waited.result()  # a failure of the test's hook is the test's (the loop logs it)

    def cancel_looks(self) -> None:
        """Cancel the look-ups under way (a hard stop, or the batch's end after a failure)."""
        for task in list(self._looks):
            task.cancel()

    def _looked(self, flight: Flight, task: asyncio.Future[Any]) -> None:
        # Cancelled, the look-up decided nothing: the record is what a stop leaves (in doubt),
        # never sent again without one.
        cancelled = task.cancelled()
        flight.verdict = stopped(flight) if cancelled else task.exception() or task.result()
        self._dispatch.schedule(flight, asyncio.get_running_loop().time())

    def _later(self, flight: Flight, delay: float, *, aside: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if self._wait is None or delay <= 0:
            self._dispatch.schedule(flight, loop.time() + delay, aside=aside)
        else:
            self._dispatch.hold(flight, asyncio.ensure_future(self._wait(delay)), self._waited)

    def _budget_answered(self, delay: float, flight: Flight, token: asyncio.Future[Any]) -> None:
        """The retry budget answered: a token (retry after ``delay``), or none by the deadline."""
        if not token.cancelled() and not self._control.stopping and token.result():
            self._later(flight, delay)
            return
        # Cancelled by a stop, or denied: the worker accounts for the record at once.
        flight.denied = not token.cancelled() and not token.result()
        self._dispatch.schedule(flight, asyncio.get_running_loop().time())

    def _waited(self, flight: Flight, waited: asyncio.Future[Any]) -> None:
        self._dispatch.schedule(flight, asyncio.get_running_loop().time())
        if not waited.cancelled():
            waited.result()  # a failure of the test's hook is the test's (the loop logs it)
