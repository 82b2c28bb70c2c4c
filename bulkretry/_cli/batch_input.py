"""Where a ``run`` takes its records from: the input, the state file, or the input and then it.

With ``--state``, input given as FILE arguments, as ``-`` or on a stdin that is not a terminal
is read and merged with the state file (the engine finishes the batch's unfinished runs that
the input does not name). ``--resume``, a terminal, or a stdin that turns out empty mean no
input: the records are the batch's runs, one each. A resume without input after an input that
was never read to its end processes what the state file has, then says which input to feed
again, and never exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .._io.counting import count_records
from .._io.source import STDIN, InputRecord, RecordReader, RunIdValidator
from .._io.spool import StdinInput
from .._model import Outcome
from .options import EXIT_SOME_FAILED

if TYPE_CHECKING:
    from .._engine.engine import Engine
    from .._io.shard import Shard
    from .._ledger.ledger import Ledger

__all__ = ["BatchInput", "read_batches", "resumes_batch"]

log = logging.getLogger("bulkretry")


async def read_batches(
    reader: RecordReader,
    size: int = 512,
    ahead: int = 8192,
    started: Callable[[_Pump], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> AsyncIterator[list[InputRecord]]:
    """Yield the reader's records in batches of whatever has arrived, read in a thread.

    The thread hands records over one by one under a lock, and the loop takes them as soon as
    a batch is full or within :data:`HAND_OVER` of the first one: a pipe that writes a few
    lines and stays open has them admitted at once, not after ``size`` more. At most ``ahead``
    records wait, so a slow consumer holds the reader back. The thread is a daemon: a silent
    pipe left open never keeps the process alive. Once *stopping* says the batch stops, a pipe
    or terminal silent for :data:`SILENCE` is not waited for any longer.
    """
    pump = _Pump(reader, size, ahead, asyncio.get_running_loop(), stopping)
    pump.start()
    if started is not None:
        started(pump)  # the caller may hurry it at a hard stop, and ask if it was cut short
    try:
        while (batch := await pump.take()) is not None:
            yield batch
    finally:
        pump.close()


#: Seconds within which a record read from a slow pipe is handed to the loop.
HAND_OVER = 0.05
#: Seconds a pipe or terminal may stay silent once the batch stops before its reading ends:
#: a stop reads on while the input comes, but never waits the grace period out on a feed
#: left open (``tail -f``, a producer that pages slowly).
SILENCE = 1.0


class _Pump:
    """One reader thread, and the records it read that the loop has not taken yet."""

    def __init__(
        self,
        reader: RecordReader,
        size: int,
        ahead: int,
        loop: asyncio.AbstractEventLoop,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._reader = reader
        self._stopping = stopping
        self._size = size
        self._ahead = ahead
        self._loop = loop
        self._cond = threading.Condition()
        self._pending: list[InputRecord] = []
        self._done = False
        self._closed = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self._hurried = False
        #: True when a stop ended the reading, not the input's end.
        self.cut = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="bulkretry-input", daemon=True).start()

    def _run(self) -> None:
        cond = self._cond
        try:
            for record in self._reader:
                with cond:
                    while len(self._pending) >= self._ahead and not self._closed:
                        cond.wait()
                    if self._closed:
                        return
                    self._pending.append(record)
                    full = len(self._pending) == self._size
                if full:
                    self._wake()
        except BaseException as exc:  # handed to the loop, which raises it
            self._error = exc
        finally:
            with cond:
                self._done = True
            self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    async def take(self) -> list[InputRecord] | None:
        """Return the next batch (full, or what arrived within HAND_OVER); None at the end."""
        loop = self._loop
        deadline: float | None = None
        quiet_since: float | None = None  # since when nothing came, once the batch stops
        while True:
            self._ready.clear()  # before looking: a wake-up after the look is not missed
            with self._cond:
                count, done = len(self._pending), self._done
                due = deadline is not None and loop.time() >= deadline
                if count and (count >= self._size or done or due or self._hurried):
                    batch, self._pending = self._pending, []
                    self._cond.notify()
                    return batch
            if done:
                if self._error is not None:
                    raise self._error
                return None
            if not count and not self._reader.on_file:
                if self._stopping() and quiet_since is None:
                    quiet_since = loop.time()
                silent = quiet_since is not None and loop.time() - quiet_since >= SILENCE
                if self._hurried or silent:
                    self.cut = True
                    return None  # a stop: the rest of a silent input is not waited for
            if count and deadline is None:
                deadline = loop.time() + HAND_OVER
            wait = HAND_OVER if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError:
                pass

    def hurry(self) -> None:
        """Stop waiting for input that has not come: what was read is still handed over, and
        a regular file is read on to its end (its lines are there: none goes unrecorded)."""
        self._hurried = True
        self._ready.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


def resumes_batch(files: Sequence[str], *, reads_input: bool, read_any: bool) -> bool:
    """True when a ``--state`` batch takes its records from the state file: no input is read
    (``--resume``, a terminal), or the one input, stdin, brought none (*read_any*)."""
    return not reads_input or (list(files) == [STDIN] and not read_any)


class BatchInput:
    """The records of one ``run``, and what to say about them once it is over."""

    def __init__(
        self,
        files: Sequence[str],
        *,
        run_id_pattern: str,
        reads_input: bool,
        ledger: Ledger | None,
        column: str | None = None,
        counts: Mapping[str, int] | None = None,
        shard: Shard | None = None,
        stdin: StdinInput | None = None,
    ) -> None:
        self.files = list(files)
        # Stdin as taken before the batch (its first line read, or all of it: see _io.spool).
        self._stdin = stdin
        self.shard = shard
        #: Told of the records of other shards, for what they say of this shard's runs.
        self.hear: Callable[[InputRecord], None] | None = None
        #: Records of the input that belong to other shards: read, and left to them.
        self.others = 0
        self.reads_input = reads_input
        self.ledger = ledger
        self.engine: Engine | None = None
        #: Whether a signal stops the batch: then a silent pipe is not waited for (a halt, or
        #: --max-retriggers, reads the input on to its end, every line its record).
        self.signalled: Callable[[], bool] | None = None
        #: True once the records come from the state file alone (a resume without input).
        self.resumed = False
        self._read = 0
        self._pump: _Pump | None = None
        self._pattern = run_id_pattern
        self._column = column
        if counts is None and ledger is not None:
            counts = ledger.counts()
        self._runs = sum(counts.values()) if counts is not None else 0

    def __repr__(self) -> str:
        return f"BatchInput({self.files!r}, reads_input={self.reads_input}, resumed={self.resumed})"

    @property
    def piped(self) -> bool:
        """True when the input is (or would have been) standard input."""
        return STDIN in self.files

    @property
    def cut_short(self) -> bool:
        """True when a stop ended the reading before the input's end."""
        return self._pump is not None and self._pump.cut

    def hurry(self) -> None:
        """A hard stop: hand over what was read, and stop waiting for the rest of the input."""
        if self._pump is not None:
            self._pump.hurry()

    def _started(self, pump: _Pump) -> None:
        self._pump = pump

    def _stop(self) -> bool:
        return self.signalled is not None and self.signalled()

    def read_so_far(self) -> int:
        """Records read so far: the total while a pipe is still open."""
        return self._read

    def total(self) -> int | None:
        """Count the records to come, when that can be known without consuming them."""
        if not self.reads_input:
            return self._runs
        if self.shard is None or self.shard.count == 1:
            return count_records(self.files)
        if any(path == STDIN or not os.path.isfile(path) for path in self.files):
            return None  # a pipe: not known before it is read
        # Only a record's run ID says whose it is: each line is read, not merely counted.
        reader = RecordReader(self.files, RunIdValidator(self._pattern), column=self._column)
        return sum(map(self.shard.owns, reader))

    async def batches(self) -> AsyncIterator[list[InputRecord]]:
        """Yield the records: the input's, or (no input, or an empty stdin) the batch's runs."""
        if self.reads_input:
            validator = RunIdValidator(self._pattern)
            stdin = self._stdin
            reader = RecordReader(
                self.files,
                validator,
                column=self._column,
                stdin=None if stdin is None else stdin.stream,
                stdin_on_hand=None if stdin is None else stdin.on_hand,
            )
            empty = True
            async for batch in read_batches(reader, started=self._started, stopping=self._stop):
                empty = False
                if self.shard is not None:
                    batch = self._mine(batch)
                    if not batch:
                        continue
                self._read += len(batch)
                yield batch
            if self.cut_short:
                if self.engine is not None:
                    self.engine.input_cut_short = True
                return
            if not resumes_batch(self.files, reads_input=True, read_any=not empty):
                return
        if self.ledger is None:
            return
        from .state import ledger_batches

        self.resumed = True
        if self.engine is not None:
            self.engine.reading_input = False
        why = "" if self.reads_input else " (no input is read: stdin is a terminal, or --resume)"
        log.warning("resuming the %d runs of %s%s", self._runs, self.ledger.path, why)
        async for batch in ledger_batches(self.ledger):
            self._read += len(batch)
            yield batch

    def _mine(self, batch: list[InputRecord]) -> list[InputRecord]:
        """This shard's records of ``batch``; the others' results lines are heard on the way."""
        assert self.shard is not None
        owns, hear = self.shard.owns, self.hear
        mine = []
        for record in batch:
            if owns(record):
                mine.append(record)
            elif hear is not None:
                hear(record)  # what it says may concern runs of this shard
        self.others += len(batch) - len(mine)
        return mine

    def shard_line(self) -> str | None:
        """What this shard took of the input, for the summary (None without --shard)."""
        if self.shard is None:
            return None
        took = f"{self._read:,} record{'s' * (self._read != 1)}"
        if self.resumed:
            line = f"bulkretry: shard {self.shard}: {took}, from the state file"
        else:
            line = (
                f"bulkretry: shard {self.shard}: {took} of the input, {self.others:,} left to "
                f"the other {self.shard.count - 1} shard{'s' * (self.shard.count != 2)}"
            )
        held = self.engine.stats.count(Outcome.IN_DOUBT) if self.engine is not None else 0
        if held and self.shard.count > 1:
            line += (
                f"; its {held:,} in_doubt: once every shard is done, check them with all the "
                "shards' results together: cat r1.jsonl r2.jsonl ... | bulkretry check "
                "--deadline S --timeout S (the batch's)"
            )
        return line

    def annotate(self, summary: dict[str, object]) -> dict[str, object]:
        """Add to the summary object what this shard took of the input (with --shard)."""
        if self.shard is not None:
            summary["shard"] = {
                "index": self.shard.index,
                "count": self.shard.count,
                "records": self._read,
                "others": self.others,
            }
        return summary

    def finish(self, code: int, argv: Sequence[str], *, quiet: bool = False) -> int:
        """Say what became of the input, and make an exit non-zero when a resume could not
        cover it: what this shard took, the reading a hard stop cut short, the input a
        resume without input never saw."""
        if not quiet:
            if self.cut_short:
                records = self._read + self.others
                print(
                    f"bulkretry: stopped reading the input after {records} records "
                    "(stopped while it was still open): the rest was not read",
                    file=sys.stderr,
                )
            shard = self.shard_line()
            if shard is not None:
                print(shard, file=sys.stderr)
        if not self.resumed or self.ledger is None:
            return code
        unread = self.ledger.unread_sources()
        if not unread:
            return code
        read = ", ".join(
            f"{lines:,} lines of {'stdin' if name == STDIN else name}" for name, lines in unread
        )
        again = shlex.join(["bulkretry", *[word for word in argv if word != "--resume"]])
        print(
            f"bulkretry: the input of this batch was never read to its end (only {read}); "
            f"its runs are done, but the rest of the input is not in the state file: feed the "
            f"same input again: ... | {again}",
            file=sys.stderr,
        )
        return code or EXIT_SOME_FAILED
