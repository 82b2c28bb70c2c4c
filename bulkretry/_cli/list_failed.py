"""The ``list-failed`` command: list failed runs, one ID (or one JSON object) per line.

``bulkretry list-failed --flow-id F --since 2d | bulkretry run`` is a whole recovery. The lead
parser wires it as::

    listing = commands.add_parser("list-failed", help="list failed runs to re-trigger")
    configure_parser(listing, env)
    ...
    if ns.command == "list-failed":
        return run_list_failed(ns, env)

With ``--exclude FILE`` (results of earlier batches) and ``--state PATH`` (a batch's state
file, read-only) it leaves out the runs they show re-triggered already, so that running the
pipeline again sends nothing twice; ``--skip-superseded`` also leaves out failed runs older than
their flow's newest successful run (:class:`~bulkretry._listing.lister.FailedRunLister`).

Exit codes: 0 the listing is complete (an empty one too, and when the reader of the output
closed it early, as ``| head`` does); 2 a usage or configuration error, before any request;
3 the listing stopped before its last page (the API refused it, retries were given up, a
next-page link was refused, the output failed): what was written is true but incomplete.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from .. import _config as C
from .._exceptions import BulkRetryError, ConfigurationError, StateError
from .._io.sink import OutputClosed, ResultSink
from .._io.written import STDOUT_FD, open_output
from .._listing.lister import (
    DoneRuns,
    FailedRunLister,
    ListedRun,
    ListingHalted,
    ListQuery,
)
from .build import build_reader_settings
from .logs import configure_logging
from .loop import new_event_loop
from .option_kinds import flag
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    add_options,
)
from .own_options import (
    ALL_FLOWS_VARIABLE,
    EXCLUDE_VARIABLE,
    FLOW_ID_VARIABLE,
    LIST_OPTIONS,
    When,
    parse_when,
)
from .own_options import LIST_OWN_OPTIONS as OWN_OPTIONS

__all__ = [
    "EXCLUDE_VARIABLE",
    "FLOW_ID_VARIABLE",
    "LIST_OPTIONS",
    "build_list_settings",
    "build_query",
    "configure_parser",
    "flow_ids_of",
    "parse_when",
    "resolve_when",
    "run_list_failed",
    "settle_flows",
]

log = logging.getLogger("bulkretry")

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_QUOTED_CHARS = 80


def resolve_when(when: When, now: datetime.datetime, *, what: str) -> int:
    """Return ``when`` as epoch milliseconds, a duration counting back from ``now``."""
    try:
        moment = now - when if isinstance(when, datetime.timedelta) else when
    except OverflowError:
        raise ConfigurationError(f"{what} reaches back before the year 1") from None
    return (moment - _EPOCH) // _MS


def configure_parser(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Add the ``list-failed`` arguments to ``parser``, with defaults taken from ``env``."""
    parser.description = parser.description or (
        "List failed runs through GET /runs, one run ID per line, so that "
        "`bulkretry list-failed --flow-id F --since 2d | bulkretry run` re-triggers them."
    )
    parser.epilog = parser.epilog or (
        "Credentials, and the variables of the options it shares with `run`, are run's;\n"
        "its own options are BULKRETRY_LIST_FAILED_<OPTION>.\n\n"
        "examples:\n"
        "  bulkretry list-failed --flow-id F1 --flow-id F2 --since 2d | bulkretry run\n"
        "  bulkretry list-failed --all-flows --since 6h --format jsonl -o failed.jsonl\n"
        "  bulkretry list-failed --flow-id F --since 2d --state batch.db | "
        "bulkretry run --state batch.db\n\n"
        "exit codes:\n"
        "  0    the listing is complete (even empty)\n"
        "  2    a usage error\n"
        "  3    the listing stopped before its last page (what was written is true but "
        "incomplete)"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    flows = env.get(FLOW_ID_VARIABLE, "")
    parser.add_argument(
        "--flow-id",
        dest="flow_ids",
        action=_ReplacingAppend,
        default=[flow for flow in flows.split(",") if flow.strip()],
        metavar="ID",
        help="list the failed runs of the flow with this ID, a UUID (repeat for several flows) "
        f"[env {FLOW_ID_VARIABLE}, comma-separated; default none]",
    )
    excluded = env.get(EXCLUDE_VARIABLE, "")
    parser.add_argument(
        "--exclude",
        dest="exclude",
        action=_ReplacingAppend,
        default=[path for path in excluded.split(os.pathsep) if path.strip()],
        metavar="FILE",
        help="leave out the runs this results file of an earlier batch shows re-triggered "
        "(retriggered, already_retriggered, or skipped standing for either; - is stdin; repeat "
        f"for several) [env {EXCLUDE_VARIABLE}, {os.pathsep}-separated; default none]",
    )
    add_options(parser, OWN_OPTIONS, env)
    add_options(parser, LIST_OPTIONS, env)


class _ReplacingAppend(argparse.Action):
    """``append``, but the first value on the command line replaces the environment's list (a
    flag wins over the environment; appended to it, a typo'd ``--flow-id`` listed every flow the
    environment named, and exited 0). Marks the namespace's ``<dest>_given``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        marker = self.dest + "_given"
        kept = list(getattr(namespace, self.dest)) if getattr(namespace, marker, False) else []
        setattr(namespace, self.dest, [*kept, values])
        setattr(namespace, marker, True)


def settle_flows(ns: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Settle ``--flow-id`` against ``--all-flows`` where one comes from the environment.

    The flag wins over the variable; both from one place is a usage error that names them.
    """
    if not (ns.all_flows and ns.flow_ids):
        return
    all_flows_set = flag(env.get(ALL_FLOWS_VARIABLE) or "off")
    if getattr(ns, "flow_ids_given", False):
        if all_flows_set:
            ns.all_flows = False  # --flow-id on the command line: the variable yields
    elif all_flows_set:
        raise ConfigurationError(
            f"{FLOW_ID_VARIABLE} and {ALL_FLOWS_VARIABLE} cannot be used together"
        )
    else:
        ns.flow_ids = []  # --all-flows on the command line: the variable's flows yield


def flow_ids_of(values: Iterable[str]) -> tuple[str, ...]:
    """Return the ``--flow-id`` values in lower case, each once; refuse one that is no UUID.

    Flow IDs are folded as run IDs are: the listing checks each run's ``flowId`` against the
    flow asked for, and Flow Service writes it in lower case.
    """
    flows: dict[str, None] = {}
    for value in values:
        flow = value.strip()
        if not _UUID.fullmatch(flow):
            shown = value if len(value) <= _QUOTED_CHARS else value[:_QUOTED_CHARS] + "…"
            raise ConfigurationError(
                f"--flow-id {shown!r} is not a flow ID (expected a UUID such as "
                "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d)"
            )
        flows[flow.lower()] = None
    return tuple(flows)


def build_query(ns: argparse.Namespace, now: datetime.datetime) -> ListQuery:
    """Build the :class:`ListQuery` the flags ask for; relative times count back from ``now``."""
    flow_ids = flow_ids_of(ns.flow_ids)
    since = None if ns.since is None else resolve_when(ns.since, now, what="--since")
    until = None if ns.until is None else resolve_when(ns.until, now, what="--until")
    return ListQuery(
        flow_ids=flow_ids,
        all_flows=ns.all_flows,
        since_ms=since,
        until_ms=until,
        page_size=ns.page_size,
    )


def build_list_settings(
    ns: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None]
) -> C.Settings:
    """Build the :class:`Settings` a listing uses, with the same credentials as ``run``."""
    return build_reader_settings(ns, env, warn)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def run_list_failed(
    ns: argparse.Namespace,
    env: Mapping[str, str],
    *,
    now: Callable[[], datetime.datetime] = _now,
    stderr: TextIO | None = None,
) -> int:
    """Run ``bulkretry list-failed``; return the exit code (see the module docstring)."""
    err = stderr if stderr is not None else sys.stderr
    configure_logging(quiet=ns.quiet, verbose=ns.verbose, fmt=ns.log_format)
    try:
        settle_flows(ns, env)
        query = build_query(ns, now())
        settings = build_list_settings(ns, env, warn=log.warning)
        done = DoneRuns.load(ns.exclude, ns.state)
        fd = open_output(ns.output, append=ns.append, overwrite=ns.overwrite, inputs=ns.exclude)
    except (ConfigurationError, StateError) as exc:
        print(f"bulkretry: error: {exc}", file=err)
        return EXIT_USAGE
    if done.state_missing and not ns.quiet:
        print(
            f"bulkretry: state file {ns.state} holds no batch yet: it leaves out nothing", file=err
        )
    lister = FailedRunLister(settings, query, done=done, skip_superseded=ns.skip_superseded)
    try:
        return _list(lister, fd, fmt=ns.format, quiet=ns.quiet, err=err)
    finally:
        if fd != STDOUT_FD:
            os.close(fd)


def _list(lister: FailedRunLister, fd: int, *, fmt: str, quiet: bool, err: TextIO) -> int:
    sink = ResultSink(fd)
    line: Callable[[ListedRun], bytes] = ListedRun.to_json_line if fmt == "jsonl" else _id_line

    def on_page(runs: list[ListedRun]) -> None:
        for run in runs:
            sink.add(line(run))
        # Each page reaches the reader before the next one is asked for.
        sink.flush()

    code = EXIT_OK
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(lister.run(on_page))
    except OutputClosed:
        return EXIT_OK  # the reader has what it wanted (``| head``)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConfigurationError as exc:
        print(f"bulkretry: error: {exc}", file=err)
        return EXIT_USAGE
    except ListingHalted as exc:
        print(f"bulkretry: {exc}", file=err)  # the reason names the page it stopped at
        code = EXIT_STOPPED
    except BulkRetryError as exc:
        print(f"bulkretry: stopped: {exc}", file=err)
        code = EXIT_STOPPED
    if not quiet:
        print(lister.stats.summary(), file=err)
    for flow in lister.stats.unknown_flows:
        # A typo'd flow ID would otherwise list nothing and exit 0, as if all were well.
        credentials = lister.settings.credentials
        sandbox = f" {credentials.sandbox!r}" if credentials is not None else ""
        print(
            f"bulkretry: error: --flow-id {flow}: no such flow in sandbox{sandbox} "
            "(GET /flows answered 404)",
            file=err,
        )
        code = max(code, EXIT_USAGE)
    return code


def _id_line(run: ListedRun) -> bytes:
    return run.run_id.encode() + b"\n"
