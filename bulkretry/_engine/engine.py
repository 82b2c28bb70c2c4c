"""The pipeline: read → validate and deduplicate → throttle → send with retry → write.

Stages are joined by a bounded memory stream, so memory stays flat however long the input:
the feeder blocks when the workers are busy, and the reader thread blocks when the feeder is.

Stopping comes in two strengths. A *soft* stop (a halt, the first SIGINT) sends no new request,
lets those in flight finish, and accounts for every other record as ``not_attempted``. A *hard*
stop (the second SIGINT, or the grace period of a soft stop running out) cancels what is in
flight too: a record whose request was on the wire becomes ``in_doubt``.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._config import Settings
from .._exceptions import (
    AuthenticationError,
    InputError,
    MissingCredentialsError,
    StateError,
)
from .._http.auth import TokenProvider, token_provider
from .._http.client import FlowServiceClient, make_session
from .._io.source import InputRecord
from .._model import ErrorInfo, Outcome, RunResult, utc_now_iso
from .._stats import Stats
from .attempts import Attempts, Flight, Interrupted, Wait, stopped
from .governor import Governor
from .triage import HELD_IN_DOUBT, Triage, Verdict

if TYPE_CHECKING:
    from .._io.evidence import Evidence

    # The ledger (and sqlite3) is only loaded by batches that use --state.
    from .._ledger.ledger import Ledger

__all__ = ["Emit", "Engine"]

Emit = Callable[[RunResult], Awaitable[None]]
#: Seconds a soft stop waits for requests in flight before it cancels them.
DEFAULT_GRACE = 30.0


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
        self.halt_reason: str | None = None
        self._session = session
        self._tokens = tokens
        self._wait = wait
        self._rng = rng or random.Random()
        self._grace = grace
        self._stopping = False
        self._hard = False
        self._workers: dict[asyncio.Task[None], Flight | None] = {}
        # Places for busy workers (see _take_place): as many as requests may be in flight.
        self._busy = 0
        self._parked: deque[asyncio.Future[None]] = deque()
        self._ledger = ledger
        self._triage = Triage(settings, with_ledger=ledger is not None, evidence=evidence)
        self._governor = Governor(settings)
        self._attempts: Attempts | None = None
        self._grace_handle: asyncio.TimerHandle | None = None
        self._input_abandoned = False
        #: False when the records come from the state file itself (a resume without input).
        self.reading_input = True
        #: Runs of the state file that the input did not name, queued to be finished too.
        self.unfinished_queued = 0

    def __repr__(self) -> str:
        state = "hard-stopping" if self._hard else "stopping" if self._stopping else "running"
        return f"Engine({state}, {self.stats!r}, {self._governor!r})"

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
        """Stop sending; ``hard`` also cancels requests in flight. ``reason`` marks a halt."""
        if reason is not None and self.halt_reason is None:
            self.halt_reason = reason
        first = not self._stopping
        self._stopping = True
        if hard and not self._hard:
            self._hard = True
            # Only workers inside a record are cancelled: one that is emitting a result must
            # finish, or that record would be lost.
            for task, flight in self._workers.items():
                if flight is not None:
                    task.cancel()
            return
        if first:
            for task, flight in self._workers.items():
                if flight is not None and flight.interruptible:
                    task.cancel()
            loop = asyncio.get_running_loop()
            self._grace_handle = loop.call_later(self._grace, self._hard_stop)

    def abandon_input(self) -> None:
        """Stop reading the input: nothing more can be written, and no state file keeps it."""
        self._input_abandoned = True

    def _hard_stop(self) -> None:
        self.stop(hard=True)

    async def run(self, records: AsyncIterable[list[InputRecord]], emit: Emit) -> Stats:
        """Process every record from ``records`` (batches of them) and ``emit`` one result each."""
        settings = self.settings
        own_session = None
        try:
            if not settings.dry_run:
                own_session = await self._connect()
                assert self._attempts is not None
                try:
                    # The first token before any input is read: an IMS refusal stops the
                    # batch before any re-trigger, and every record is then not_attempted.
                    await self._attempts.first_token()
                except AuthenticationError as exc:
                    self.stop(str(exc))
            send, receive = anyio.create_memory_object_stream[Flight](
                max_buffer_size=settings.concurrency * 4
            )
            async with anyio.create_task_group() as group:
                # Twice as many workers as requests in flight: a record sleeping out a
                # Retry-After holds a worker but no request, and 429s for every worker at once
                # must not leave the quota idle meanwhile. Only `concurrency` of them are busy
                # unless some rest (see _take_place), so the rest cost nothing per request.
                for _ in range(2 * settings.concurrency):
                    group.start_soon(self._worker, receive.clone(), emit)
                receive.close()
                async with send:
                    if self._ledger is None:
                        await self._feed_from_input(records, send, emit)
                    else:
                        await self._feed_through_ledger(self._ledger, records, send, emit)
            if self._ledger is not None:
                await self._ledger.flush()
        except StateError as exc:
            # The state file failed (a full disk…): nothing more can be recorded, so stop.
            self.stop(str(exc), hard=True)
        finally:
            if self._grace_handle is not None:
                self._grace_handle.cancel()
            if own_session is not None:
                await own_session.close()
        return self.stats

    async def _connect(self) -> aiohttp.ClientSession | None:
        settings = self.settings
        credentials = settings.credentials
        if credentials is None:
            raise MissingCredentialsError(
                ["BULKRETRY_ACCESS_TOKEN", "BULKRETRY_API_KEY", "BULKRETRY_ORG_ID"]
            )
        own = None
        if self._session is None:
            own = self._session = make_session(settings)
        if self._tokens is None:
            try:
                self._tokens = token_provider(credentials, self._session, proxy=settings.ims_proxy)
            except BaseException:
                if own is not None:
                    await own.close()
                raise
        client = FlowServiceClient(
            self._session,
            base_url=settings.base_url,
            op=settings.op,
            api_key=credentials.api_key,
            org_id=credentials.org_id,
            sandbox=credentials.sandbox,
            timeout=settings.timeout,
            proxy=settings.proxy,
        )
        self._attempts = Attempts(
            self,
            client=client,
            tokens=self._tokens,
            governor=self._governor,
            ledger=self._ledger,
            wait=self._wait,
            rng=self._rng,
        )
        return own

    async def _feed_from_input(
        self,
        records: AsyncIterable[list[InputRecord]],
        send: MemoryObjectSendStream[Flight],
        emit: Emit,
    ) -> None:
        """Judge and send records as they are read (no state file: memory bounds the read-ahead).

        A stop does not end the reading: every line still gets its record (``not_attempted``),
        unless the output is gone and nothing could be written anyway.
        """
        try:
            async for batch in records:
                await self._feed(batch, send, emit)
                if self._input_abandoned:
                    return
        except (OSError, InputError) as exc:
            # What was read is accounted for; the rest cannot be, so say so.
            self.stop(f"reading the input failed: {exc}")

    async def _feed(
        self, batch: list[InputRecord], send: MemoryObjectSendStream[Flight], emit: Emit
    ) -> None:
        triage = self._triage
        for record in batch:
            verdict = triage.judge(record)
            if verdict is not None:
                await self._finish_verdict(emit, record, verdict)
            elif self.settings.dry_run:
                await self._finish(emit, record, Outcome.WOULD_RETRIGGER)
            elif self._stopping:
                await self._finish(emit, record, Outcome.NOT_ATTEMPTED, durable=True)
            else:
                await _put(send, Flight(record))

    async def _feed_through_ledger(
        self,
        ledger: Ledger,
        records: AsyncIterable[list[InputRecord]],
        send: MemoryObjectSendStream[Flight],
        emit: Emit,
    ) -> None:
        """Admit the input into the state file as fast as it is read; send what waits there.

        The admitter and this dispatcher meet only in the state file: the input is recorded
        ahead of the requests (so a kill -9 loses none of what was read), and memory holds a
        page of runs at a time however long the input.
        """
        more = asyncio.Event()
        done = False

        async def admitter() -> None:
            nonlocal done
            try:
                await self._admit_all(ledger, records, emit, more)
            finally:
                done = True
                more.set()

        seq = turn = 0
        async with anyio.create_task_group() as group:
            group.start_soon(admitter)
            while True:
                finished = done  # read before the query: rows added after it come round again
                rows = ledger.waiting(seq, turn)
                for row_seq, row_turn, run_id, source, line, doubt in rows:
                    seq, turn = max(seq, row_seq), max(turn, row_turn)
                    flight = Flight(InputRecord(source, line, run_id, ""), prior_doubt=doubt)
                    if doubt and not self.settings.retry_in_doubt:
                        # A run of the batch left in doubt, which the input did not name.
                        await self._finish_verdict(emit, flight.record, HELD_IN_DOUBT)
                    elif self._stopping:
                        outcome, error, _, _ = stopped(flight)
                        await self._finish(
                            emit, flight.record, outcome, error=error, flight=flight, durable=True
                        )
                    else:
                        await _put(send, flight)
                if not rows:
                    if finished:
                        return
                    more.clear()
                    await more.wait()

    async def _admit_all(
        self,
        ledger: Ledger,
        records: AsyncIterable[list[InputRecord]],
        emit: Emit,
        more: asyncio.Event,
    ) -> None:
        """Admit every input record, record how far each source was read, then the leftovers.

        If the state file fails (a full disk), the batch stops, and the rest of the input is
        still read, each line written ``not_attempted``: nothing read goes unaccounted for.
        """
        source: str | None = None
        line = 0
        failed = False
        try:
            async for batch in records:
                if failed:
                    await self._account(batch, emit)
                else:
                    try:
                        await self._admit(ledger, batch, emit)
                        if self.reading_input and batch:
                            last = batch[-1]
                            if source is not None and last.source != source:
                                ledger.progress(source, line, complete=True)
                            source, line = last.source, last.line
                            ledger.progress(source, line, complete=False)
                    except StateError as exc:
                        failed = True
                        self.stop(str(exc), hard=True)
                more.set()
        except (OSError, InputError) as exc:
            self.stop(f"reading the input failed: {exc}")
            return
        if failed:
            return
        try:
            if source is not None:
                ledger.progress(source, line, complete=True)
            self.unfinished_queued = ledger.enqueue_unfinished(ledger.path)
        except StateError as exc:
            self.stop(str(exc), hard=True)

    async def _admit(self, ledger: Ledger, batch: list[InputRecord], emit: Emit) -> None:
        """Admit one batch: judge each record and queue those to send.

        Raise StateError once every record of the batch has its record anyway.
        """
        triage = self._triage
        admitted = [r for r in batch if triage.admissible(r)]
        try:
            found = ledger.admit_many((r.run_id or "", r.source, r.line) for r in admitted)
        except StateError:
            await self._account(batch, emit)
            raise
        admissions = {id(r): a for r, a in zip(admitted, found, strict=True)}
        for index, record in enumerate(batch):
            admission = admissions.get(id(record))
            verdict = triage.judge(record, admission)
            if verdict is not None:
                await self._finish_verdict(emit, record, verdict)
            elif admission is not None and admission.state != "new":
                assert record.run_id is not None
                try:
                    ledger.enqueue(record.run_id, record.source, record.line)
                except StateError:
                    await self._account(batch[index:], emit)
                    raise

    async def _account(self, batch: list[InputRecord], emit: Emit) -> None:
        """Write records read after the state file failed: nothing is sent any more."""
        for record in batch:
            if record.run_id is None:
                error = ErrorInfo(kind="invalid_input", message=record.error or "not a run ID")
                await self._finish(emit, record, Outcome.INVALID, error=error)
            else:
                await self._finish(emit, record, Outcome.NOT_ATTEMPTED)

    async def _finish_verdict(self, emit: Emit, record: InputRecord, verdict: Verdict) -> None:
        await self._finish(
            emit,
            record,
            verdict.outcome,
            error=verdict.error,
            new_run_id=verdict.new_run_id,
            etag=verdict.etag,
            durable=verdict.durable,
            prior_outcome=verdict.prior_outcome,
        )

    async def _finish(
        self,
        emit: Emit,
        record: InputRecord,
        outcome: Outcome,
        *,
        error: ErrorInfo | None = None,
        flight: Flight | None = None,
        new_run_id: str | None = None,
        etag: str | None = None,
        durable: bool = False,
        prior_outcome: str | None = None,
    ) -> None:
        self.stats.outcomes[outcome] += 1
        if flight is None:
            status = request_id = None
            attempts = ambiguous = 0
        else:
            status, request_id = flight.last_status, flight.request_id
            attempts, ambiguous = flight.attempts, flight.ambiguous
        run_id = record.run_id
        if durable and self._ledger is not None and run_id is not None:
            try:
                self._ledger.outcome(
                    run_id,
                    outcome,
                    new_run_id=new_run_id,
                    etag=etag,
                    attempts=attempts,
                    ambiguous=ambiguous,
                    error=error,
                    http_status=status,
                    request_id=request_id,
                )
            except StateError as exc:
                self.stop(str(exc), hard=True)
        await emit(
            RunResult(
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
                prior_outcome=prior_outcome,
            )
        )

    async def _worker(self, receive: MemoryObjectReceiveStream[Flight], emit: Emit) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._workers[task] = None
        places = self.settings.concurrency
        try:
            async with receive:
                held = False
                try:
                    await self._take_place()
                    held = True
                    while (flight := await _next(receive)) is not None:
                        await self._one(task, flight, emit)
                        if self._busy > places:
                            # Records came back from a backoff while others took their place:
                            # give this place up until one is free again.
                            held = False
                            self._leave_place()
                            await self._take_place()
                            held = True
                finally:
                    if held:
                        self._leave_place()
        finally:
            del self._workers[task]

    async def _one(self, task: asyncio.Task[None], flight: Flight, emit: Emit) -> None:
        record = flight.record
        self._workers[task] = flight
        attempts = self._attempts
        assert attempts is not None
        try:
            outcome, error, new_id, etag = await attempts.process(flight)
        except Interrupted:
            outcome, error, new_id, etag = stopped(flight)
        except asyncio.CancelledError:
            if not self._hard:
                raise
            task.uncancel()
            outcome, error, new_id, etag = stopped(flight)
        self._workers[task] = None
        await self._finish(
            emit,
            record,
            outcome,
            error=error,
            flight=flight,
            durable=True,
            new_run_id=new_id,
            etag=etag,
        )

    async def _take_place(self) -> None:
        """Wait for one of the ``concurrency`` places of busy workers.

        Twice as many workers run, but the spare ones stay parked here until a busy one rests
        (a backoff: :meth:`rest`). Without places, every worker would take a record and wait
        for the governor's cap instead, and each request would cost a hand-over between tasks.
        """
        if self._busy < self.settings.concurrency and not self._parked:
            self._busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._parked.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The place was handed over as the cancellation came: pass it on.
                self._leave_place()
            raise

    def _leave_place(self) -> None:
        self._busy -= 1
        self._unpark()

    def _unpark(self) -> None:
        parked = self._parked
        while parked and self._busy < self.settings.concurrency:
            waiter = parked.popleft()
            if not waiter.done():
                self._busy += 1
                waiter.set_result(None)

    def rest(self) -> None:
        """A busy worker's record sleeps out a backoff: its place goes to a parked worker."""
        self._leave_place()

    def wake(self) -> None:
        """The resting record goes on: its worker is busy again, past the count if need be."""
        self._busy += 1


async def _put(send: MemoryObjectSendStream[Flight], flight: Flight) -> None:
    """Hand a record to the workers, yielding to the loop only when they are all busy."""
    # anyio's send() yields to the loop on every item; feeding one record per loop iteration
    # starved the workers (six in flight of 32), so only block when full.
    try:
        send.send_nowait(flight)
    except anyio.WouldBlock:
        await send.send(flight)


async def _next(receive: MemoryObjectReceiveStream[Flight]) -> Flight | None:
    """Take the next record, yielding to the loop only when none is waiting; None at the end."""
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await receive.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None
