"""The options that list-failed, watch and check do not share with run, and their variables.

Declared apart from those commands so that every command, run above all, knows every
``BULKRETRY_*`` variable (for profiles, and to warn of a typo'd one) without importing their
machinery: the state file's and the listing's modules took some 25 ms of each start-up.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import re

from .. import _config as C
from .._listing.query import DEFAULT_PAGE_SIZE
from .options import choice, output_options, own_option, positive_float, positive_int, run_option

__all__ = [
    "ALL_FLOWS_VARIABLE",
    "CHECK_OWN_OPTIONS",
    "EXCLUDE_VARIABLE",
    "FLOW_ID_VARIABLE",
    "LIST_OPTIONS",
    "LIST_OWN_OPTIONS",
    "WATCH_OWN_OPTIONS",
    "When",
    "parse_when",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")

When = datetime.datetime | datetime.timedelta
"""A ``--since``/``--until`` value: a point in time, or how long before now."""


def parse_when(text: str) -> When:
    """Read an ISO-8601 time (naive means UTC) or a duration before now (30m, 6h, 2d, 1w)."""
    stripped = text.strip()
    match = _DURATION.fullmatch(stripped.lower())
    if match:
        try:
            return datetime.timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} is too long ago") from None
    try:
        when = datetime.datetime.fromisoformat(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO-8601 time (such as 2025-06-01T08:00 or "
            "2025-06-01T08:00+02:00) nor a duration before now (30m, 6h, 2d, 1w)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


# -- list-failed --------------------------------------------------------------------------

LIST_OPTIONS = [
    run_option("base_url"),
    run_option("rate"),
    run_option("burst"),
    run_option("max_attempts", "attempts per page at most"),
    run_option("timeout"),
    run_option("deadline", "seconds one page may take across all attempts"),
    run_option("token_file"),
    run_option("client_secret_file"),
    run_option("ca_bundle"),
    run_option(
        "state",
        "leave out the runs this state file of a batch records re-triggered (opened read-only; "
        "one that does not exist yet leaves out nothing)",
    ),
    run_option("quiet"),
    run_option("verbose", "log every retry"),
    run_option("log_format"),
]


_LIST = "BULKRETRY_LIST_FAILED_"
#: An option of list-failed alone (its variable: ``_LIST`` + its name).
_own = functools.partial(own_option, _LIST)


FLOW_ID_VARIABLE = _LIST + "FLOW_ID"
EXCLUDE_VARIABLE = _LIST + "EXCLUDE"
ALL_FLOWS_VARIABLE = _LIST + "ALL_FLOWS"
_WINDOW = "an ISO-8601 time (without a zone: UTC) or a duration before now: 30m, 6h, 2d, 1w"
LIST_OWN_OPTIONS = [
    _own(
        ("--all-flows",),
        None,
        False,
        "list the failed runs of every flow in the sandbox (instead of --flow-id)",
    ),
    _own(("--since",), parse_when, None, f"only runs started after WHEN, {_WINDOW}", "WHEN"),
    _own(("--until",), parse_when, None, f"only runs started before WHEN, {_WINDOW}", "WHEN"),
    _own(
        ("--format",),
        choice("ids", "jsonl"),
        "ids",
        "one run ID per line, or one JSON object per run (run_id, flow_id, started_at, "
        "completed_at, status, errors)",
        "ids|jsonl",
    ),
    *output_options(_LIST, "the list"),
    _own(
        ("--page-size",),
        positive_int,
        DEFAULT_PAGE_SIZE,
        "runs asked for per page (the API's limit parameter)",
        "N",
    ),
    _own(
        ("--skip-superseded",),
        None,
        False,
        "also leave out failed runs older than their flow's newest successful run (one more "
        "request per flow; leave off for incremental flows, which need every run)",
    ),
]


# -- watch --------------------------------------------------------------------------------

_WATCH = "BULKRETRY_WATCH_"
_watch = functools.partial(own_option, _WATCH)
WATCH_OWN_OPTIONS = [
    *output_options(_WATCH, "the results"),
    _watch(
        ("--poll",),
        positive_float,
        C.DEFAULT_POLL,
        "seconds between two look-ups of a run at least (more for runs that go on for long)",
        "SECONDS",
    ),
    _watch(
        ("--follow-timeout",),
        positive_float,
        C.DEFAULT_FOLLOW_TIMEOUT,
        "seconds to follow in all; a run still going then is final_status unknown",
        "SECONDS",
    ),
]


# -- check --------------------------------------------------------------------------------

CHECK_OWN_OPTIONS = output_options("BULKRETRY_CHECK_", "the lines")
