"""The pipeline: read → validate and deduplicate → dispatch → attempt, retry → write.

A feeder judges each input record (:mod:`.triage`) and queues those to send in the
:class:`~.dispatch.Dispatch`; exactly ``concurrency`` workers take records from it and make one
attempt each (:meth:`~.attempt.Attempt.once`). A record to retry goes back to the dispatcher's
heap (or, when the retry budget is empty, waits for a token as a future whose callback
schedules it), and its worker takes the next record at once. Memory stays flat however long the
input: the feeder blocks while the dispatcher's queue is full, and the reader thread while the
feeder is.

Stopping comes in two strengths. A *soft* stop (a halt, the first SIGINT) sends no new request,
lets those in flight finish, and accounts for every other record as ``not_attempted`` (or
``in_doubt``, when a request for it may have landed before). A *hard* stop (the second SIGINT,
or the grace period of a soft stop running out) cancels what is in flight too: a record whose
request was on the wire becomes ``in_doubt``.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterable, Callable
from typing import TYPE_CHECKING

import aiohttp
import anyio

from .._config import Settings
from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    MissingCredentialsError,
    StateError,
)
from .._http.auth import TokenProvider
from .._http.client import make_session
from .._io.source import InputRecord
from .._model import Outcome
from .._stats import Stats
from .attempt import Attempt
from .backoffs import Backoffs, Wait
from .dispatch import Dispatch
from .finish import Emit, finish
from .governor import Governor
from .ledger_feed import LedgerFeed
from .rounds import Rounds
from .startup import check_first
from .steps import HALT, Done, Flight, Halt, Retry, stopped
from .triage import Triage, Verdict

if TYPE_CHECKING:
    from .._io.evidence import Evidence

    # The ledger (and sqlite3) is only loaded by batches that use --state.
    from .._ledger.ledger import Ledger

_IN_DOUBT = Outcome.IN_DOUBT.value

__all__ = ["DEFAULT_GRACE", "Emit", "Engine", "Wait"]

#: Seconds a soft stop waits for requests in flight before it cancels them.
DEFAULT_GRACE = 30.0
_WOULD_RETRIGGER = Verdict(Outcome.WOULD_RETRIGGER)
_NOT_ATTEMPTED = Verdict(Outcome.NOT_ATTEMPTED, durable=True)


class Engine:
    """Run one batch: :meth:`run` takes input records and emits one result for each."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        tokens: TokenProvider | None = None,
        wait: Wait | None = None,
        rng: random.Random | None = None,
        grace: float = DEFAULT_GRACE,
        ledger: Ledger | None = None,
        evidence: Evidence | None = None,
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        #: Called once when a hard stop begins (the CLI stops waiting for a silent input).
        self.on_hard_stop: Callable[[], None] | None = None
        #: True when a hard stop ended the reading before the input's end.
        self.input_cut_short = False
        self.halt_reason: str | None = None
        self._session = session
        self._tokens = tokens
        self._rng = rng or random.Random()
        self._grace = grace
        self._stopping = False
        self._hard = False
        workers = settings.concurrency
        self._dispatch: Dispatch[Flight] = Dispatch.for_workers(workers, settings.rate)
        # Per worker: its task, and the record it is attempting (None between attempts).
        self._tasks: list[asyncio.Task[None] | None] = [None] * workers
        self._holding: list[Flight | None] = [None] * workers
        #: Workers this engine cancelled (a stop) that have not yet taken it in.
        self._cancelled: set[asyncio.Task[None]] = set()
        self._ledger = ledger
        self._triage = Triage(settings, with_ledger=ledger is not None, evidence=evidence)
        self._governor = Governor(settings)
        self._backoffs = Backoffs(self, self._dispatch, self._governor, wait)
        self._attempt: Attempt | None = None
        #: ``--follow``: the chains of new runs being followed (made with the session).
        self.rounds: Rounds | None = None
        self._working = workers
        #: Set once the pre-flight is over (None: none is made).
        self._cleared: asyncio.Event | None = None
        self._admitted = asyncio.Event()
        #: The mistake the pre-flight found (raised once every record is accounted for).
        self.preflight_error: ConfigurationError | None = None
        self._grace_handle: asyncio.TimerHandle | None = None
        self._input_abandoned = False
        #: False when the records come from the state file itself (a resume without input).
        self.reading_input = True
        #: Runs of the state file that the input did not name, queued to be finished too.
        self.unfinished_queued = 0

    def __repr__(self) -> str:
        state = "hard-stopping" if self._hard else "stopping" if self._stopping else "running"
        return f"Engine({state}, {self.stats!r}, {self._dispatch!r}, {self._governor!r})"

    @property
    def governor(self) -> Governor:
        """The shared flow control: throttle, in-flight cap, retry budget, halting."""
        return self._governor

    @property
    def triage(self) -> Triage:
        """What was decided without a request: results lines seen, evidence that came late."""
        return self._triage

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stopping

    @property
    def hard(self) -> bool:
        """True once a stop that cancels requests in flight was asked for."""
        return self._hard

    def stop(self, reason: str | None = None, *, hard: bool = False) -> None:
        """Stop sending; ``hard`` also cancels requests in flight. ``reason`` marks a halt.

        Records waiting for a retry (in the dispatcher's heap, or for a retry-budget token) are
        handed to the workers at once, which account for them without a request.
        """
        if reason is not None and self.halt_reason is None:
            self.halt_reason = reason
        first = not self._stopping
        self._stopping = True
        if first:
            self._dispatch.drain()
        if self.rounds is not None:
            # Reaching --max-retriggers sends no round but goes on following; any other stop
            # (a signal, a halt, the grace period) ends following too.
            capped = reason is not None and self._governor.capped and not hard
            self.rounds.stop(follow_on=capped and first)
        if hard and not self._hard:
            self._hard = True
            self._cancel(hard=True)
            self._backoffs.cancel_looks()
            if self.on_hard_stop is not None:
                self.on_hard_stop()
            return
        if first:
            self._cancel(hard=False)
            loop = asyncio.get_running_loop()
            self._grace_handle = loop.call_later(self._grace, self._hard_stop)

    def _cancel(self, *, hard: bool) -> None:
        """Cancel the workers inside an attempt (``hard``), or those waiting for a slot.

        A worker that is emitting a result is never cancelled, or that record would be lost;
        nor is the one asking for the stop, which is about to return its step.
        """
        current = asyncio.current_task()
        for task, flight in zip(self._tasks, self._holding, strict=True):
            if (
                flight is not None
                and (hard or flight.interruptible)
                and task is not None
                and task is not current
                and task not in self._cancelled
            ):
                self._cancelled.add(task)
                task.cancel()

    def abandon_input(self) -> None:
        """Stop reading the input: nothing more can be written, and no state file keeps it."""
        self._input_abandoned = True

    async def _finish(
        self, emit: Emit, record: InputRecord, result: Done | Verdict, flight: Flight | None = None
    ) -> None:
        attempt = self._attempt
        held = isinstance(result, Verdict) and result.outcome is Outcome.IN_DOUBT
        if held and attempt is not None and attempt.resolver is not None:
            # Sent by an earlier pass (maybe one killed a moment ago): its run may show yet.
            attempt.resolver.haunt(None)
        await finish(self, self.stats, self._ledger, emit, record, result, flight, self.rounds)

    def _hard_stop(self) -> None:
        self.stop(hard=True)

    async def run(self, records: AsyncIterable[list[InputRecord]], emit: Emit) -> Stats:
        """Process every record from ``records`` (batches of them) and ``emit`` one result each."""
        settings = self.settings
        own_session = None
        preflight = settings.preflight
        try:
            if not settings.dry_run or preflight:
                if settings.credentials is None:
                    raise MissingCredentialsError(
                        ["BULKRETRY_ACCESS_TOKEN", "BULKRETRY_API_KEY", "BULKRETRY_ORG_ID"]
                    )
                if self._session is None:
                    own_session = self._session = make_session(settings)
                attempt = self._attempt = Attempt.connect(
                    self,
                    settings=settings,
                    stats=self.stats,
                    session=self._session,
                    tokens=self._tokens,
                    governor=self._governor,
                    ledger=self._ledger,
                    rng=self._rng,
                )
                try:
                    # The first token before any input is read: an IMS refusal stops the
                    # batch before any re-trigger, and every record is then not_attempted.
                    await attempt.first_token()
                except AuthenticationError as exc:
                    self.stop(str(exc))
            #: Set once the state file holds the input's first batch (or its end).
            self._admitted = asyncio.Event()
            if self._ledger is None:
                self._admitted.set()
            async with anyio.create_task_group() as group:
                if preflight and not self._stopping:
                    # Beside the input's admission, before the first re-trigger: a kill -9
                    # during it loses no input read, and a mistake it finds stops the batch
                    # with every record not_attempted.
                    assert self._attempt is not None
                    self._cleared = asyncio.Event()
                    group.start_soon(self._check_first, self._attempt, self._cleared)
                if not settings.dry_run:  # a dry run judges every record in the feeder
                    for index in range(settings.concurrency):
                        group.start_soon(self._worker, index, emit)
                    if settings.follow:
                        self.rounds = Rounds.of(
                            self,
                            attempt,
                            self._dispatch,
                            self.stats,
                            self._rng,
                            self._ledger,
                            self._triage,
                        )
                        group.start_soon(self.rounds.run)
                try:
                    if self._ledger is None:
                        await self._feed_from_input(records, emit)
                    else:
                        feed = LedgerFeed(
                            self,
                            self._ledger,
                            settings=settings,
                            triage=self._triage,
                            put=self._dispatch.put,
                            settle=functools.partial(self._finish, emit),
                            admitted=self._admitted,
                        )
                        await feed.run(records)
                finally:
                    self._dispatch.close()
                    if self.rounds is None:  # (--follow: rounds and look-ups go on long after)
                        # The input's end: the throttle may ease the last second (Throttle.ending).
                        self._governor.throttle.ending(self._dispatch.queued)
            if self._ledger is not None:
                await self._ledger.flush()
        except StateError as exc:
            # The state file failed (a full disk…): nothing more can be recorded, so stop.
            self.stop(str(exc), hard=True)
        finally:
            self._backoffs.cancel_looks()  # none is left but after a failure: none outlives it
            if self._grace_handle is not None:
                self._grace_handle.cancel()
            if own_session is not None:
                await own_session.close()
        if self.preflight_error is not None:
            raise self.preflight_error
        return self.stats

    async def _check_first(self, attempt: Attempt, cleared: asyncio.Event) -> None:
        """Make the pre-flight; on a mistake, stop the batch and keep the error to raise.

        With a state file, only once it holds the input's first batch and how far it was read:
        a kill -9 during the pre-flight then leaves a batch a resume knows of.
        """
        try:
            await self._admitted.wait()
            await check_first(self, attempt, self._governor, self._rng, self.stats)
        except ConfigurationError as exc:
            self.preflight_error = exc
            self.stop(str(exc))
        finally:
            cleared.set()

    async def _feed_from_input(self, records: AsyncIterable[list[InputRecord]], emit: Emit) -> None:
        """Judge and send records as they are read (no state file: memory bounds the read-ahead).

        A stop does not end the reading: every line still gets its record (``not_attempted``),
        unless the output is gone and nothing could be written anyway.
        """
        try:
            async for batch in records:
                await self._feed(batch, emit)
                if self._input_abandoned:
                    return
        except (OSError, InputError) as exc:
            # What was read is accounted for; the rest cannot be, so say so.
            self.stop(f"reading the input failed: {exc}")

    async def _feed(self, batch: list[InputRecord], emit: Emit) -> None:
        triage = self._triage
        put = self._dispatch.put
        dry_run = self.settings.dry_run
        for record in batch:
            verdict = triage.judge(record)
            if verdict is not None:
                await self._finish(emit, record, verdict)
            elif dry_run:
                await self._finish(emit, record, _WOULD_RETRIGGER)
            elif self._stopping:
                await self._finish(emit, record, _NOT_ATTEMPTED)
            else:
                # A run fed back in doubt and sent again (--retry-in-doubt) keeps its doubt.
                await put(Flight(record, prior_doubt=int(record.prior == _IN_DOUBT)))

    async def _worker(self, index: int, emit: Emit) -> None:
        """Attempt records one at a time until the dispatcher says they are all finished."""
        task = asyncio.current_task()
        attempt = self._attempt
        assert task is not None
        assert attempt is not None
        self._tasks[index] = task
        holding = self._holding
        dispatch = self._dispatch
        once = attempt.once
        finish = self._finish
        if self._cleared is not None:
            await self._cleared.wait()  # no re-trigger before the pre-flight passed
        while (flight := await dispatch.take()) is not None:
            if flight.concluding:  # a followed chain is over: write its line
                assert self.rounds is not None
                assert flight.chain is not None
                await emit(self.rounds.conclude(flight.chain))
                dispatch.release()
                continue
            holding[index] = flight
            try:
                step = await once(flight)
            except asyncio.CancelledError:
                if task not in self._cancelled:
                    raise
                # This engine's own stop: the attempt gave back what it held; account for it.
                self._cancelled.discard(task)
                task.uncancel()
                step = HALT
            holding[index] = None
            if isinstance(step, Retry):
                if self._stopping:
                    step = HALT
                elif flight.checking:  # the look-up runs off the workers
                    self._backoffs.look(flight, step.delay, attempt.look)
                    continue
                else:
                    self._backoffs.retry(flight, step)
                    continue
            if isinstance(step, Halt):
                step = stopped(flight)
            await finish(emit, flight.record, step, flight)
            if flight.chain is None:
                dispatch.done()
            else:
                dispatch.release()  # a further round
        self._working -= 1
        if not self._working and self.rounds is not None:
            self.rounds.close()  # every record is finished: no run will be followed any more
