"""The options of ``run`` as data: flags, converters, defaults, environment names, exit codes.

Every option of ``run`` can also be set as ``BULKRETRY_<OPTION>`` (``--base-url`` →
``BULKRETRY_BASE_URL``); a flag wins over the environment. Exit codes are defined here, once.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _config as C
from .option_kinds import (
    ENV_PREFIX,
    EXIT_USAGE,
    Option,
    Parser,
    choice,
    flag,
    non_negative_float,
    note_empty_boolean,
    outcome_list,
    positive_float,
    positive_int,
    shard_spec,
)

__all__ = [
    "DEFAULT_PROGRESS_EVERY",
    "ENV_PREFIX",
    "EXIT_CODES_HELP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "RUN_OPTIONS",
    "Option",
    "Parser",
    "add_options",
    "choice",
    "default_in_words",
    "explicit_options",
    "flag",
    "non_negative_float",
    "outcome_list",
    "output_options",
    "positive_float",
    "positive_int",
]

#: Seconds between two progress lines when stderr is not a terminal.
DEFAULT_PROGRESS_EVERY = 10.0
#: The exit codes of every command (README's table).
EXIT_OK, EXIT_SOME_FAILED, EXIT_STOPPED = 0, 1, 3
#: A command stopped by SIGINT exits 128 + 2; SIGTERM 128 + 15.
EXIT_INTERRUPTED = 130


RUN_OPTIONS = [
    Option(
        ("-o", "--output"), str, None, "write results to PATH instead of stdout", "PATH", "stdout"
    ),
    Option(("--append",), None, False, "append to an existing non-empty --output"),
    Option(("--overwrite",), None, False, "replace an existing non-empty --output"),
    Option(("--base-url",), str, C.DEFAULT_BASE_URL, "Flow Service base URL", "URL"),
    Option(
        ("--op",),
        str,
        C.DEFAULT_OP,
        "value of the op query parameter (RE_TRIGGER per the spec)",
        "VALUE",
    ),
    Option(
        ("--concurrency",), positive_int, C.DEFAULT_CONCURRENCY, "requests in flight at most", "N"
    ),
    Option(
        ("--rate",),
        positive_float,
        C.DEFAULT_RATE,
        "requests per second at most (fractions allowed)",
        "R",
    ),
    Option(
        ("--burst",), positive_int, C.DEFAULT_BURST, "requests allowed at once above the rate", "N"
    ),
    Option(
        ("--max-attempts",),
        positive_int,
        C.DEFAULT_MAX_ATTEMPTS,
        "attempts per run ID at most",
        "N",
    ),
    Option(
        ("--timeout",),
        positive_float,
        C.DEFAULT_TIMEOUT,
        "seconds one request may take",
        "SECONDS",
    ),
    Option(
        ("--deadline",),
        positive_float,
        C.DEFAULT_DEADLINE,
        "seconds one run ID may take across all attempts",
        "SECONDS",
    ),
    Option(
        ("--on-ambiguous",),
        choice("retry", "hold", "check"),
        C.DEFAULT_ON_AMBIGUOUS,
        "after a 500/502/504, a timeout or a 2xx without a new run ID: hold the record as "
        "in_doubt, check (look the run up; send again only if it was not processed), or retry",
        "hold|check|retry",
    ),
    Option(
        ("--halt-on",),
        str,
        C.DEFAULT_HALT_ON,
        "when the service looks down, stop (exit 3): e.g. 5xx=90%/100,stall=600 or never",
        "SPEC",
    ),
    Option(
        ("--max-retriggers",),
        positive_int,
        None,
        "stop (exit 3) after N successful re-triggers; the rest is not_attempted",
        "N",
    ),
    Option(
        ("--shard",),
        shard_spec,
        None,
        "process K of N splitting one batch: take the input records whose run ID hashes to "
        "shard K, and 1/N of --rate, --burst and --max-retriggers (give each the same input)",
        "K/N",
        "none: the whole input",
    ),
    Option(
        ("--retry-budget",),
        non_negative_float,
        C.DEFAULT_RETRY_BUDGET,
        "retries of 5xx/network failures as a share of first attempts (429s not counted)",
        "SHARE",
    ),
    Option(
        ("--only",),
        outcome_list,
        None,
        "with results files as input, act on lines with these outcomes only (e.g. failed,in_doubt)"
        "; the others are skipped",
        "OUTCOMES",
        "all",
    ),
    Option(
        ("--follow",),
        None,
        False,
        "follow every new run to its end; exit 0 only when all ended success",
    ),
    Option(
        ("--rounds",),
        positive_int,
        C.DEFAULT_ROUNDS,
        "with --follow: re-triggers per run at most, the first included (a new run that fails "
        "is re-triggered again while rounds are left)",
        "N",
    ),
    Option(
        ("--round-delay",),
        non_negative_float,
        C.DEFAULT_ROUND_DELAY,
        "with --follow: seconds before a run that failed again is re-triggered (up to 10% more)",
        "SECONDS",
    ),
    Option(
        ("--poll",),
        positive_float,
        C.DEFAULT_POLL,
        "with --follow: seconds between two look-ups of a run at least (more for long runs)",
        "SECONDS",
    ),
    Option(
        ("--follow-timeout",),
        positive_float,
        C.DEFAULT_FOLLOW_TIMEOUT,
        "with --follow: seconds to follow in all; a run still going then is final_status unknown",
        "SECONDS",
    ),
    Option(
        ("--preflight",),
        None,
        None,
        "before the first re-trigger, check base URL and credentials with one GET /runs?limit=1",
        None,
        "on; off with --dry-run",
    ),
    Option(
        ("--retry-in-doubt",),
        None,
        False,
        "send runs that an earlier run left in_doubt (they may have been re-triggered)",
    ),
    Option(
        ("--state",),
        str,
        None,
        "durable state file of the batch: makes it resumable and never re-triggers a run twice",
        "PATH",
    ),
    Option(
        ("--resume",),
        None,
        False,
        "with --state: read no input (not even a stdin left open) and finish the batch it holds",
    ),
    Option(
        ("--sync",),
        choice("normal", "full"),
        "normal",
        "normal: the state survives a killed process; full: a power loss too (fsync)",
        "normal|full",
    ),
    Option(
        ("--run-id-pattern",),
        str,
        C.DEFAULT_RUN_ID_PATTERN,
        "regular expression a run ID must match whole",
        "REGEX",
        "a UUID",
    ),
    Option(
        ("--dry-run",), None, False, "validate input and report what would be sent; send nothing"
    ),
    Option(
        ("--token-file",),
        str,
        None,
        "read the access token from PATH (instead of BULKRETRY_ACCESS_TOKEN)",
        "PATH",
    ),
    Option(("--client-secret-file",), str, None, "read the OAuth client secret from PATH", "PATH"),
    Option(
        ("--ca-bundle",),
        str,
        None,
        "CA certificates to verify TLS with (else SSL_CERT_FILE, else the system's)",
        "PATH",
        "SSL_CERT_FILE, else the system's",
    ),
    Option(("-q", "--quiet"), None, False, "print nothing on stderr but errors"),
    Option(("-v", "--verbose"), None, False, "also log every record that did not succeed"),
    Option(
        ("--column",),
        str,
        None,
        "read run IDs from this column of CSV or TSV input: a header name, or a 1-based number "
        "(comma or tab found from the first line)",
        "NAME|N",
        "none: one run ID or JSON object per line",
    ),
    Option(
        ("--progress-every",),
        non_negative_float,
        DEFAULT_PROGRESS_EVERY,
        "when stderr is not a terminal (a log, CI), a progress line every SECONDS (0: none); "
        "JSON with --log-format json",
        "SECONDS",
    ),
    Option(
        ("--summary-json",),
        str,
        None,
        "also write the summary to PATH as one JSON object (outcomes, error kinds and codes, "
        "requests, throttled, ambiguous attempts, learned rate, elapsed, exit code)",
        "PATH",
    ),
    Option(("--log-format",), choice("text", "json"), "text", "format of stderr logs", "text|json"),
]


_UNSET = object()


def explicit_options(args: Sequence[str]) -> frozenset[str]:
    """Return the ``run`` options given on the command line ``args`` (not by env or default)."""
    parser = Parser(add_help=False)
    parser.add_argument("files", nargs="*")
    add_options(parser, RUN_OPTIONS, {})
    parser.set_defaults(**{option.dest: _UNSET for option in RUN_OPTIONS})
    words = list(args)
    if "run" in words:
        words = words[words.index("run") + 1 :]
    ns, _ = parser.parse_known_args(words)
    return frozenset(o.dest for o in RUN_OPTIONS if getattr(ns, o.dest) is not _UNSET)


def default_in_words(option: Option) -> str:
    """Return an option's default as --help shows it: never "None", numbers without ".0"."""
    if option.shown is not None:
        return option.shown
    default = option.default
    if option.type is None:
        return "on" if default else "off"
    if default is None:
        return "none"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


#: The exit codes, as every command's --help ends.
EXIT_CODES_HELP = """exit codes:
  0    every valid input was retriggered or already_retriggered
  1    some record is failed, invalid or in_doubt
  2    a usage or configuration error, found before any request
  3    the batch stopped early (a halt, refused credentials, a full disk)
  130  interrupted (SIGINT); 143: terminated (SIGTERM)"""


def run_option(dest: str, text: str | None = None) -> Option:
    """Take ``run``'s option ``dest`` for another command, with its own help ``text``."""
    option = next(o for o in RUN_OPTIONS if o.dest == dest)
    return option if text is None else dataclasses.replace(option, help=text)


def own_option(prefix: str, flags: tuple[str, ...], *fields: Any) -> Option:
    """An option of one command alone (``fields`` as :class:`Option`'s after ``flags``); its
    variable is ``prefix`` + the option's name."""
    env_name = prefix + flags[-1].lstrip("-").replace("-", "_").upper()
    return dataclasses.replace(Option(flags, *fields), env_name=env_name)


def output_options(prefix: str, what: str) -> list[Option]:
    """``-o``, ``--append``, ``--overwrite`` of a command that writes ``what`` (its variables:
    ``prefix`` + each option's name)."""
    return [
        own_option(
            prefix, ("-o", "--output"), str, None, f"write {what} to PATH", "PATH", "stdout"
        ),
        own_option(prefix, ("--append",), None, False, "append to an existing non-empty --output"),
        own_option(prefix, ("--overwrite",), None, False, "replace an existing non-empty --output"),
    ]


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], env: Mapping[str, str]
) -> None:
    for option in options:
        default = option.default
        raw = env.get(option.env)
        if raw == "" and option.type is None:
            note_empty_boolean(parser, option.env, option.flags)
        if raw is not None and raw != "":  # any other variable set empty counts as unset
            convert = option.type or flag
            try:
                default = convert(raw)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{option.env}: {exc}")
        # argparse formats help with %, so a literal % (as in 5xx=90%/100) must be doubled.
        text = f"{option.help} [env {option.env}; default {default_in_words(option)}]".replace(
            "%", "%%"
        )
        if option.type is None:
            # --x and --no-x: a boolean set in the environment can be turned off by a flag.
            parser.add_argument(
                *option.flags,
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=text,
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
