"""``bulkretry report``: merge the results files of several passes into one current view.

For each run ID the most advanced evidence wins, in any order of files and lines (the order of
:func:`~bulkretry._io.evidence.order`; a later line wins among equals), and its line is printed
as it was written, in the order runs were first seen. What the lines hold is kept in a private,
disk-backed SQLite table, so memory stays flat however many passes are merged. Counts and the top
error codes go to stderr. Exit 0 when every run is ``retriggered`` or ``already_retriggered``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any, TextIO

import orjson

from .._io.doubts import doubt_at
from .._io.evidence import order, rank
from .._io.source import STDIN, RunIdValidator, check_input_paths
from .._model import DONE_OUTCOMES
from .options import EXIT_OK, EXIT_SOME_FAILED, choice

__all__ = ["configure_report_parser", "run_report"]

_TOP_CODES = 5
_MERGE = """
INSERT INTO best (key, first, rank, at, sub, line, outcome, kind, code)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    rank = excluded.rank, at = excluded.at, sub = excluded.sub, line = excluded.line,
    outcome = excluded.outcome, kind = excluded.kind, code = excluded.code
WHERE (excluded.rank, excluded.at, excluded.sub) >= (best.rank, best.at, best.sub)
"""


def configure_report_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``report``'s arguments to ``parser``."""
    parser.add_argument(
        "files", nargs="*", metavar="RESULTS", help="results files of any passes; - or none: stdin"
    )
    parser.add_argument(
        "--format",
        type=choice("table", "json"),
        default="table",
        metavar="table|json",
        help="format of the counts on stderr [default table]",
    )


def _lines(paths: Sequence[str]) -> Iterator[bytes]:
    for path in paths:
        if path == STDIN:
            yield from sys.stdin.buffer
        else:
            with open(path, "rb") as fh:
                yield from fh


_Entry = tuple[str, tuple[int, int, int], str, str | None, str | None]


def _entry(raw: bytes, validator: RunIdValidator) -> _Entry:
    """Return ``(key, order, outcome weighed, error kind, error code)`` of one line."""
    text = raw.strip()
    obj: Any = None
    if text.startswith(b"{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
    if not isinstance(obj, dict):
        candidate = text.decode("utf-8", "replace")
        run_id, _ = validator.normalise(candidate)
        return run_id or candidate, order(0), "bare", None, None
    run_id = obj.get("run_id") or obj.get("id")
    key = str(run_id) if run_id is not None else text.decode("utf-8", "replace")
    if isinstance(run_id, str):
        key = validator.normalise(run_id)[0] or run_id
    outcome = obj.get("outcome")
    outcome = outcome if isinstance(outcome, str) else "bare"
    prior = obj.get("prior_outcome")
    weighed = prior if outcome in ("skipped", "duplicate") and isinstance(prior, str) else outcome
    resolved = obj.get("resolved_by")
    error = obj.get("error")
    kind = code = None
    if isinstance(error, dict):
        kind = error.get("kind") if isinstance(error.get("kind"), str) else None
        code = error.get("error_code") if isinstance(error.get("error_code"), str) else None
    # Counted (and judged for the exit code) as what it stands for: a skipped line carrying a
    # retriggered prior is a run done.
    ranked = rank(weighed, resolved if isinstance(resolved, str) else None)
    return key, order(ranked, doubt_at(obj, weighed)), weighed, kind, code


def run_report(
    ns: argparse.Namespace, out: IO[bytes] | None = None, err: TextIO | None = None
) -> int:
    """Print one current line per run ID, then the counts; return the exit code."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr
    files = list(ns.files) or [STDIN]
    check_input_paths(files)
    validator = RunIdValidator()
    # "" is SQLite's private temporary database: on disk, deleted when closed.
    conn = sqlite3.connect("", isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE best (key TEXT PRIMARY KEY, first INTEGER, rank INTEGER, at INTEGER, "
            "sub INTEGER, line BLOB, outcome TEXT, kind TEXT, code TEXT)"
        )
        conn.execute("BEGIN")
        rows = []
        for number, raw in enumerate(_lines(files)):
            stripped = raw.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            line = raw if raw.endswith(b"\n") else raw + b"\n"
            key, (ranked, at, sub), outcome, kind, code = _entry(raw, validator)
            rows.append((key, number, ranked, at, sub, line, outcome, kind, code))
            if len(rows) >= 2048:
                conn.executemany(_MERGE, rows)
                rows = []
        conn.executemany(_MERGE, rows)
        conn.execute("COMMIT")
        outcomes: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        try:
            for line, outcome, kind, code in conn.execute(
                "SELECT line, outcome, kind, code FROM best ORDER BY first"
            ):
                out.write(line)
                outcomes[outcome] += 1
                if kind is not None and outcome not in DONE_OUTCOMES:
                    kinds[kind] += 1
                if code is not None and outcome not in DONE_OUTCOMES:
                    codes[code] += 1
            out.flush()
        except BrokenPipeError:
            return EXIT_OK  # the reader has what it wanted
    finally:
        conn.close()
    _print_counts(err, ns.format, outcomes, kinds, codes)
    done = all(outcome in DONE_OUTCOMES for outcome in outcomes)
    return EXIT_OK if done else EXIT_SOME_FAILED


def _print_counts(
    err: TextIO, fmt: str, outcomes: Counter[str], kinds: Counter[str], codes: Counter[str]
) -> None:
    runs = sum(outcomes.values())
    if fmt == "json":
        summary = {
            "runs": runs,
            "outcomes": dict(outcomes.most_common()),
            "error_kinds": dict(kinds.most_common()),
            "error_codes": dict(codes.most_common(_TOP_CODES)),
        }
        print(orjson.dumps(summary).decode(), file=err)
        return
    print(f"bulkretry: {runs} runs", file=err)
    for outcome, count in outcomes.most_common():
        print(f"{outcome:>20}: {count}", file=err)
    if codes:
        print("top error codes of runs not re-triggered:", file=err)
        for code, count in codes.most_common(_TOP_CODES):
            print(f"{code:>20}: {count}", file=err)
