"""The values one attempt hands back: a record in flight, and the step that comes next.

:class:`Flight` is a record's state between its attempts; a step is :class:`Retry` (after a
delay; a flight that is ``checking`` is then looked up, off the workers, rather than sent, and
carries the look-up's ``verdict`` back to them), :class:`Done` (the
verdict) or :data:`HALT` (a stop caught it: :func:`stopped` says what it became).
:class:`Control` is what an attempt knows of the batch around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .._io.source import InputRecord
from .._model import ErrorInfo, Outcome

if TYPE_CHECKING:
    from .chain import Chain

__all__ = [
    "AT_ONCE",
    "HALT",
    "Control",
    "Done",
    "Flight",
    "Halt",
    "Retry",
    "Step",
    "out_of_budget",
    "stopped",
]


@dataclass(slots=True)
class Flight:
    """The state of one record between its attempts; read when a stop interrupts it."""

    record: InputRecord
    #: 1 when an earlier invocation's request for the run may have landed (the ledger's doubt).
    prior_doubt: int = 0
    attempts: int = 0
    ambiguous: int = 0
    on_the_wire: bool = False
    renewals: int = 0
    #: True while the attempt waits for a slot: a soft stop may cut that wait short.
    interruptible: bool = False
    #: Loop time of the first attempt: the start of the record's --deadline.
    started: float = 0.0
    #: The retry budget stayed empty until the deadline: the next step is the verdict.
    denied: bool = False
    last_error: ErrorInfo | None = None
    last_status: int | None = None
    request_id: str | None = None
    #: True while its next step is a look-up of a lost answer (``--on-ambiguous check``).
    checking: bool = False
    #: The step that look-up found, for the worker that takes the flight next (or what it
    #: raised, to be raised there).
    verdict: Step | BaseException | None = None
    #: Wall clock (epoch s) when its first request left: its new run was created after it.
    first_wall: float = 0.0
    #: Wall clock (epoch s) when the answer of its last request that may have landed was lost
    #: (0: none was): the state file's window of its doubt ends there.
    lost_wall: float = 0.0
    #: Under ``--follow``: the chain this flight re-triggers the last run of (a further round),
    #: or, when ``concluding``, the chain whose results line a worker is to write.
    chain: Chain | None = None
    concluding: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempt again after ``delay`` seconds; first wait for a retry-budget token if asked."""

    delay: float
    #: Loop time until which a token of the retry budget is waited for; None: no token needed.
    budget_deadline: float | None = None
    #: Waiting out the server's Retry-After for this run alone: fresh input goes on meanwhile.
    aside: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    """The record's verdict."""

    outcome: Outcome
    error: ErrorInfo | None = None
    new_run_id: str | None = None
    etag: str | None = None
    #: ``"lookup"`` when a look-up found the outcome after an unclear answer.
    resolved_by: str | None = None
    #: The new runs a look-up could not tell apart (with ``new_run_id`` None).
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Halt:
    """A stop caught the record before it was done: :func:`stopped` says what it became."""


Step = Retry | Done | Halt
#: The one Halt step.
HALT = Halt()
#: Attempt again at once (the token was renewed after a 401013).
AT_ONCE = Retry(0.0)


class Control(Protocol):
    """What an attempt needs of the batch around it."""

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for: no new request leaves."""
        ...  # pragma: no cover

    def stop(self, reason: str | None = None, *, hard: bool = False) -> None:
        """Stop the batch; ``hard`` also cancels requests in flight. ``reason`` marks a halt."""
        ...  # pragma: no cover


def stopped(flight: Flight) -> Done:
    """Account for a record that a stop caught before it was done."""
    if flight.on_the_wire or flight.ambiguous:
        error = ErrorInfo(
            kind="interrupted",
            message=(
                "the batch stopped while a request for this run was in flight; "
                "it may have been re-triggered"
            ),
        )
        return Done(Outcome.IN_DOUBT, error)
    if flight.prior_doubt:
        error = ErrorInfo(
            kind="in_doubt",
            message="an earlier request for this run may have re-triggered it; not sent again",
        )
        return Done(Outcome.IN_DOUBT, error)
    return Done(Outcome.NOT_ATTEMPTED, flight.last_error)


def out_of_budget(flight: Flight) -> Done:
    """The verdict of a record whose retry found the retry budget empty until its deadline."""
    last = flight.last_error
    error = ErrorInfo(
        kind=last.kind if last else "http",
        message=f"{last.message if last else ''}; the retry budget stayed empty until the deadline",
    )
    doubt = flight.ambiguous or flight.prior_doubt
    return Done(Outcome.IN_DOUBT if doubt else Outcome.FAILED, error)
