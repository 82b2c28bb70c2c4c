"""Feed a batch through its state file (``--state``): admit the input ahead, send what waits.

Two tasks meet only in the state file. The admitter reads the input as fast as it comes, judges
each record (:mod:`.triage`, with what the state file knows of its run) and admits it, so that
the whole input is recorded ahead of the requests and a kill -9 loses none of what was written.
The ledger stages what is admitted and writes it in large groups: the admitter has it written
when due (a second at most), the pager when it needs runs to send. The pager takes the runs
waiting to be sent out of the state file a page at a time (``ledger.waiting``) and queues them
for the workers, so memory holds a page of runs however long the input. README's "Crash-safe
batches" says what a user sees of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from .._config import Settings
from .._exceptions import InputError, StateError
from .._io.source import InputRecord
from .._model import DONE_OUTCOMES, ErrorInfo, Outcome
from .steps import Control, Flight, stopped
from .triage import HELD_IN_DOUBT, Triage, Verdict

if TYPE_CHECKING:
    from .._ledger.ledger import Ledger

__all__ = ["Host", "LedgerFeed"]

#: Write one record's result without a request (to the state file too, if the verdict says).
Settle = Callable[[InputRecord, Verdict], Awaitable[None]]
_NOT_ATTEMPTED = Verdict(Outcome.NOT_ATTEMPTED)
_LOST_IN_DOUBT = Verdict(
    Outcome.IN_DOUBT,
    ErrorInfo(
        kind="in_doubt",
        message="an earlier request for this run may have re-triggered it; the state file "
        "failed before anything more was done",
    ),
)


class Host(Control, Protocol):
    """What the feeder needs of the batch around it, besides stopping it."""

    #: False once the records come from the state file itself (a resume without input).
    reading_input: bool
    #: Runs of the state file that the input did not name, queued to be finished too.
    unfinished_queued: int
    #: True when a hard stop ended the reading before the input's end.
    input_cut_short: bool


class LedgerFeed:
    """The feeder of one batch with a state file (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        ledger: Ledger,
        *,
        settings: Settings,
        triage: Triage,
        put: Callable[[Flight], Awaitable[None]],
        settle: Settle,
        admitted: asyncio.Event | None = None,
    ) -> None:
        self._host = host
        self._ledger = ledger
        self._retry_in_doubt = settings.retry_in_doubt
        self._triage = triage
        self._put = put
        self._settle = settle
        #: True once the state file failed: every record read after is written not_attempted.
        self._failed = False
        #: Set once the state file holds the first batch and its progress (or the input ended).
        self._admitted = admitted or asyncio.Event()

    def __repr__(self) -> str:
        return f"LedgerFeed({self._ledger!r})"

    async def run(self, records: AsyncIterable[list[InputRecord]]) -> None:
        """Admit ``records`` into the state file as they are read; queue what waits there."""
        ledger = self._ledger
        host = self._host
        more = asyncio.Event()
        done = False

        async def admitter() -> None:
            nonlocal done
            try:
                await self._admit_all(records, more)
            finally:
                done = True
                self._admitted.set()
                more.set()

        seq = turn = 0
        async with anyio.create_task_group() as group:
            group.start_soon(admitter)
            while True:
                finished = done  # read before the query: rows added after it come round again
                try:
                    rows = ledger.waiting(seq, turn)
                except StateError as exc:
                    await self._fail(exc, [])
                    rows = ledger.waiting(seq, turn)  # what is written can still be read
                for row_seq, row_turn, run_id, source, line, doubt in rows:
                    seq, turn = max(seq, row_seq), max(turn, row_turn)
                    flight = Flight(InputRecord(source, line, run_id, ""), prior_doubt=doubt)
                    if doubt and (not self._retry_in_doubt or source == ledger.path):
                        # A run of the batch left in doubt, which the input did not name:
                        # --retry-in-doubt is for the runs the input names, never these.
                        await self._settle(flight.record, HELD_IN_DOUBT)
                    elif host.stopping:
                        step = stopped(flight)
                        verdict = Verdict(step.outcome, step.error, durable=True)
                        await self._settle(flight.record, verdict)
                    else:
                        await self._put(flight)
                if not rows:
                    if finished:
                        return
                    more.clear()
                    await more.wait()

    async def _admit_all(
        self, records: AsyncIterable[list[InputRecord]], more: asyncio.Event
    ) -> None:
        """Admit every input record, record how far each source was read, then the leftovers.

        If the state file fails (a full disk), the batch stops, and the rest of the input is
        still read, each line written ``not_attempted``: nothing read goes unaccounted for.
        """
        ledger = self._ledger
        host = self._host
        source: str | None = None
        line = 0
        try:
            async for batch in records:
                if self._failed:
                    await self._account(batch)
                else:
                    try:
                        await self._admit(batch)
                        if host.reading_input and batch:
                            last = batch[-1]
                            if source is not None and last.source != source:
                                ledger.progress(source, line, complete=True)
                            source, line = last.source, last.line
                            ledger.progress(source, line, complete=False)
                        ledger.write_admitted(when_due=self._admitted.is_set())
                    except StateError as exc:
                        await self._fail(exc, [])
                    self._admitted.set()
                more.set()
                # The reader is always a batch ahead, so without this the admitter would keep
                # the loop until the whole input is in: no request would start, and no timed
                # commit would fire, until then.
                await asyncio.sleep(0)
        except (OSError, InputError) as exc:
            host.stop(f"reading the input failed: {exc}")
            return
        if self._failed:
            return
        try:
            if not host.input_cut_short:  # else the source stays incomplete: a resume asks
                if source is not None:  # for the input again
                    ledger.progress(source, line, complete=True)
                host.unfinished_queued = ledger.enqueue_unfinished(ledger.path)
            ledger.write_admitted()
        except StateError as exc:
            await self._fail(exc, [])

    async def _admit(self, batch: list[InputRecord]) -> None:
        """Admit one batch: judge each record and queue those to send.

        Raise StateError once every record of the batch has its record anyway.
        """
        ledger = self._ledger
        triage = self._triage
        admitted = [r for r in batch if triage.admissible(r)]
        try:
            found = ledger.admit_many((r.run_id or "", r.source, r.line) for r in admitted)
        except StateError as exc:
            await self._fail(exc, batch)  # admit_many staged none of them
            raise
        admissions = {id(r): a for r, a in zip(admitted, found, strict=True)}
        for index, record in enumerate(batch):
            admission = admissions.get(id(record))
            verdict = triage.judge(record, admission)
            try:
                if verdict is not None:
                    if verdict.outcome is Outcome.SKIPPED and record.run_id is not None:
                        # Named, though not selected: never finished as an unnamed run, and
                        # re-triggered for good when the evidence says so.
                        ledger.name_skipped(
                            record.run_id,
                            done=verdict.prior_outcome in DONE_OUTCOMES,
                            new_run_id=verdict.new_run_id,
                            etag=verdict.etag,
                        )
                    await self._settle(record, verdict)
                    continue
                if admission is None:
                    continue
                assert record.run_id is not None
                if record.prior == Outcome.IN_DOUBT.value:
                    ledger.ambiguous(record.run_id, fed=True)  # sent again: its doubt too
                if admission.state != "new":
                    ledger.enqueue(record.run_id, record.source, record.line)
            except StateError as exc:
                await self._fail(exc, batch[index:])
                raise

    async def _fail(self, exc: StateError, unstaged: list[InputRecord]) -> None:
        """Stop hard once the state file fails; write each record it lost ``not_attempted``
        (``in_doubt`` when an earlier request for its run may have landed).

        Lost are the records staged but never written (a failed write rolls back nothing
        else: the stage is committed as it is written), and ``unstaged``, records of the batch
        at hand not staged yet. None of them was sent: the pager reads only what is written.
        """
        if not self._failed:
            self._failed = True
            self._host.stop(str(exc), hard=True)
        taken = self._ledger.take_unwritten()
        lost = [InputRecord(s, line, r, "") for r, s, line, _ in taken]
        for record, (*_, doubt) in zip(lost, taken, strict=True):
            await self._settle(record, _LOST_IN_DOUBT if doubt else _NOT_ATTEMPTED)
        staged = {(r.source, r.line) for r in lost}
        await self._account([r for r in unstaged if (r.source, r.line) not in staged])

    async def _account(self, batch: list[InputRecord]) -> None:
        """Write records read after the state file failed: nothing is sent any more."""
        for record in batch:
            if record.run_id is None:
                error = ErrorInfo(kind="invalid_input", message=record.error or "not a run ID")
                await self._settle(record, Verdict(Outcome.INVALID, error))
            else:
                await self._settle(record, _NOT_ATTEMPTED)
