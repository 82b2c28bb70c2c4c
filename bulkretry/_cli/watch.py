"""The ``watch`` command: follow the new runs of earlier results lines to their end.

``bulkretry run ids.txt -o results.jsonl; bulkretry watch results.jsonl > final.jsonl`` tells,
for every re-triggered run, whether its new run succeeded. Each input line gives one output
line: the results line as it was, with ``final_status`` (``success``, ``failed``,
``partial``, ``unknown``, also for a line re-triggered whose new run is not known; null for a
line that was never re-triggered), ``chain``, ``rounds`` and, when known, ``final_status_raw``
and ``final_error``. A bare run ID is ``skipped`` and invalid lines are reported as ``run``
reports them. ``watch`` only looks (:class:`~bulkretry._engine.follow.Follower`): it
never sends a re-trigger.

Exit codes: 0 every valid line's run ended ``success`` (and no line was invalid); 1 some did
not (a skipped bare run ID or a line never re-triggered did not either); 2 a usage error, or
the pre-flight found the base URL or the credentials wrong; 3 look-ups were refused while
following (every run not yet ended is written ``unknown``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import IO, TextIO

import aiohttp

from .. import _config as C
from .._engine.follow import Ended, Follower, FollowStats
from .._engine.governor import Governor
from .._exceptions import AuthenticationError, BulkRetryError, ConfigurationError
from .._http.auth import TokenProvider, token_provider
from .._http.client import FlowServiceClient, make_session
from .._http.preflight import preflight
from .._io.sink import OutputClosed, OutputFailed, ResultSink
from .._io.source import STDIN, RunIdValidator, check_input_paths
from .._io.written import STDOUT_FD, open_output
from .build import build_reader_settings
from .logs import configure_logging
from .loop import new_event_loop
from .options import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_STOPPED,
    EXIT_USAGE,
    add_options,
    run_option,
)
from .own_options import WATCH_OWN_OPTIONS as OWN_OPTIONS
from .watch_lines import BARE, NOT_RETRIGGERED, UNTOLD, Line, read_lines

__all__ = ["OWN_OPTIONS", "WATCH_OPTIONS", "Watcher", "configure_parser", "run_watch"]

log = logging.getLogger("bulkretry")

_run = run_option
WATCH_OPTIONS = [
    _run("base_url"),
    _run("concurrency", "look-ups in flight at most"),
    _run("rate"),
    _run("burst"),
    _run("max_attempts", "attempts per look-up at most"),
    _run("timeout"),
    _run("deadline", "seconds one look-up may take across all attempts"),
    _run("run_id_pattern"),
    _run("token_file"),
    _run("client_secret_file"),
    _run("ca_bundle"),
    _run("quiet"),
    _run("verbose", "log every look-up retried"),
    _run("log_format"),
]


def configure_parser(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Add the ``watch`` arguments to ``parser``, with defaults taken from ``env``."""
    parser.description = (
        "Follow the new runs of earlier results lines (retriggered or already_retriggered, "
        "with a new_run_id) until each ends, and write every line back with final_status "
        "(success, failed, partial, unknown; null if never re-triggered), chain and rounds; "
        "a bare run ID is skipped. "
        "Looks up runs in few requests (listings by creation time); never re-triggers."
    )
    parser.epilog = (
        "Credentials, and the variables of the options it shares with `run`, are run's;\n"
        "its own options are BULKRETRY_WATCH_<OPTION>.\n\n"
        "examples:\n"
        "  bulkretry watch results.jsonl > final.jsonl\n"
        "  bulkretry run ids.txt | bulkretry watch --poll 60 -o final.jsonl\n\n"
        "exit codes:\n"
        "  0    every valid line's run ended success\n"
        "  1    some ended otherwise (failed, partial, unknown, never re-triggered, skipped,\n"
        "       invalid)\n"
        "  2    a usage error, or the pre-flight found --base-url or the credentials wrong\n"
        "  3    look-ups were refused while following (the rest is written unknown)\n"
        "  130  interrupted (SIGINT); 143: terminated (SIGTERM)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "files",
        nargs="*",
        metavar="RESULTS",
        help="results files of run (JSON lines); - or none: stdin",
    )
    add_options(parser, OWN_OPTIONS, env)
    add_options(parser, WATCH_OPTIONS, env)


def build_watch_settings(
    ns: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None]
) -> C.Settings:
    """Build the :class:`Settings` of a watch, with the same credentials as ``run``."""
    return build_reader_settings(
        ns,
        env,
        warn,
        concurrency=ns.concurrency,
        run_id_pattern=ns.run_id_pattern,
        poll=ns.poll,
        follow_timeout=ns.follow_timeout,
    )


class Watcher:
    """Follow the runs of some input lines and hand each line's output to ``emit``.

    ``session`` and ``tokens`` belong to the caller if given (a test's); otherwise a session
    is opened for the watch and the token comes from ``settings.credentials``.
    """

    def __init__(
        self,
        settings: C.Settings,
        emit: Callable[[bytes], None],
        *,
        session: aiohttp.ClientSession | None = None,
        tokens: TokenProvider | None = None,
    ) -> None:
        self.settings = settings
        self._emit = emit
        self._session = session
        self._tokens = tokens
        self.follower: Follower | None = None
        #: final_status of each run followed; why each other valid line was not (BARE…).
        self.finals: Counter[str] = Counter()
        self.unfollowed: Counter[str] = Counter()
        self.invalid = 0
        self.stats = FollowStats()
        self.halt_reason: str | None = None
        self.signum: int | None = None
        #: Why the output could not be written (closed by its reader, a full disk…).
        self.output_problem: OutputClosed | OutputFailed | None = None

    def __repr__(self) -> str:
        return (
            f"<Watcher finals={dict(self.finals)} unfollowed={dict(self.unfollowed)} "
            f"invalid={self.invalid} {self.follower!r}>"
        )

    def stop(self, signum: int | None = None) -> None:
        """Stop following (a signal): the runs not ended yet are written ``unknown``."""
        if signum is not None and self.signum is None:
            self.signum = signum
        if self.follower is not None:
            self.follower.stop()

    async def watch(self, lines: list[Line]) -> FollowStats:
        """Check the service (pre-flight), then follow and write every line; return the cost.

        Raise :class:`~bulkretry._exceptions.BaseUrlError` or :class:`AuthenticationError`
        when the pre-flight fails, before any line is written.
        """
        targets = [line for line in lines if line.target is not None]
        own = None
        try:
            if targets:
                if self._session is None:
                    own = self._session = make_session(self.settings)
                await self._follow(lines, targets, self._session)
            else:
                for line in lines:
                    self._write(line, None)
        finally:
            if own is not None:
                await own.close()
        return self.stats

    async def _follow(
        self, lines: list[Line], targets: list[Line], session: aiohttp.ClientSession
    ) -> None:
        settings = self.settings
        credentials = settings.credentials
        assert credentials is not None
        tokens = self._tokens or token_provider(
            credentials, session, timeout=settings.timeout, proxy=settings.ims_proxy
        )
        client = FlowServiceClient.for_settings(session, settings)
        governor = Governor(settings)
        checked = await preflight(client, tokens, settings, acquire=governor.throttle.acquire)
        follower = self.follower = Follower(
            client=client, tokens=tokens, governor=governor, settings=settings
        )
        self.stats = follower.stats
        follower.stats.requests += checked.requests
        futures = []
        for line in lines:
            if line.target is None:
                self._write(line, None)
                continue
            future = follower.add(
                line.target, flow_id=line.flow_id, since_ms=line.since_ms, first_look=0.0
            )
            future.add_done_callback(functools.partial(self._ended, line))
            futures.append(future)
        follower.close()
        if self.signum is not None or self.output_problem is not None:
            follower.stop()
        await follower.run()
        # Every future is done now; their callbacks run before this gather's own.
        await asyncio.gather(*futures)
        self.halt_reason = follower.halt_reason

    def _ended(self, line: Line, future: asyncio.Future[Ended]) -> None:
        self._write(line, future.result())

    def _write(self, line: Line, ended: Ended | None) -> None:
        if not line.valid:
            self.invalid += 1
        elif ended is not None:
            self.finals[ended.final_status] += 1
        else:
            self.unfollowed[line.unfollowed] += 1
        followed = ended.followed(line.chain) if ended is not None else line.followed_none()
        if self.output_problem is not None:
            return
        try:
            self._emit(line.output(followed))
        except (OutputClosed, OutputFailed) as exc:
            self.output_problem = exc
            self.stop()

    def summary(self) -> str:
        """Return the end-of-watch lines for stderr."""
        finals, stats = self.finals, self.stats
        ended = ", ".join(
            f"{finals[name]} {name}" for name in ("success", "failed", "partial", "unknown")
        )
        lines = [
            f"bulkretry: {stats.followed} runs followed: {ended}; {stats.requests} look-up "
            f"requests ({stats.listings} listings in {stats.pages} pages, {stats.gets} runs "
            f"looked up alone, {stats.retries} retries), {stats.per_run():.2f} per followed run"
        ]
        unfollowed = self.unfollowed
        if unfollowed[UNTOLD]:
            lines.append(
                f"bulkretry: {unfollowed[UNTOLD]} lines re-triggered, but which new run is theirs "
                "is not known (candidates, or a further round in doubt): final_status unknown, "
                "not followed"
            )
        if unfollowed[NOT_RETRIGGERED] or self.invalid:
            lines.append(
                f"bulkretry: {unfollowed[NOT_RETRIGGERED]} lines never re-triggered "
                f"(final_status null), {self.invalid} invalid"
            )
        return "\n".join(lines)

    def bare_ids(self) -> str | None:
        """Return the stderr line saying why bare run IDs were skipped, if any were."""
        bare = self.unfollowed[BARE]
        if not bare:
            return None
        return (
            f"bulkretry: {bare} bare run IDs skipped, so not success: a bare run ID carries no "
            "re-trigger to follow; feed watch the results file of `bulkretry run` (its -o)"
        )

    def exit_code(self) -> int:
        """Return the exit code (see the module docstring)."""
        if self.signum is not None:
            return 128 + self.signum
        if self.halt_reason is not None or isinstance(self.output_problem, OutputFailed):
            return EXIT_STOPPED
        # A line not followed (skipped, never re-triggered, new run unknown) did not succeed.
        succeeded = self.finals["success"] == self.finals.total() and not self.unfollowed
        return EXIT_OK if succeeded and not self.invalid else EXIT_SOME_FAILED


def run_watch(
    ns: argparse.Namespace,
    env: Mapping[str, str],
    *,
    stdin: IO[bytes] | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``bulkretry watch``; return the exit code (see the module docstring)."""
    err = stderr if stderr is not None else sys.stderr
    configure_logging(quiet=ns.quiet, verbose=ns.verbose, fmt=ns.log_format)
    files = list(ns.files) or [STDIN]
    try:
        settings = build_watch_settings(ns, env, warn=log.warning)
        check_input_paths(files)
        lines = list(read_lines(files, RunIdValidator(settings.run_id_pattern), stdin=stdin))
        fd = open_output(ns.output, append=ns.append, overwrite=ns.overwrite, inputs=files)
    except ConfigurationError as exc:
        print(f"bulkretry: error: {exc}", file=err)
        return EXIT_USAGE
    sink = ResultSink(fd)

    def emit(line: bytes) -> None:
        # Each line reaches the reader as its run ends.
        sink.add(line)
        sink.flush()

    watcher = Watcher(settings, emit)
    try:
        code = _watch(watcher, lines, err)
    finally:
        if fd != STDOUT_FD:
            os.close(fd)
    if code != EXIT_USAGE:
        bare = watcher.bare_ids()
        # An error, not a count: it says why the exit is 1 (even with -q).
        if bare is not None:
            print(bare, file=err)
        if not ns.quiet:
            print(watcher.summary(), file=err)
    return code


def _watch(watcher: Watcher, lines: list[Line], err: TextIO) -> int:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, watcher.stop, signum)
        try:
            await watcher.watch(lines)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main())
    except (ConfigurationError, AuthenticationError) as exc:
        # The pre-flight: nothing was written yet.
        print(f"bulkretry: error: {exc}", file=err)
        return EXIT_USAGE
    except BulkRetryError as exc:
        print(f"bulkretry: stopped: {exc}", file=err)
        return EXIT_STOPPED
    problem = watcher.output_problem
    if watcher.halt_reason is not None:
        print(f"bulkretry: stopped: {watcher.halt_reason}", file=err)
    elif isinstance(problem, OutputFailed):
        print(f"bulkretry: stopped: {problem}", file=err)
    return watcher.exit_code()
