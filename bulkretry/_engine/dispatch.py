"""Hand records to the workers: retries that came due first, then fresh input.

Workers never sleep out a backoff. A record waiting for its retry is an entry of a heap keyed by
its due time, and one timer handle, set for the earliest entry, moves it to the ``due`` queue
when its time comes (the shape of aiolimiter's waiters and of
:class:`~bulkretry._pace.budget.RetryBudget`). Fresh records come from the feeder through a
bounded queue: :meth:`Dispatch.put` waits while ``buffer`` of them are queued.

A record may also be *held* until a future is done (:meth:`Dispatch.hold`: a token of the retry
budget, a look-up); the future's callback decides when it comes back. :meth:`Dispatch.drain` (a
stop) makes everything waiting due at once, and cancels what is held (a look-up under way
excepted).

One counter bounds memory and decides the end: the records *in hand*, taken from the input and
not yet finished (in an attempt, in the heap, or held). :meth:`Dispatch.take` hands out a fresh
record only while fewer than ``max_pending`` are in hand, and returns None once the input is
closed and none is in hand. Records set *aside* do not count against it, each kind bounded on
its own: those waiting their own Retry-After (never more than the sends of one), and up to
``max_pending`` lost answers' look-ups.

Time is the event loop's (``loop.time()``, ``loop.call_at``), so a test's virtual clock drives
every delay.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PENDING_PER_WORKER", "QUEUED_PER_WORKER", "READ_AHEAD", "Dispatch"]

T = TypeVar("T")

#: Records in hand per worker: while some wait out a backoff, others are sent, as many as ever.
PENDING_PER_WORKER = 2
#: Fresh records queued per worker ahead of the workers...
QUEUED_PER_WORKER = 4
#: ... and two seconds' worth at the rate, up to this many: the feeder resumes at half full, so
#: the input's end is known (:meth:`Dispatch.close`) a second or more before its last send (at
#: up to 512/s; less above).
READ_AHEAD = 1024

# A timer may fire up to the loop's clock resolution early (uvloop's clock ticks in
# milliseconds); take entries due within one tick as due, or the timer would spin until then.
_TICK = 0.001


class Dispatch(Generic[T]):
    """The records of one batch between the feeder and the workers (see the module docstring)."""

    __slots__ = (
        "_aside",
        "_buffer",
        "_closed",
        "_count",
        "_drained",
        "_due",
        "_extra",
        "_feeder",
        "_fresh",
        "_handle",
        "_handle_at",
        "_held",
        "_held_aside",
        "_in_hand",
        "_later",
        "_loop",
        "_low",
        "_max_pending",
        "_takers",
    )

    def __init__(self, *, max_pending: int, buffer: int) -> None:
        if max_pending < 1 or buffer < 1:
            raise ValueError(f"max_pending and buffer must be at least 1: {max_pending}, {buffer}")
        self._max_pending = max_pending
        self._buffer = buffer
        # The feeder, once blocked, resumes when half the buffer is free: in bursts, not per item.
        self._low = buffer // 2
        self._fresh: deque[T] = deque()
        self._due: deque[T] = deque()
        self._later: list[tuple[float, int, T]] = []
        self._count = 0
        # uvloop's call_at answers a plain Handle (no when()) for a time within its clock's
        # tick: the timer's time is kept here.
        self._handle: asyncio.Handle | None = None
        self._handle_at = 0.0
        self._takers: deque[asyncio.Future[T | None]] = deque()
        self._feeder: asyncio.Future[None] | None = None
        self._held: set[asyncio.Future[Any]] = set()
        self._held_aside = 0
        self._in_hand = 0
        # Held outside the input (further rounds, followed chains): they keep the workers, but
        # never hold fresh input back.
        self._extra = 0
        # The heap entries (by count) set aside: not in hand until they are due.
        self._aside: set[int] = set()
        self._closed = False
        self._drained = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_workers(cls, workers: int, rate: float) -> Dispatch[T]:
        """A dispatch for *workers* that send at up to *rate* requests per second."""
        ahead = min(READ_AHEAD, math.ceil(2 * rate))
        return cls(
            max_pending=PENDING_PER_WORKER * workers, buffer=max(QUEUED_PER_WORKER * workers, ahead)
        )

    def __repr__(self) -> str:
        state = [
            f"in_hand={self._in_hand}/{self._max_pending}",
            f"fresh={len(self._fresh)}/{self._buffer}",
            f"due={len(self._due)}",
            f"later={len(self._later)}",
            f"held={len(self._held)}",
            f"takers={sum(not f.done() for f in self._takers)}",
        ]
        if self._later and self._loop is not None:
            state.append(f"next in {self._later[0][0] - self._loop.time():.3f}s")
        if self._closed:
            state.append("closed")
        if self._drained:
            state.append("drained")
        return f"<Dispatch {', '.join(state)}>"

    @property
    def in_hand(self) -> int:
        """Records taken from the input and not yet finished."""
        return self._in_hand

    @property
    def waiting(self) -> int:
        """Records in the heap, waiting for their retry to come due."""
        return len(self._later)

    @property
    def held(self) -> int:
        """Records held until a future is done (see :meth:`hold`)."""
        return len(self._held)

    @property
    def queued(self) -> int:
        """Fresh records queued by the feeder and not yet taken."""
        return len(self._fresh)

    @property
    def next_due(self) -> float | None:
        """The loop time the timer is set for, if a record waits in the heap."""
        return self._handle_at if self._handle is not None else None

    async def put(self, item: T) -> None:
        """Queue a fresh record; wait while ``buffer`` of them are queued already."""
        if self._takers and self._in_hand < self._max_pending and self._hand(item):
            self._in_hand += 1
            return
        fresh = self._fresh
        fresh.append(item)
        if len(fresh) >= self._buffer:
            loop = self._loop or self._get_loop()
            feeder = self._feeder = loop.create_future()
            try:
                await feeder
            finally:
                self._feeder = None

    def close(self) -> None:
        """Say that no fresh record will come: workers end once every record is finished."""
        self._closed = True
        self._balance()

    async def take(self) -> T | None:
        """Return the next record to attempt, waiting for one; None once all are finished.

        A retry that came due comes first, then fresh input while fewer than ``max_pending``
        records are in hand.
        """
        due = self._due
        if due:
            item = due.popleft()
            if self._takers:
                self._balance()
            return item
        fresh = self._fresh
        if fresh and self._in_hand < self._max_pending:
            self._in_hand += 1
            item = fresh.popleft()
            if self._feeder is not None and len(fresh) <= self._low:
                self._wake_feeder()
            return item
        if self._closed and not self._in_hand and not self._extra:
            return None
        loop = self._loop or self._get_loop()
        taker: asyncio.Future[T | None] = loop.create_future()
        self._takers.append(taker)
        try:
            return await taker
        except asyncio.CancelledError:
            if taker.done() and not taker.cancelled() and (given := taker.result()) is not None:
                # Handed a record as the cancellation came: it is still in hand, so pass it on.
                self._due.appendleft(given)
                self._balance()
            raise

    def schedule(self, item: T, at: float, *, aside: bool = False) -> None:
        """Give ``item`` back to the workers at loop time ``at`` (at once if that is past).

        With ``aside`` the record does not count against ``max_pending`` until it is due: it
        waits out a Retry-After of its own (a 429 that does not depend on the rate), and the
        others go on meanwhile. Only records that were sent wait so, so they are never more
        than the sends of one Retry-After.
        """
        loop = self._loop or self._get_loop()
        if self._drained or at <= loop.time():
            self._ready(item)
            return
        self._count += 1
        if aside:
            self._aside.add(self._count)
            self._set_aside()
        heapq.heappush(self._later, (at, self._count, item))
        handle = self._handle
        if handle is None or at < self._handle_at:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(at, self._fire)
            self._handle_at = at

    def adopt(self, item: T, at: float) -> None:
        """Take ``item`` from outside the input (a further round), due at ``at``.

        It keeps the workers until :meth:`release` says it is finished, but does not count
        against ``max_pending``: rounds waiting out their delay never hold fresh input back.
        """
        self._extra += 1
        self.schedule(item, at)

    def keep(self) -> None:
        """Hold the workers back from ending until :meth:`release`, as an adopted record would.

        ``run --follow`` keeps one while new runs are followed: a further round may come.
        """
        self._extra += 1

    def release(self) -> None:
        """Say that an adopted record (or a :meth:`keep`) is finished."""
        self._extra -= 1
        if self._takers:
            self._balance()

    def hold(
        self,
        item: T,
        until: asyncio.Future[Any],
        then: Callable[[T, asyncio.Future[Any]], None],
        *,
        aside: bool = False,
        drained: bool = True,
    ) -> None:
        """Keep ``item`` aside until ``until`` is done, then call ``then(item, until)``.

        ``then`` gives the record back (:meth:`schedule`), or finds it something else to wait
        for. :meth:`drain` cancels ``until`` (unless not ``drained``: a look-up under way
        finishes): ``then`` must schedule the record then. With ``aside`` the record does not
        count against ``max_pending`` meanwhile, while fewer than ``max_pending`` are so held
        (lost answers' look-ups: memory stays bounded whatever they wait for).
        """
        if drained:
            self._held.add(until)
        aside = aside and self._held_aside < self._max_pending
        if aside:
            self._held_aside += 1
            self._set_aside()

        def call(future: asyncio.Future[Any]) -> None:
            self._held.discard(future)
            if aside:
                self._held_aside -= 1
                self._back_in_hand()
            then(item, future)

        until.add_done_callback(call)
        if self._drained and drained:
            until.cancel()

    def done(self) -> None:
        """Say that one record in hand is finished."""
        self._in_hand -= 1
        if self._takers:
            self._balance()

    def drain(self) -> None:
        """Make every record waiting in the heap due now, and every one scheduled from now on.

        A stop calls this: what waits for a retry is not sent any more, and the workers account
        for it at once. What is held has its future cancelled.
        """
        self._drained = True
        for until in list(self._held):
            until.cancel()
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        while self._later:
            self._ready(self._pop())

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = asyncio.get_running_loop()
        return loop

    def _fire(self) -> None:
        """Move every record that came due from the heap to the workers; set the next timer."""
        self._handle = None
        loop = self._loop
        assert loop is not None
        later = self._later
        now = loop.time() + _TICK
        while later and later[0][0] <= now:
            self._ready(self._pop())
        if later:
            self._handle_at = at = later[0][0]
            self._handle = loop.call_at(at, self._fire)

    def _pop(self) -> T:
        """Take the earliest record from the heap; one set aside is in hand again."""
        _, count, item = heapq.heappop(self._later)
        if count in self._aside:
            self._aside.discard(count)
            self._back_in_hand()
        return item

    def _set_aside(self) -> None:
        """A record in hand no longer counts against ``max_pending`` (it still keeps the
        workers from ending): fresh input may take its place."""
        self._in_hand -= 1
        self._extra += 1
        if self._takers:
            self._balance()

    def _back_in_hand(self) -> None:
        """A record set aside counts against ``max_pending`` again."""
        self._in_hand += 1
        self._extra -= 1

    def _ready(self, item: T) -> None:
        """Hand a record that is due to a waiting worker, or queue it for the next one."""
        if not self._hand(item):
            self._due.append(item)

    def _hand(self, item: T) -> bool:
        """Give ``item`` to the first worker still waiting; False if none is."""
        takers = self._takers
        while takers:
            taker = takers.popleft()
            if not taker.done():
                taker.set_result(item)
                return True
        return False

    def _balance(self) -> None:
        """Give waiting workers what there is for them: due records, fresh ones, or the end."""
        takers = self._takers
        while takers:
            if takers[0].done():
                takers.popleft()
                continue
            item: T | None
            if self._due:
                item = self._due.popleft()
            elif self._fresh and self._in_hand < self._max_pending:
                self._in_hand += 1
                item = self._fresh.popleft()
                if self._feeder is not None and len(self._fresh) <= self._low:
                    self._wake_feeder()
            elif self._closed and not self._in_hand and not self._extra and not self._fresh:
                item = None  # the end: every waiting worker hears it
            else:
                return
            takers.popleft().set_result(item)

    def _wake_feeder(self) -> None:
        feeder = self._feeder
        if feeder is not None and not feeder.done():
            feeder.set_result(None)
