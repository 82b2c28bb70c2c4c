"""The ``check`` command: resolve records left ``in_doubt`` after the fact, by looking runs up.

``bulkretry check results.jsonl > checked.jsonl`` writes every input line back, each in-doubt
line resolved where a look-up tells (:mod:`~bulkretry._engine.recheck`): ``retriggered`` with
``resolved_by: "lookup"`` (its new run, or ``candidates``), ``failed`` with ``error.kind:
"not_processed"`` (safe to send again), or still ``in_doubt``; other lines pass through.
``bulkretry check --state batch.db`` does the same for the batch's runs in doubt, records the
verdicts in the state file (a resume then sends the runs not processed, never the others)
and writes one line per run that was in doubt. ``check`` never sends a re-trigger.

Exit codes: 0 every in-doubt record resolved (and no line invalid); 1 some stay in doubt; 2 a
usage error, a state file refused (in use, of another batch), or the pre-flight found the
base URL or the credentials wrong; 3 look-ups were refused (nothing resolved is written).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TextIO

import aiohttp

from .. import _config as C
from .._engine.attribution import cannot_tell
from .._engine.follow_fetch import FollowStats
from .._engine.governor import Governor
from .._engine.recheck import Claimed, Doubt, Rechecker, Timed
from .._engine.steps import Done
from .._exceptions import AuthenticationError, BulkRetryError, ConfigurationError, StateError
from .._http.auth import TokenProvider, token_provider
from .._http.client import FlowServiceClient, make_session
from .._http.preflight import preflight
from .._io.sink import OutputClosed, OutputFailed, ResultSink
from .._io.source import STDIN, RunIdValidator, check_input_paths
from .._io.written import STDOUT_FD, open_output
from .._ledger.resolutions import CheckLedger, DoubtRow
from .build import build_reader_settings
from .check_lines import (
    Plan,
    counted_as,
    doubt_of,
    plan,
    resolution,
    state_line,
    summary,
    written,
)
from .logs import configure_logging
from .loop import new_event_loop
from .options import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_STOPPED,
    EXIT_USAGE,
    add_options,
    explicit_options,
    run_option,
)
from .own_options import CHECK_OWN_OPTIONS as OWN_OPTIONS
from .state import apply_stored_options, identity_of, refuse_shard
from .watch_lines import Line, read_lines

__all__ = ["CHECK_OPTIONS", "OWN_OPTIONS", "Checker", "configure_parser", "run_check"]

log = logging.getLogger("bulkretry")

_run = run_option
CHECK_OPTIONS = [
    _run("base_url"),
    _run("concurrency", "look-ups in flight at most"),
    _run("rate"),
    _run("burst"),
    _run("max_attempts", "attempts per look-up at most"),
    _run(
        "timeout",
        "seconds one look-up may take; also the batch's: a new run created up to this long "
        "after an answer was lost still counts as maybe its own",
    ),
    _run(
        "deadline",
        "the --deadline of the batch that wrote RESULTS: how long before a line's finished_at "
        "its first request may have left",
    ),
    _run("run_id_pattern"),
    _run("token_file"),
    _run("client_secret_file"),
    _run("ca_bundle"),
    _run("quiet"),
    _run("verbose", "log every look-up retried"),
    _run("log_format"),
]


def configure_parser(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Add the ``check`` arguments to ``parser``, with defaults taken from ``env``."""
    parser.description = (
        "Resolve records left in_doubt after the fact, by looking their runs up (their flow, "
        "then the flow's runs created in each record's time): a run found re-triggered becomes "
        "retriggered (resolved_by lookup), one clearly not processed becomes failed with "
        "error.kind not_processed (safe to send again), the rest stay in_doubt. Reads results "
        "lines (every line written back, the others unchanged) or a batch's --state (the "
        "verdicts recorded there). Never re-triggers."
    )
    parser.epilog = (
        "Credentials, and the variables of the options it shares with `run`, are run's;\n"
        "its own options are BULKRETRY_CHECK_<OPTION>. With --state, the options the state\n"
        "file keeps for its batch come after the command line, as for a resume.\n\n"
        "examples:\n"
        "  bulkretry check results.jsonl > checked.jsonl\n"
        "  bulkretry check --state batch.db; bulkretry run --state batch.db --resume\n"
        "  bulkretry check pass1.jsonl pass2.jsonl --deadline 3600 -o checked.jsonl\n\n"
        "exit codes:\n"
        "  0    every in_doubt record resolved (retriggered, or failed not_processed)\n"
        "  1    some stay in_doubt, or a line was invalid or no results line\n"
        "  2    a usage error, a state file refused (in use by a batch, of another batch),\n"
        "       or the pre-flight found --base-url or the credentials wrong\n"
        "  3    look-ups were refused (every line written as it was, nothing recorded)\n"
        "  130  interrupted (SIGINT); 143: terminated (SIGTERM)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "files", nargs="*", metavar="RESULTS", help="results files (JSON lines); - or none: stdin"
    )
    parser.add_argument(
        "--state",
        metavar="PATH",
        help="check the runs in doubt of this batch's state file instead, and record the "
        "verdicts there [env BULKRETRY_STATE, when no RESULTS are given; default none]",
    )
    add_options(parser, OWN_OPTIONS, env)
    add_options(parser, CHECK_OPTIONS, env)


class Checker:
    """Check the service (pre-flight), then look runs in doubt up (:class:`Rechecker`).

    ``session`` and ``tokens`` belong to the caller if given (a test's).
    """

    def __init__(
        self,
        settings: C.Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        tokens: TokenProvider | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._session = session
        self._tokens = tokens
        self._wall = wall
        self.stats = FollowStats()
        self.preflight_passed = False

    def __repr__(self) -> str:
        return f"<Checker preflight_passed={self.preflight_passed} {self.stats!r}>"

    async def check(
        self, doubts: Sequence[Doubt], claimed: Claimed, timed: Timed | None = None
    ) -> dict[str, Done]:
        """Return a verdict per run of ``doubts``; nothing is asked when there is none."""
        if all(d.ghost or d.since_ms is None or d.until_ms is None for d in doubts):
            return {d.run_id: cannot_tell(d.why) for d in doubts if not d.ghost}  # nothing to ask
        own = None
        if self._session is None:
            own = self._session = make_session(self.settings)
        try:
            settings = self.settings
            credentials = settings.credentials
            assert credentials is not None
            tokens = self._tokens or token_provider(
                credentials, self._session, timeout=settings.timeout, proxy=settings.ims_proxy
            )
            client = FlowServiceClient.for_settings(self._session, settings)
            governor = Governor(settings)
            checked = await preflight(client, tokens, settings, acquire=governor.throttle.acquire)
            self.stats.requests += checked.requests
            self.preflight_passed = True
            rechecker = Rechecker(
                client=client,
                tokens=tokens,
                governor=governor,
                settings=settings,
                stats=self.stats,
                wall=self._wall,
            )
            return await rechecker.check(doubts, claimed, timed)
        finally:
            if own is not None:
                await own.close()
                self._session = None


def run_check(
    ns: argparse.Namespace,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    *,
    stdin: IO[bytes] | None = None,
    stderr: TextIO | None = None,
    checker: Callable[[C.Settings], Checker] = Checker,
) -> int:
    """Run ``bulkretry check``; return the exit code (see the module docstring)."""
    err = stderr if stderr is not None else sys.stderr
    configure_logging(quiet=ns.quiet, verbose=ns.verbose, fmt=ns.log_format)
    state = ns.state
    if state is not None and ns.files:
        print("bulkretry: error: give check --state PATH or RESULTS files, not both", file=err)
        return EXIT_USAGE
    if state is None and not ns.files:
        state = env.get("BULKRETRY_STATE") or None
    ledger: CheckLedger | None = None
    try:
        if state is not None:
            ns.state = state
            # The flags given beat the state file's options; run's parser knows check's flags.
            stored, env = apply_stored_options(ns, env, given=explicit_options(args))
            refuse_shard(stored, state)
        settings = build_reader_settings(
            ns,
            env,
            log.warning,
            concurrency=ns.concurrency,
            run_id_pattern=ns.run_id_pattern,
            op=getattr(ns, "op", C.DEFAULT_OP),
        )
        files = list(ns.files) or [STDIN]
        if state is None:
            if files == [STDIN] and stdin is None and sys.stdin.isatty():
                raise ConfigurationError(
                    "check reads results lines: give RESULTS files, - for stdin, or --state PATH"
                )
            check_input_paths(files)
        if state is not None:
            # The state file first: a refused one leaves no output file behind.
            ledger = CheckLedger.open(state, identity_of(settings))
        try:
            fd = open_output(
                ns.output,
                append=ns.append,
                overwrite=ns.overwrite,
                inputs=[state] if state else files,
            )
        except BaseException:
            if ledger is not None:
                ledger.close()
            raise
    except (ConfigurationError, StateError) as exc:
        print(f"bulkretry: error: {exc}", file=err)
        return EXIT_USAGE
    try:
        job = _Job(checker(settings), ResultSink(fd), err, quiet=ns.quiet)
        if ledger is not None:
            with ledger:
                return job.state(ledger)
        lines = read_lines(files, RunIdValidator(settings.run_id_pattern), stdin=stdin)
        lookback = int((settings.deadline + settings.timeout) * 1000)
        return job.results(list(lines), lookback, int(settings.timeout * 1000))
    except (ConfigurationError, StateError) as exc:
        print(f"bulkretry: error: {exc}", file=err)
        return EXIT_USAGE
    finally:
        if fd != STDOUT_FD:
            os.close(fd)


class _Job:
    """One invocation: look up, write every line, count, and say how it went."""

    def __init__(self, checker: Checker, sink: ResultSink, err: TextIO, *, quiet: bool) -> None:
        self.checker = checker
        self.sink = sink
        self.err = err
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.signum: int | None = None
        self.stopped: str | None = None
        #: The output cannot take more lines (its reader went away, or a full disk).
        self.broken = False

    def __repr__(self) -> str:
        return f"<_Job counts={dict(self.counts)} signum={self.signum} stopped={self.stopped!r}>"

    def results(self, lines: list[Line], lookback_ms: int, timeout_ms: int) -> int:
        found: Plan = plan(lines, lookback_ms=lookback_ms, timeout_ms=timeout_ms)
        verdicts = self._look(found.doubts, found.claimed)
        if verdicts is None:
            return EXIT_USAGE
        for line in lines:
            out, counted = written(line, verdicts, found)
            self.counts[counted] += 1
            self._write(out)
        return self._end(found.in_doubt_lines, "")

    def state(self, ledger: CheckLedger) -> int:
        rows: list[DoubtRow] = ledger.doubts(in_flight_grace=self.checker.settings.timeout)
        doubts = [doubt_of(row) for row in rows]
        verdicts = self._look(doubts, ledger.claimed, ledger.timed)
        if verdicts is None:
            return EXIT_USAGE
        if self.stopped is None and self.signum is None:
            found = (resolution(r.run_id, v) for r in rows if (v := verdicts.get(r.run_id)))
            ledger.record(r for r in found if r is not None)
        for row in rows:
            verdict = verdicts.get(row.run_id)
            self.counts[counted_as(verdict)] += 1
            self._write(state_line(row, verdict, ledger.path))
        return self._end(len(rows), f"; recorded in {ledger.path}" if ledger.recorded else "")

    def _look(
        self, doubts: Sequence[Doubt], claimed: Claimed, timed: Timed | None = None
    ) -> dict[str, Done] | None:
        """Run the look-ups under signal handlers; None when the pre-flight refused."""

        async def main() -> dict[str, Done]:
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(self.checker.check(doubts, claimed, timed))

            def stop(signum: int) -> None:
                self.signum = self.signum or signum
                task.cancel()

            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop, signum)
            try:
                return await task
            except asyncio.CancelledError:
                if self.signum is None:
                    raise
                return {}
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)

        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                return runner.run(main())
        except (ConfigurationError, AuthenticationError) as exc:
            if not self.checker.preflight_passed:
                print(f"bulkretry: error: {exc}", file=self.err)
                return None
            self.stopped = str(exc)
        except BulkRetryError as exc:
            self.stopped = str(exc)
        print(f"bulkretry: stopped: {self.stopped}", file=self.err)
        return {}

    def _write(self, line: bytes) -> None:
        if self.broken:
            return
        try:
            self.sink.add(line)
        except OutputClosed:
            self.broken = True  # `| head`: the reader has what it wanted
        except OutputFailed as exc:
            self.broken = True
            self.stopped = self.stopped or str(exc)
            print(f"bulkretry: stopped: {exc}", file=self.err)

    def _end(self, in_doubt: int, recorded: str) -> int:
        try:
            self.sink.flush()
        except OutputClosed:
            pass
        except OutputFailed as exc:
            self.stopped = self.stopped or str(exc)
            print(f"bulkretry: stopped: {exc}", file=self.err)
        counts = self.counts
        if not self.quiet:
            print(summary(counts, self.checker.stats, in_doubt) + recorded, file=self.err)
        if self.signum is not None:
            return 128 + self.signum
        if self.stopped is not None:
            return EXIT_STOPPED
        unresolved = counts["in_doubt"] + counts["invalid"] + counts["skipped"]
        return EXIT_SOME_FAILED if unresolved else EXIT_OK
