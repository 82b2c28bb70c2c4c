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
from .option_kinds import empty_boolean
from .options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    RUN_OPTIONS,
    Option,
    Parser,
    add_options,
    positive_int,
)
from .profiles import (
    CONFIG_VARIABLE,
    PROFILE_VARIABLE,
    Profile,
    choose_profile,
    describe,
    load_profile,
    merged_environment,
)
from .texts import add_command
from .variables import environment_defaults, unknown_variables

__all__ = ["entry", "main"]


#: Options of another command that mean what run's option of that name means, and so read
#: run's variable (status --state reads BULKRETRY_STATE); any other reads its own.
_SHARED = {"status": frozenset({"state"})}


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
    run = add_command(commands, "run")
    run.add_argument(
        "files", nargs="*", metavar="FILE", help="files of run IDs, one per line; - or none: stdin"
    )
    add_options(run, RUN_OPTIONS, env)

    listing = commands.add_parser("list-failed", help="list failed runs to pipe into run")
    if wanted("list-failed"):
        from .list_failed import configure_parser as configure_list

        configure_list(listing, env)
    watch = commands.add_parser("watch", help="follow re-triggered runs to their end")
    if wanted("watch"):
        from .watch import configure_parser as configure_watch

        configure_watch(watch, env)
    check = commands.add_parser("check", help="resolve in_doubt records by looking their runs up")
    if wanted("check"):
        from .check import configure_parser as configure_check

        configure_check(check, env)
    status = add_command(commands, "status")
    if wanted("status"):
        from .state import configure_status_parser

        configure_status_parser(status)
    report = add_command(commands, "report")
    config = add_command(commands, "config")
    if wanted("report"):
        from .report import configure_report_parser

        configure_report_parser(report, env)
    simulate = add_command(commands, "simulate")
    if wanted("simulate"):
        from .._simulator._cli import configure_parser

        configure_parser(simulate)
    demo = add_command(commands, "demo")
    demo.add_argument(
        "--runs", type=positive_int, default=3000, help="failed runs to seed [default 3000]"
    )
    demo.add_argument(
        "-o",
        "--output",
        default="bulkretry-demo-results.jsonl",
        help="results file [default bulkretry-demo-results.jsonl]",
    )
    demo.add_argument(
        "--overwrite", action="store_true", help="replace the results file of an earlier demo"
    )
    completion = add_command(commands, "completion")
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL")
    for name, sub in (("status", status), ("report", report), ("simulate", simulate),
                      ("demo", demo)):  # fmt: skip
        if wanted(name):
            environment_defaults(sub, name, env, _SHARED.get(name, frozenset()))
    for sub in (run, listing, watch, check, status, report, config, simulate, demo):
        sub.add_argument(
            "--profile",
            metavar="NAME",
            help="take options from [profiles.NAME] of the config file ($BULKRETRY_CONFIG, else "
            "~/.config/bulkretry/config.toml) [env BULKRETRY_PROFILE; default none]",
        )
    return parser


def _all_options() -> list[Option]:
    from .own_options import CHECK_OWN_OPTIONS, LIST_OPTIONS, LIST_OWN_OPTIONS, WATCH_OWN_OPTIONS

    return [*RUN_OPTIONS, *LIST_OPTIONS, *LIST_OWN_OPTIONS, *WATCH_OWN_OPTIONS, *CHECK_OWN_OPTIONS]


def known_variables() -> list[str]:
    """Return every BULKRETRY_* variable some command reads."""
    from .own_options import EXCLUDE_VARIABLE, FLOW_ID_VARIABLE

    return [option.env for option in _all_options()] + [FLOW_ID_VARIABLE, EXCLUDE_VARIABLE]


def every_command_variable() -> list[str]:
    """Return the variables of every command's own options (status, report, simulate, demo)."""
    parser = build_parser({})
    names: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name in ("status", "report", "simulate", "demo"):
                    names += environment_defaults(sub, name, {}, _SHARED.get(name, frozenset()))
    return names


def _profile(args: Sequence[str], env: Mapping[str, str]) -> Profile | None:
    """Load the profile --profile or BULKRETRY_PROFILE names, if any."""
    name, from_flag = choose_profile(args, env)
    if name is None:
        return None

    def warn(message: str) -> None:
        print(f"bulkretry: warning: {message}", file=sys.stderr)

    return load_profile(name, env, _all_options(), from_flag=from_flag, warn=warn)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the exit code (``bulkretry`` exits with it)."""
    real_env = os.environ if env is None else env
    args = list(sys.argv[1:] if argv is None else argv)
    # The top level has no option that takes a value, so the first word is the command.
    command = next((arg for arg in args if not arg.startswith("-")), None)
    try:
        profile = _profile(args, real_env)
    except ConfigurationError as exc:
        print(f"bulkretry: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    env = merged_environment(real_env, profile)
    parser = build_parser(env, command)
    ns = parser.parse_args(args)
    if (refused := empty_boolean(ns, args)) is not None:
        print(f"bulkretry {command}: error: {refused}", file=sys.stderr)
        return EXIT_USAGE
    known = [*known_variables(), PROFILE_VARIABLE, CONFIG_VARIABLE]
    if unknown_variables(real_env, known):
        # Rare: only then is every command's parser built, to know the other commands' names.
        known += every_command_variable()
    for warning in unknown_variables(real_env, known):
        print(f"bulkretry: warning: {warning}", file=sys.stderr)
    try:
        if ns.command == "completion":
            from .completion import completion_script

            print(completion_script(build_parser({}), ns.shell), end="")
            return 0
        if ns.command == "config":
            for line in describe(real_env, profile, _all_options()):
                print(line)
            return 0
        if ns.command == "run":
            from .run import run_command

            return run_command(ns, env, args)
        if ns.command == "status":
            from .state import run_status

            return run_status(ns)
        if ns.command == "list-failed":
            from .list_failed import run_list_failed

            return run_list_failed(ns, env)
        if ns.command == "watch":
            from .watch import run_watch

            return run_watch(ns, env)
        if ns.command == "check":
            from .check import run_check

            return run_check(ns, env, args)
        if ns.command == "report":
            from .report import run_report

            return run_report(ns)
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
        return EXIT_INTERRUPTED
    return EXIT_USAGE  # argparse has refused any other command already


def entry() -> NoReturn:
    """The ``bulkretry`` console script."""
    try:
        code = main()
    except KeyboardInterrupt:
        # A Ctrl-C while Python still imports what the command needs (its first ~0.3 s, before
        # any input is read or request sent): stopped, not a crash.
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # `bulkretry config | head`: the reader has what it wanted (run and the commands that
        # write records handle their own output). Point stdout at nothing, so that the
        # interpreter's flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)
