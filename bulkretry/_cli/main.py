"""The command line: parse argv and the environment, then run one command.

This package is the only reader of ``sys.argv`` and ``os.environ``. Usage errors exit 2 with one
line on stderr, never a traceback. Each command's module is imported only when it runs, which
keeps start-up short (the simulator's server side above all).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from .._exceptions import BulkRetryError, ConfigurationError, StateError
from .._version import __version__
from .options import EXIT_STOPPED, EXIT_USAGE, RUN_OPTIONS, Parser, add_options, positive_int

__all__ = ["entry", "main"]


def build_parser(env: Mapping[str, str], command: str | None = None) -> argparse.ArgumentParser:
    """Return the parser of every command, with defaults taken from ``env``.

    With ``command``, only that command's options are set up: the others' modules (the
    simulator's server side above all) are not imported, which keeps start-up short.
    """

    def wanted(name: str) -> bool:
        return command is None or command == name

    parser = Parser(
        prog="bulkretry",
        description="Re-trigger failed Adobe Experience Platform dataflow runs in bulk.",
        epilog=(
            "Credentials come from the environment: BULKRETRY_ACCESS_TOKEN (or --token-file), "
            "BULKRETRY_API_KEY, BULKRETRY_ORG_ID, BULKRETRY_SANDBOX (default prod); or OAuth "
            "Server-to-Server with BULKRETRY_CLIENT_ID and BULKRETRY_CLIENT_SECRET."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bulkretry {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    run = commands.add_parser("run", help="re-trigger the run IDs read from FILEs or stdin")
    run.add_argument(
        "files", nargs="*", metavar="FILE", help="files of run IDs, one per line; - or none: stdin"
    )
    add_options(run, RUN_OPTIONS, env)

    listing = commands.add_parser("list-failed", help="list failed runs to pipe into run")
    if wanted("list-failed"):
        from .list_failed import configure_parser as configure_list

        configure_list(listing, env)
    status = commands.add_parser("status", help="counts of a batch's state file, or its run IDs")
    if wanted("status"):
        from .state import configure_status_parser

        configure_status_parser(status)
    simulate = commands.add_parser("simulate", help="serve the built-in Flow Service simulator")
    if wanted("simulate"):
        from .._simulator._cli import configure_parser

        configure_parser(simulate)
    demo = commands.add_parser(
        "demo", help="re-trigger a few thousand runs on the built-in simulator"
    )
    demo.add_argument(
        "--runs", type=positive_int, default=3000, help="failed runs to seed [default 3000]"
    )
    demo.add_argument(
        "-o",
        "--output",
        default="bulkretry-demo-results.jsonl",
        help="results file [default bulkretry-demo-results.jsonl]",
    )
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the exit code (``bulkretry`` exits with it)."""
    env = os.environ if env is None else env
    args = list(sys.argv[1:] if argv is None else argv)
    # The top level has no option that takes a value, so the first word is the command.
    command = next((arg for arg in args if not arg.startswith("-")), None)
    parser = build_parser(env, command)
    ns = parser.parse_args(args)
    try:
        if ns.command == "run":
            from .run import run_command

            return run_command(ns, env, args)
        if ns.command == "status":
            from .state import run_status

            return run_status(ns)
        if ns.command == "list-failed":
            from .list_failed import run_list_failed

            return run_list_failed(ns, env)
        if ns.command == "simulate":
            from .._simulator._cli import run_from_args

            return int(run_from_args(ns))
        if ns.command == "demo":
            from .demo import run_demo

            return int(run_demo(ns))
    except (ConfigurationError, StateError) as exc:
        # A state file is only opened before anything is sent: refusing it is a usage error.
        print(f"bulkretry: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BulkRetryError as exc:
        print(f"bulkretry: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE  # argparse has refused any other command already


def entry() -> NoReturn:
    """The ``bulkretry`` console script."""
    sys.exit(main())
