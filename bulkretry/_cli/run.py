"""The ``run`` command: open inputs and output, run the engine, report, choose the exit code."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import aiohttp
import orjson

from .._config import Settings
from .._engine.engine import Engine
from .._exceptions import ConfigurationError, InputError
from .._http.client import one_line
from .._io.evidence import Evidence, prescan
from .._io.sink import FLUSH_INTERVAL, OutputClosed, OutputFailed, ResultSink
from .._io.source import STDIN, InputRecord, RunIdValidator, check_column, check_input_paths
from .._io.spool import EarlySignals, StdinInput, stdin_is_a_terminal, take_stdin
from .._io.written import STDOUT_FD, WrittenRecords, settled
from .._model import Outcome, RunResult
from .._stats import Stats
from .batch_input import BatchInput
from .build import build_settings
from .judge import judge_triage, refuse_only
from .logs import configure_logging
from .loop import new_event_loop
from .options import (
    DEFAULT_PROGRESS_EVERY,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_STOPPED,
    explicit_options,
)
from .output import check_batch_output, open_batch_output
from .progress import Progress, format_summary
from .summary import ErrorCounts, summary_of_stats, write_summary_json

__all__ = ["BatchRunner", "exit_code", "run_command"]

if TYPE_CHECKING:
    from .._ledger.ledger import Ledger

log = logging.getLogger("bulkretry")
_BAD = (Outcome.FAILED, Outcome.INVALID, Outcome.IN_DOUBT)
#: Options that only mean something with --follow.
_FOLLOWING = frozenset({"rounds", "round_delay", "poll", "follow_timeout"})


def exit_code(stats: Stats, *, stopped: bool, signum: int | None) -> int:
    """Return the documented exit code for a finished batch."""
    if signum is not None:
        return 128 + signum
    if stopped:
        return EXIT_STOPPED
    if any(stats.count(o) for o in _BAD):
        return EXIT_SOME_FAILED
    # --follow: a new run that ended otherwise than success (never-followed records count "").
    if any(n for final, n in stats.finals.items() if final not in ("", "success")):
        return EXIT_SOME_FAILED
    return EXIT_OK


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
        resume_hint: Callable[[bool, int | None], str] | None = None,
        quiet: bool = False,
        verbose: bool = False,
        progress: bool | None = None,
        session: aiohttp.ClientSession | None = None,
        evidence: Evidence | None = None,
        progress_every: float = DEFAULT_PROGRESS_EVERY,
        log_json: bool = False,
        read: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.batches = batches
        self.total = total
        self.ledger = ledger
        self.resume_hint = resume_hint
        self.sink = ResultSink(fd)
        self.engine = Engine(settings, session=session, ledger=ledger, evidence=evidence)
        self.quiet = quiet
        self.verbose = verbose
        self.show_progress = (not quiet and sys.stderr.isatty()) if progress is None else progress
        self.progress_every = 0.0 if quiet else progress_every
        self.log_json = log_json
        self.read = read
        self.errors = ErrorCounts()
        self.signum: int | None = None
        #: Signals that came before the batch ran (while stdin was read): acted on once it runs.
        self.early_signals: list[int] = []
        self.output_problem: str | None = None
        #: Records the output already holds (a resume continuing its batch's own file).
        self.written: WrittenRecords | None = None
        #: Runs re-triggered after the output broke: in the state file only, or nowhere.
        self.unwritten = 0

    async def emit(self, result: RunResult) -> None:
        if result.error is not None:
            self.errors.add(result)
        if self.output_problem is not None:
            if result.outcome is Outcome.RETRIGGERED:
                self.unwritten += 1
            return
        written, followed = self.written, result.followed
        final = followed is None or settled(followed.final_status, result.next_round)
        if written is not None and written.holds(
            result.run_id, result.outcome.value, result.source, result.line, final=final
        ):
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
        # Soft: requests in flight still get their answers into the state file.
        self.engine.stop(None if quiet else str(exc))
        if self.ledger is None:
            self.engine.abandon_input()

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
        for early in self.early_signals:  # once the engine runs: a stop needs its tasks
            loop.call_soon(self.on_signal, early)
        progress = self._progress()
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
        if self.unwritten and not self.quiet:
            kept = f"; they are in {self.ledger.path}" if self.ledger is not None else ""
            print(
                f"bulkretry: {self.unwritten} runs were re-triggered but not written to the "
                f"output ({self.output_problem}){kept}",
                file=sys.stderr,
            )
        if not self.quiet and not (self.output_problem and "closed" in self.output_problem):
            if not self.log_json:  # the JSON summary waits for the final exit code
                print(format_summary(stats, self.engine.governor), file=sys.stderr)
            self._advise(stats, stopped=stopped or self.signum is not None)
        return exit_code(stats, stopped=stopped, signum=self.signum)

    def _progress(self) -> Progress | None:
        """The live line on a terminal, else a line every --progress-every seconds, or none."""
        stats, governor = self.engine.stats, self.engine.governor
        if self.show_progress:
            progress = Progress(stats, governor, read=self.read)
            if os.isatty(self.sink.fd):  # results go to the same terminal: clear the line first
                self.sink.before_write = progress.clear
            return progress
        if self.progress_every > 0:
            return Progress(
                stats,
                governor,
                live=False,
                interval=self.progress_every,
                json=self.log_json,
                read=self.read,
            )
        return None

    def summary(self, code: int) -> dict[str, object]:
        """Return the batch's summary object, with the final exit code."""
        throttle = self.engine.governor.throttle
        return summary_of_stats(self.engine.stats, self.errors, throttle.learned_rate, code)

    def _advise(self, stats: Stats, *, stopped: bool) -> None:
        """Say how to see what needs a person, and how to carry on after a stop."""
        in_doubt = stats.count(Outcome.IN_DOUBT)
        if in_doubt:
            where = "RESULTS" if self.ledger is None else "--state " + shlex.quote(self.ledger.path)
            print(
                f"bulkretry: {in_doubt} in_doubt (may have been re-triggered): resolve them with "
                f"bulkretry check {where} before sending them again",
                file=sys.stderr,
            )
        if stopped and self.resume_hint is not None:
            # Run as it was after the cap, it stops at once: the batch's re-triggers count.
            settings, capped = self.settings, self.engine.governor.capped
            cap = None if settings.processes > 1 else settings.max_retriggers
            print(f"bulkretry: {self.resume_hint(capped, cap)}", file=sys.stderr)


def run_command(ns: argparse.Namespace, env: Mapping[str, str], argv: Sequence[str]) -> int:
    """Run ``bulkretry run``: check everything that can be checked, then send."""
    taken: list[StdinInput] = []
    early = EarlySignals()  # a Ctrl-C before the batch runs is the batch's, not a crash
    try:
        return _run(ns, env, argv, taken, early.signals)
    finally:
        for stdin in taken:
            stdin.close()
        early.close()  # the signal handlers back, whatever ended the command


def _run(
    ns: argparse.Namespace,
    env: Mapping[str, str],
    argv: Sequence[str],
    taken: list[StdinInput],
    early: list[int],
) -> int:
    configure_logging(quiet=ns.quiet, verbose=ns.verbose, fmt=ns.log_format)
    stored: Mapping[str, object] = {}
    if ns.state:
        from .state import apply_stored_options

        stored, env = apply_stored_options(ns, env, given=explicit_options(argv))
    elif ns.resume:
        raise ConfigurationError("--resume needs --state: it finishes the batch a state file holds")
    if ns.resume and ns.files:
        raise ConfigurationError("--resume reads no input: drop the FILE arguments or --resume")
    settings = build_settings(ns, env, warn=log.warning, given=explicit_options(argv))
    if not settings.follow:
        # Flags only: a variable or a profile may hold the options for the batches that follow.
        given = sorted(_FOLLOWING & explicit_options(argv))
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigurationError(f"{flag} only has effect with --follow: add --follow")
    files = list(ns.files) or [STDIN]
    # With --state, a terminal is no input: the batch is in the state file.
    reads_input = bool(ns.files) or not (ns.resume or (ns.state and stdin_is_a_terminal()))
    evidence = stdin = None
    if reads_input:
        check_input_paths(files)
        if ns.column is not None:
            try:
                check_column(files, ns.column)
            except InputError as exc:
                raise ConfigurationError(str(exc)) from None
        check_batch_output(ns, files)  # a typo'd -o before stdin is read, maybe for minutes
        if STDIN in files and not stdin_is_a_terminal():
            # Read whole first if it brings results lines, or for --only to select by them.
            stdin = take_stdin(signals=early, whole=settings.only is not None)
            taken.append(stdin)
        # Every results line in a FILE is weighed before the first request, whatever its order.
        ahead = stdin.stream if stdin is not None and stdin.read_ahead else None
        evidence = prescan(files, RunIdValidator(settings.run_id_pattern), stdin=ahead)
    refuse_only(settings.only, ns.state, files, evidence)  # (evidence None: no input is read)
    ledger = None
    if ns.state and not reads_input and not os.path.lexists(ns.state):  # a typo'd path: exit 2
        raise ConfigurationError(f"state file {ns.state} does not exist: no batch to resume")
    if ns.state:
        from .state import open_ledger, options_of

        ledger = open_ledger(ns.state, settings, sync=ns.sync)
    try:
        fd, written = open_batch_output(ns, ledger, stored, files if reads_input else [])
        try:
            counts = None
            if ledger is not None:
                options = options_of(ns)
                if "output" not in options and "output" in stored:
                    options["output"] = stored["output"]  # a resume to stdout keeps the file's
                ledger.store_options(options)
                counts = ledger.counts()  # one scan of the runs, shared by what needs it
            source = BatchInput(
                files,
                run_id_pattern=settings.run_id_pattern,
                reads_input=reads_input,
                ledger=ledger,
                column=ns.column,
                counts=counts,
                shard=ns.shard,
                stdin=stdin,
            )
            hint = None
            if ledger is not None:
                from .state import resume_advice

                hint = functools.partial(
                    resume_advice, argv, ledger.path, ns.output, piped=source.piped
                )
            if source.piped and reads_input and stdin_is_a_terminal() and not ns.quiet:
                log.warning("reading run IDs from the terminal, one per line (Ctrl-D to end)")
            with asyncio.Runner(loop_factory=new_event_loop) as loop_runner:
                batch = BatchRunner(
                    settings,
                    source.batches,
                    fd,
                    total=source.total,
                    ledger=ledger,
                    resume_hint=hint,
                    quiet=ns.quiet,
                    verbose=ns.verbose,
                    evidence=evidence,
                    progress_every=ns.progress_every,
                    log_json=ns.log_format == "json",
                    read=source.read_so_far,
                )
                batch.written = written
                batch.early_signals = early
                source.engine = batch.engine
                source.hear = batch.engine.triage.hear
                batch.engine.on_hard_stop = source.hurry
                source.signalled = lambda: batch.signum is not None
                if ledger is not None:
                    # --max-retriggers counts the batch's re-triggers, earlier invocations' and
                    # their further rounds too.
                    assert counts is not None
                    rounds = ledger.counts(rounds=True)["retriggered"]
                    batch.engine.governor.retriggered = counts["retriggered"] + rounds
                code = loop_runner.run(batch.main())
            code = judge_triage(batch.engine, code, resumed=source.resumed, quiet=ns.quiet)
            code = source.finish(code, argv, quiet=ns.quiet)
            summary = source.annotate(batch.summary(code))
            if ns.log_format == "json" and not ns.quiet:
                print(orjson.dumps({"event": "summary", **summary}).decode(), file=sys.stderr)
            if ns.summary_json:
                write_summary_json(ns.summary_json, summary)
            return code
        finally:
            if written is not None:
                written.close()
            if fd != STDOUT_FD:
                os.close(fd)
    finally:
        if ledger is not None:
            ledger.close()
