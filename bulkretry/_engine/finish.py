"""Finish a record: write its result to the state file (when it was sent, or its verdict asks),
then emit its results line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .._exceptions import StateError
from .._io.source import InputRecord
from .._model import Outcome, RunResult, utc_now_iso
from .._stats import Stats
from .steps import Control, Done, Flight
from .triage import Verdict

if TYPE_CHECKING:
    from .._ledger.ledger import Ledger
    from .rounds import Rounds

__all__ = ["Emit", "finish"]

Emit = Callable[[RunResult], Awaitable[None]]


async def finish(
    control: Control,
    stats: Stats,
    ledger: Ledger | None,
    emit: Emit,
    record: InputRecord,
    result: Done | Verdict,
    flight: Flight | None = None,
    rounds: Rounds | None = None,
) -> None:
    """Write a record's result: to the state file (if sent, or if a verdict asks), then emit.

    Under ``--follow`` (``rounds``), a record with a new run is followed, and its line written
    when the chain is over; a further round's verdict goes to its chain, not to a line.
    """
    outcome, error = result.outcome, result.error
    new_run_id, etag = result.new_run_id, result.etag
    further = flight is not None and flight.chain is not None
    if not further:
        stats.outcomes[outcome] += 1
    verdict = result if isinstance(result, Verdict) else None
    if flight is None:
        status = request_id = lost_at = None
        attempts = ambiguous = recorded = 0
    else:
        status, request_id = flight.last_status, flight.request_id
        attempts, ambiguous = flight.attempts, flight.ambiguous
        # A doubt it came in with counts in the state file: it tells `check` it was sent before.
        recorded = ambiguous + flight.prior_doubt
        lost_at = flight.lost_wall or None
    run_id = record.run_id
    durable = flight is not None or (verdict is not None and verdict.durable)
    if durable and ledger is not None and run_id is not None:
        try:
            ledger.outcome(
                run_id,
                outcome,
                new_run_id=new_run_id,
                etag=etag,
                attempts=attempts,
                ambiguous=recorded,
                error=error,
                http_status=status,
                request_id=request_id,
                lost_at=lost_at,
                fed=verdict is not None and verdict.fed_doubt,
                cut_off=flight is not None and flight.on_the_wire,
            )
        except StateError as exc:
            control.stop(str(exc), hard=True)
    elif outcome is Outcome.IN_DOUBT and ledger is not None and run_id is not None:
        # Held in doubt from the state file: its line is written now, and a `check --state`
        # verdict must come after it to settle the doubt it repeats (see check_lines).
        try:
            ledger.touch(run_id)
        except StateError as exc:
            control.stop(str(exc), hard=True)
    if further:
        assert flight is not None
        assert rounds is not None
        over = rounds.round_done(flight, outcome._value_, new_run_id, etag, error)
        if over is not None:
            await emit(over)
        return
    done = result if isinstance(result, Done) else None
    line = RunResult(
        run_id=run_id if run_id is not None else record.text,
        outcome=outcome,
        new_run_id=new_run_id,
        etag=etag,
        http_status=status,
        attempts=attempts,
        ambiguous_attempts=ambiguous,
        error=error,
        request_id=request_id,
        finished_at=utc_now_iso(),
        source=record.source,
        line=record.line,
        prior_outcome=verdict.prior_outcome if verdict is not None else None,
        resolved_by=done.resolved_by if done is not None else None,
        candidates=done.candidates if done is not None else (),
    )
    if rounds is not None:
        if rounds.take(line, flight, record):
            return
        line = rounds.unfollowed(line)
    await emit(line)
