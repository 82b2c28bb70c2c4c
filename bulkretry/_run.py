"""The ``run`` command: open inputs and output, run the engine, report, choose the exit code."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import shlex
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import aiohttp

from ._cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_STOPPED, build_settings
from ._client import one_line
from ._config import Settings
from ._engine import Engine
from ._exceptions import InputError
from ._logging import configure_logging
from ._progress import Progress, format_summary
from ._result import Outcome, RunResult
from ._sink import FLUSH_INTERVAL, OutputClosed, OutputFailed, ResultSink
from ._source import (
    STDIN,
    InputRecord,
    RecordReader,
    RunIdValidator,
    check_input_paths,
    count_records,
)
from ._stats import Stats

__all__ = ["BatchRunner", "exit_code", "new_event_loop", "run_command"]

if TYPE_CHECKING:
    from ._ledger import Ledger

log = logging.getLogger("bulkretry")
#: Results go to the process's standard output, whatever ``sys.stdout`` has been replaced by.
STDOUT_FD = 1
_BAD = (Outcome.FAILED, Outcome.INVALID, Outcome.IN_DOUBT)


def exit_code(stats: Stats, *, stopped: bool, signum: int | None) -> int:
    """Return the documented exit code for a finished batch."""
    if signum is not None:
        return 128 + signum
    if stopped:
        return EXIT_STOPPED
    if any(stats.count(o) for o in _BAD):
        return EXIT_SOME_FAILED
    return EXIT_OK


def open_output(path: str | None, *, append: bool, overwrite: bool, inputs: Sequence[str]) -> int:
    """Open the results destination and return its descriptor; refuse unsafe targets."""
    if path is None or path == "-":
        return STDOUT_FD
    if append and overwrite:
        raise InputError("--append and --overwrite cannot be used together")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"cannot use output {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"output is a directory: {path}")
        for name in inputs:
            if name != STDIN and os.path.exists(name) and os.path.samefile(name, path):
                raise InputError(f"output {path} is also an input; write the results elsewhere")
        if stat.S_ISREG(st.st_mode) and st.st_size > 0 and not (append or overwrite):
            raise InputError(f"output {path} exists and is not empty; use --append or --overwrite")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
        if append and st is not None and stat.S_ISREG(st.st_mode):
            _drop_cut_line(fd, path)
        return fd
    except OSError as exc:
        raise InputError(f"cannot write output {path}: {exc.strerror}") from None


def _drop_cut_line(fd: int, path: str) -> None:
    """Truncate a results file after its last whole line: a killed writer may have cut one."""
    size = os.fstat(fd).st_size
    with open(path, "rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
    log.warning(
        "%s ended with a cut line (%d bytes); removed it before appending", path, size - keep
    )
    os.ftruncate(fd, keep)


async def read_batches(reader: RecordReader) -> AsyncIterator[list[InputRecord]]:
    """Yield the reader's records in batches, reading in a thread so a slow pipe never blocks."""
    loop = asyncio.get_running_loop()
    while True:
        batch = await loop.run_in_executor(None, reader.read_batch)
        if not batch:
            return
        yield batch


Batches = Callable[[], AsyncIterator[list[InputRecord]]]


class BatchRunner:
    """One batch as the CLI runs it: the engine, its output, its signals and its report."""

    def __init__(
        self,
        settings: Settings,
        batches: Batches,
        fd: int,
        *,
        total: Callable[[], int | None] | None = None,
        ledger: Ledger | None = None,
        resume_hint: str | None = None,
        quiet: bool = False,
        verbose: bool = False,
        progress: bool | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.batches = batches
        self.total = total
        self.ledger = ledger
        self.resume_hint = resume_hint
        self.sink = ResultSink(fd)
        self.engine = Engine(settings, session=session, ledger=ledger)
        self.quiet = quiet
        self.verbose = verbose
        self.show_progress = (not quiet and sys.stderr.isatty()) if progress is None else progress
        self.signum: int | None = None
        self.output_problem: str | None = None

    async def emit(self, result: RunResult) -> None:
        if self.output_problem is not None:
            return
        if self.verbose and result.outcome in _BAD:
            log.info(
                "%s %s: %s",
                one_line(result.run_id),
                result.outcome.value,
                one_line(result.error.message) if result.error else "",
            )
        try:
            self.sink.add(result.to_json_line())
        except (OutputClosed, OutputFailed) as exc:
            self._output_broke(exc)

    def _output_broke(self, exc: OutputClosed | OutputFailed) -> None:
        self.output_problem = str(exc)
        quiet = isinstance(exc, OutputClosed)
        self.engine.stop(None if quiet else str(exc), hard=True)

    def on_signal(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning(
                "stopping: no new requests; waiting for those in flight (again to stop at once)"
            )
            self.engine.stop()
        else:
            self.engine.stop(hard=True)

    def _set_total(self, counting: asyncio.Future[int | None]) -> None:
        if not counting.cancelled() and counting.exception() is None:
            self.engine.stats.total = counting.result()

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self._flush()

    def _flush(self) -> None:
        if self.output_problem is None:
            try:
                self.sink.flush()
            except (OutputClosed, OutputFailed) as exc:
                self._output_broke(exc)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal, signum)
        progress = Progress(self.engine.stats, self.engine.governor) if self.show_progress else None
        flusher = loop.create_task(self.flusher())
        if progress is not None:
            progress.start()
            if self.total is not None:
                counting = loop.run_in_executor(None, self.total)
                counting.add_done_callback(self._set_total)
        try:
            stats = await self.engine.run(self.batches(), self.emit)
        finally:
            flusher.cancel()
            self._flush()
            if progress is not None:
                await progress.stop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        stopped = self.engine.halt_reason is not None or self.output_problem is not None
        if self.engine.halt_reason is not None:
            log.error("stopped: %s", self.engine.halt_reason)
        elif self.output_problem is not None and "closed" not in self.output_problem:
            log.error("stopped: %s", self.output_problem)
        if not self.quiet and not (self.output_problem and "closed" in self.output_problem):
            print(format_summary(stats, self.engine.governor), file=sys.stderr)
            self._advise(stats, stopped=stopped or self.signum is not None)
        return exit_code(stats, stopped=stopped, signum=self.signum)

    def _advise(self, stats: Stats, *, stopped: bool) -> None:
        """Say how to see what needs a person, and how to carry on after a stop."""
        ledger = self.ledger
        in_doubt = stats.count(Outcome.IN_DOUBT)
        if in_doubt and ledger is not None:
            print(
                f"bulkretry: {in_doubt} in_doubt (may have been re-triggered); list them with: "
                f"bulkretry status --state {shlex.quote(ledger.path)} --list in_doubt",
                file=sys.stderr,
            )
        elif in_doubt:
            print(
                f"bulkretry: {in_doubt} in_doubt (may have been re-triggered): check those runs "
                "before sending them again; their results lines say so",
                file=sys.stderr,
            )
        if stopped and self.resume_hint is not None:
            print(f"bulkretry: to resume: {self.resume_hint}", file=sys.stderr)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_command(ns: argparse.Namespace, env: Mapping[str, str], argv: Sequence[str]) -> int:
    """Run ``bulkretry run``: check everything that can be checked, then send."""
    configure_logging(quiet=ns.quiet, verbose=ns.verbose, fmt=ns.log_format)
    settings = build_settings(ns, env, warn=log.warning)
    files = list(ns.files) or [STDIN]
    check_input_paths(files)
    ledger = None
    if ns.state:
        from ._state import open_ledger

        ledger = open_ledger(ns.state, settings, sync=ns.sync)
    try:
        resume = ledger is not None and not ns.files and any(ledger.counts().values())
        fd = open_output(
            ns.output,
            append=ns.append,
            overwrite=ns.overwrite,
            inputs=[] if resume else files,
        )
        batches: Batches
        total: Callable[[], int | None]
        hint = None
        if ledger is not None:
            from ._state import ledger_batches, resume_command

            hint = resume_command(argv, ledger.path, ns.output)
        if resume:
            assert ledger is not None
            batches = functools.partial(ledger_batches, ledger)
            counts = ledger.counts()
            total = functools.partial(sum, counts.values())
            log.warning("resuming the %d runs of %s", total(), ledger.path)
        else:
            reader = RecordReader(files, RunIdValidator(settings.run_id_pattern))
            batches = functools.partial(read_batches, reader)
            total = functools.partial(count_records, files)
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                batch = BatchRunner(
                    settings,
                    batches,
                    fd,
                    total=total,
                    ledger=ledger,
                    resume_hint=hint,
                    quiet=ns.quiet,
                    verbose=ns.verbose,
                )
                return runner.run(batch.main())
        finally:
            if fd != STDOUT_FD:
                os.close(fd)
    finally:
        if ledger is not None:
            ledger.close()
