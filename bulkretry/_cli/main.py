"""The command line: parse argv and the environment, build :class:`Settings`, run a command.

This is the only module that reads ``sys.argv`` or ``os.environ``. Every option of ``run`` can
also be set as ``BULKRETRY_<OPTION>`` (``--base-url`` → ``BULKRETRY_BASE_URL``); a flag wins
over the environment. Usage errors exit 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import _config as C
from .._exceptions import BulkRetryError, ConfigurationError, MissingCredentialsError, StateError
from .._version import __version__

__all__ = ["main"]

ENV_PREFIX = "BULKRETRY_"
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Print one clear line, not the whole usage, and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of at least 0")
    return value


def _outcome_list(text: str) -> frozenset[str]:
    from .._model import Outcome

    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - {o.value for o in Outcome})
    if not names or unknown:
        known = ", ".join(o.value for o in Outcome)
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of outcomes ({known})")
    return names


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a yes/no value (use 1 or 0)")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


@dataclass(frozen=True, slots=True)
class _Option:
    """One option of ``run``: its flags, its parser, its default, and its environment variable."""

    flags: tuple[str, ...]
    type: Callable[[str], Any] | None
    default: Any
    help: str
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flags[-1].lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


RUN_OPTIONS = [
    _Option(("-o", "--output"), str, None, "write results to PATH instead of stdout", "PATH"),
    _Option(("--append",), None, False, "append to an existing non-empty --output"),
    _Option(("--overwrite",), None, False, "replace an existing non-empty --output"),
    _Option(("--base-url",), str, C.DEFAULT_BASE_URL, "Flow Service base URL", "URL"),
    _Option(
        ("--op",),
        str,
        C.DEFAULT_OP,
        "value of the op query parameter (RE_TRIGGER per the spec)",
        "VALUE",
    ),
    _Option(
        ("--concurrency",), _positive_int, C.DEFAULT_CONCURRENCY, "requests in flight at most", "N"
    ),
    _Option(
        ("--rate",),
        _positive_float,
        C.DEFAULT_RATE,
        "requests per second at most (fractions allowed)",
        "R",
    ),
    _Option(
        ("--burst",), _positive_int, C.DEFAULT_BURST, "requests allowed at once above the rate", "N"
    ),
    _Option(
        ("--max-attempts",),
        _positive_int,
        C.DEFAULT_MAX_ATTEMPTS,
        "attempts per run ID at most",
        "N",
    ),
    _Option(
        ("--timeout",),
        _positive_float,
        C.DEFAULT_TIMEOUT,
        "seconds one request may take",
        "SECONDS",
    ),
    _Option(
        ("--deadline",),
        _positive_float,
        C.DEFAULT_DEADLINE,
        "seconds one run ID may take across all attempts",
        "SECONDS",
    ),
    _Option(
        ("--on-ambiguous",),
        _choice("retry", "hold"),
        C.DEFAULT_ON_AMBIGUOUS,
        "after a 500/502/504 or a timeout: hold the record as in_doubt, or retry it",
        "retry|hold",
    ),
    _Option(
        ("--halt-on",),
        str,
        C.DEFAULT_HALT_ON,
        "when the service looks down, stop (exit 3): e.g. 5xx=90%/100,stall=600 or never",
        "SPEC",
    ),
    _Option(
        ("--max-retriggers",),
        _positive_int,
        None,
        "stop (exit 3) after N successful re-triggers; the rest is not_attempted",
        "N",
    ),
    _Option(
        ("--retry-budget",),
        _non_negative_float,
        C.DEFAULT_RETRY_BUDGET,
        "retries of 5xx/network failures as a share of first attempts (429s not counted)",
        "SHARE",
    ),
    _Option(
        ("--only",),
        _outcome_list,
        None,
        "with results files as input, act on lines with these outcomes only (e.g. failed,in_doubt)"
        "; the others are skipped",
        "OUTCOMES",
    ),
    _Option(
        ("--retry-in-doubt",),
        None,
        False,
        "send runs that an earlier run left in_doubt (they may have been re-triggered)",
    ),
    _Option(
        ("--state",),
        str,
        None,
        "durable state file of the batch: makes it resumable and never re-triggers a run twice",
        "PATH",
    ),
    _Option(
        ("--resume",),
        None,
        False,
        "with --state: read no input (not even a stdin left open) and finish the batch it holds",
    ),
    _Option(
        ("--sync",),
        _choice("normal", "full"),
        "normal",
        "normal: the state survives a killed process; full: a power loss too (fsync)",
        "normal|full",
    ),
    _Option(
        ("--run-id-pattern",),
        str,
        C.DEFAULT_RUN_ID_PATTERN,
        "regular expression a run ID must match whole",
        "REGEX",
    ),
    _Option(
        ("--dry-run",), None, False, "validate input and report what would be sent; send nothing"
    ),
    _Option(
        ("--token-file",),
        str,
        None,
        "read the access token from PATH (instead of BULKRETRY_ACCESS_TOKEN)",
        "PATH",
    ),
    _Option(("--client-secret-file",), str, None, "read the OAuth client secret from PATH", "PATH"),
    _Option(
        ("--ca-bundle",),
        str,
        None,
        "CA certificates to verify TLS with (else SSL_CERT_FILE, else the system's)",
        "PATH",
    ),
    _Option(("-q", "--quiet"), None, False, "print nothing on stderr but errors"),
    _Option(("-v", "--verbose"), None, False, "also log every record that did not succeed"),
    _Option(
        ("--log-format",), _choice("text", "json"), "text", "format of stderr logs", "text|json"
    ),
]


_UNSET = object()


def explicit_options(args: Sequence[str]) -> frozenset[str]:
    """Return the ``run`` options given on the command line ``args`` (not by env or default)."""
    parser = _Parser(add_help=False)
    parser.add_argument("files", nargs="*")
    _add_options(parser, RUN_OPTIONS, {})
    parser.set_defaults(**{option.dest: _UNSET for option in RUN_OPTIONS})
    words = list(args)
    if "run" in words:
        words = words[words.index("run") + 1 :]
    ns, _ = parser.parse_known_args(words)
    return frozenset(o.dest for o in RUN_OPTIONS if getattr(ns, o.dest) is not _UNSET)


def _add_options(
    parser: argparse.ArgumentParser, options: Sequence[_Option], env: Mapping[str, str]
) -> None:
    for option in options:
        default = option.default
        raw = env.get(option.env)
        if raw is not None and raw != "":
            convert = option.type or _flag
            try:
                default = convert(raw)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{option.env}: {exc}")
        shown = "off" if option.type is None and not option.default else option.default
        # argparse formats help with %, so a literal % (as in 5xx=90%/100) must be doubled.
        text = f"{option.help} [env {option.env}; default {shown}]".replace("%", "%%")
        if option.type is None:
            parser.add_argument(
                *option.flags, dest=option.dest, action="store_true", default=default, help=text
            )
        else:
            parser.add_argument(
                *option.flags,
                dest=option.dest,
                type=option.type,
                default=default,
                metavar=option.metavar,
                help=text,
            )


def build_parser(env: Mapping[str, str], command: str | None = None) -> argparse.ArgumentParser:
    """Return the parser of every command, with defaults taken from ``env``.

    With ``command``, only that command's options are set up: the others' modules (the
    simulator's server side above all) are not imported, which keeps start-up short.
    """

    def wanted(name: str) -> bool:
        return command is None or command == name

    parser = _Parser(
        prog="bulkretry",
        description="Re-trigger failed Adobe Experience Platform dataflow runs in bulk.",
        epilog=(
            "Credentials come from the environment: BULKRETRY_ACCESS_TOKEN (or --token-file), "
            "BULKRETRY_API_KEY, BULKRETRY_ORG_ID, BULKRETRY_SANDBOX (default prod); or OAuth "
            "Server-to-Server with BULKRETRY_CLIENT_ID and BULKRETRY_CLIENT_SECRET."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bulkretry {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    run = commands.add_parser("run", help="re-trigger the run IDs read from FILEs or stdin")
    run.add_argument(
        "files", nargs="*", metavar="FILE", help="files of run IDs, one per line; - or none: stdin"
    )
    _add_options(run, RUN_OPTIONS, env)

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
        "--runs", type=_positive_int, default=3000, help="failed runs to seed [default 3000]"
    )
    demo.add_argument(
        "-o",
        "--output",
        default="bulkretry-demo-results.jsonl",
        help="results file [default bulkretry-demo-results.jsonl]",
    )
    return parser


def _secret_env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name)
    return value if value else None


def build_credentials(
    ns: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None]
) -> C.Credentials:
    """Gather credentials from the environment and secret files; name whatever is missing."""
    from .._http.secrets import read_secret_file

    token = _secret_env(env, "ACCESS_TOKEN")
    if ns.token_file:
        token = read_secret_file(ns.token_file, what="token file", warn=warn)
    client_id = _secret_env(env, "CLIENT_ID")
    client_secret = _secret_env(env, "CLIENT_SECRET")
    if ns.client_secret_file:
        client_secret = read_secret_file(
            ns.client_secret_file, what="client secret file", warn=warn
        )
    api_key = _secret_env(env, "API_KEY") or client_id
    org_id = _secret_env(env, "ORG_ID")
    missing = []
    if not token and not (client_id and client_secret):
        if client_id:
            missing.append("BULKRETRY_CLIENT_SECRET (or --client-secret-file)")
        else:
            missing.append(
                "BULKRETRY_ACCESS_TOKEN (or --token-file, "
                "or BULKRETRY_CLIENT_ID and BULKRETRY_CLIENT_SECRET)"
            )
    if not api_key:
        missing.append("BULKRETRY_API_KEY")
    if not org_id:
        missing.append("BULKRETRY_ORG_ID")
    if missing or api_key is None or org_id is None:
        raise MissingCredentialsError(missing)
    return C.Credentials(
        api_key=api_key,
        org_id=org_id,
        sandbox=_secret_env(env, "SANDBOX") or C.DEFAULT_SANDBOX,
        access_token=token,
        client_id=client_id,
        client_secret=client_secret,
        scopes=_secret_env(env, "SCOPES") or C.DEFAULT_SCOPES,
        ims_url=_secret_env(env, "IMS_URL") or C.DEFAULT_IMS_URL,
    )


def build_settings(
    ns: argparse.Namespace, env: Mapping[str, str], warn: Callable[[str], None]
) -> C.Settings:
    """Build the frozen :class:`Settings` of a ``run`` from parsed flags and the environment."""
    from .._http.tls import check_url, proxy_for

    check_url(ns.base_url, what="base URL")
    credentials = None if ns.dry_run else build_credentials(ns, env, warn)
    ims_url = credentials.ims_url if credentials is not None else C.DEFAULT_IMS_URL
    return C.Settings(
        base_url=ns.base_url.rstrip("/"),
        op=ns.op,
        credentials=credentials,
        concurrency=ns.concurrency,
        rate=ns.rate,
        burst=ns.burst,
        max_attempts=ns.max_attempts,
        timeout=ns.timeout,
        deadline=ns.deadline,
        on_ambiguous=ns.on_ambiguous,
        run_id_pattern=ns.run_id_pattern,
        halt_on=ns.halt_on,
        max_retriggers=ns.max_retriggers,
        retry_budget=ns.retry_budget,
        only=ns.only,
        retry_in_doubt=ns.retry_in_doubt,
        dry_run=ns.dry_run,
        ca_bundle=ns.ca_bundle or env.get("SSL_CERT_FILE") or None,
        proxy=proxy_for(ns.base_url, env),
        ims_proxy=proxy_for(ims_url, env),
    )


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
