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
from .options import (
    EXIT_CODES_HELP,
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
from .variables import environment_defaults, unknown_variables

__all__ = ["entry", "main"]


_RUN_EXAMPLES = """examples:
  cat failed-run-ids.txt | bulkretry run > results.jsonl
  bulkretry run ids1.txt ids2.txt -o results.jsonl --rate 20 --concurrency 8
  bulkretry list-failed --flow-id F --since 2d | bulkretry run --state batch.db -o results.jsonl
  bulkretry run --state batch.db --resume                    # finish a stopped batch
  bulkretry run --only failed results.jsonl > second-pass.jsonl"""


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
    run = commands.add_parser(
        "run",
        help="re-trigger the run IDs read from FILEs or stdin",
        description=(
            "Re-trigger failed dataflow runs: read run IDs (or earlier results lines) from FILEs "
            "or stdin, send one re-trigger per run under a rate limit, back off on 429 and 5xx, "
            "and write one JSON line per input line (old ID, new ID, etag, outcome) to stdout "
            "or --output. Progress, logs and the summary go to stderr."
        ),
        epilog=_RUN_EXAMPLES + "\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "files", nargs="*", metavar="FILE", help="files of run IDs, one per line; - or none: stdin"
    )
    add_options(run, RUN_OPTIONS, env)

    listing = commands.add_parser("list-failed", help="list failed runs to pipe into run")
    if wanted("list-failed"):
        from .list_failed import configure_parser as configure_list

        configure_list(listing, env)
    status = commands.add_parser(
        "status",
        help="counts of a batch's state file, or its run IDs",
        description=(
            "Show what a batch's state file (--state) holds: its identity, invocations, elapsed "
            "time and sending rate, and how many runs are in each state; or, with --list, the "
            "run IDs in one state, one per line, ready to check or pipe back. Read-only: safe "
            "while a batch runs."
        ),
        epilog=(
            "examples:\n"
            "  bulkretry status --state batch.db\n"
            "  bulkretry status --state batch.db --list in_doubt > to-check.txt\n\n"
            "exit codes:\n  0    shown\n  2    the state file is missing or not a state file"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if wanted("status"):
        from .state import configure_status_parser

        configure_status_parser(status)
    report = commands.add_parser(
        "report",
        help="merge results files of several passes into one current line per run",
        description=(
            "Merge the results files of several passes, in any order, into one current line per "
            "run ID on stdout: the line with the most advanced evidence (retriggered = "
            "already_retriggered > in_doubt > failed > the rest; a later line wins among "
            "equals), as it was written. Counts and the top error codes go to stderr."
        ),
        epilog=(
            "examples:\n"
            "  bulkretry report pass1.jsonl pass2.jsonl > current.jsonl\n"
            "  cat pass*.jsonl | bulkretry report --format json > current.jsonl\n\n"
            "exit codes:\n"
            "  0    every run is retriggered or already_retriggered\n"
            "  1    some run is not\n"
            "  2    a usage error (an unreadable file)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config = commands.add_parser(
        "config",
        help="show the effective settings and where each came from",
        description=(
            "Show every setting of run and list-failed as it would be used now: its value and "
            "where it came from (the environment, a profile of the config file, or the "
            "default). Secrets are masked."
        ),
        epilog=(
            "examples:\n"
            "  bulkretry config\n"
            "  bulkretry config --profile dev\n\n"
            "exit codes:\n  0    shown\n  2    the profile or the config file is wrong"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if wanted("report"):
        from .report import configure_report_parser

        configure_report_parser(report)
    simulate = commands.add_parser(
        "simulate",
        help="serve the built-in Flow Service simulator",
        description=(
            "Serve the built-in Flow Service simulator on loopback: seeded failed runs, "
            "re-trigger, run listings and look-ups, an IMS token endpoint, and the trouble you "
            "ask for (quotas, 5xx, resets, lost answers). Prints its base URL; stops on Ctrl-C."
        ),
        epilog=(
            "examples:\n"
            "  bulkretry simulate --print-failed > failed.txt\n"
            "  bulkretry simulate --quota-rate 50 --error-rate 0.05 --port 8080\n\n"
            "exit codes:\n  0    stopped\n  2    a usage error"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if wanted("simulate"):
        from .._simulator._cli import configure_parser

        configure_parser(simulate)
    demo = commands.add_parser(
        "demo",
        help="re-trigger a few thousand runs on the built-in simulator",
        description=(
            "Seed the built-in simulator with failed runs behind a quota with some 5xx answers, "
            "re-trigger them all with the real pipeline, and check against the simulator's own "
            "records that every run was re-triggered exactly once."
        ),
        epilog=(
            "examples:\n"
            "  bulkretry demo\n"
            "  bulkretry demo --runs 500 -o demo.jsonl\n\n"
            "exit codes:\n  0    every run re-triggered exactly once\n  1    otherwise"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    demo.add_argument(
        "--overwrite", action="store_true", help="replace the results file of an earlier demo"
    )
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script for SHELL, generated from bulkretry's own options.",
        epilog=(
            "examples:\n"
            "  bulkretry completion bash > /etc/bash_completion.d/bulkretry\n"
            '  eval "$(bulkretry completion zsh)"     # in ~/.zshrc\n'
            "  bulkretry completion fish > ~/.config/fish/completions/bulkretry.fish\n\n"
            "exit codes:\n  0    printed\n  2    an unknown shell"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL")
    for name, sub in (("status", status), ("report", report), ("simulate", simulate),
                      ("demo", demo)):  # fmt: skip
        if wanted(name):
            environment_defaults(sub, name, env, _SHARED.get(name, frozenset()))
    for sub in (run, listing, status, report, config, simulate, demo):
        sub.add_argument(
            "--profile",
            metavar="NAME",
            help="take options from [profiles.NAME] of the config file ($BULKRETRY_CONFIG, else "
            "~/.config/bulkretry/config.toml) [env BULKRETRY_PROFILE; default none]",
        )
    return parser


def _all_options() -> list[Option]:
    from .list_failed import LIST_OPTIONS, OWN_OPTIONS

    return [*RUN_OPTIONS, *LIST_OPTIONS, *OWN_OPTIONS]


def known_variables() -> list[str]:
    """Return every BULKRETRY_* variable some command reads."""
    from .list_failed import FLOW_ID_VARIABLE

    return [option.env for option in _all_options()] + [FLOW_ID_VARIABLE]


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
        return 130
    return EXIT_USAGE  # argparse has refused any other command already


def entry() -> NoReturn:
    """The ``bulkretry`` console script."""
    sys.exit(main())
