"""``bulkretry report``: merge the results files of several passes into one current view.

Lines are read by :class:`~bulkretry._io.source.RecordReader`, as ``run`` reads them (the same
validation), through :class:`~bulkretry._io.tee.LineTee`, which keeps each line as read. For
each run ID the most advanced evidence wins, in any order of files and lines (the order of
:func:`~bulkretry._io.evidence.order`; a later line wins among equals), and its line is printed
as it was written, in the order runs were first seen. A line that names no valid run ID is
written as the ``invalid`` record ``run`` would write for it (its text JSON-escaped, never raw),
in its place among the runs. What the lines hold is kept in a private, disk-backed SQLite table,
so memory stays flat however many passes are merged. Counts and the top error codes go to
stderr. Exit 0 when every line is a run ``retriggered`` or ``already_retriggered``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, TextIO, cast

import orjson

from .._exceptions import InputError
from .._io.doubts import doubt_at
from .._io.evidence import order, rank
from .._io.source import (
    BOM,
    MAX_LINE_BYTES,
    STDIN,
    InputRecord,
    RecordReader,
    RunIdValidator,
    check_input_paths,
)
from .._io.tee import LineTee
from .._model import DONE_OUTCOMES, ErrorInfo, Outcome, RunResult
from .options import EXIT_OK, EXIT_SOME_FAILED, add_options, choice, run_option

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
_INVALID_KIND = "invalid_input"


def configure_report_parser(
    parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None
) -> None:
    """Add ``report``'s arguments to ``parser`` (defaults from ``env``, as ``run``'s)."""
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
    # The run IDs run was given: a line that run would read as invalid is invalid here too.
    add_options(parser, [run_option("run_id_pattern")], env or {})


def _records(
    paths: Sequence[str], validator: RunIdValidator
) -> Iterator[tuple[InputRecord, bytes]]:
    """Yield each non-blank, non-comment line's record and the line as read, files in order."""
    for path in paths:
        if path == STDIN:
            yield from _records_of(sys.stdin.buffer, STDIN, validator)
            continue
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise InputError(f"cannot read input {path}: {exc.strerror}") from None
        with fh:
            yield from _records_of(fh, path, validator)


def _records_of(
    stream: IO[bytes], source: str, validator: RunIdValidator
) -> Iterator[tuple[InputRecord, bytes]]:
    tee = LineTee(stream, MAX_LINE_BYTES + 1)
    # RecordReader calls nothing but readline on the stream it is given.
    reader = RecordReader([STDIN], validator, stdin=cast(IO[bytes], tee))
    for record in reader:
        record.source = source
        yield record, tee.line


_Entry = tuple[tuple[int, int, int], str, str | None, str | None]


def _entry(raw: bytes) -> _Entry:
    """Return ``(order, outcome weighed, error kind, error code)`` of a valid run's line."""
    text = raw.removeprefix(BOM).strip()
    if not text.startswith(b"{"):
        return order(0), "bare", None, None
    obj: Any = orjson.loads(text)  # RecordReader has read it as a JSON object already
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
    return order(ranked, doubt_at(obj, weighed)), weighed, kind, code


def _invalid_line(record: InputRecord) -> bytes:
    """Return the ``invalid`` results line ``run`` writes for a line naming no valid run ID."""
    error = ErrorInfo(kind=_INVALID_KIND, message=record.error or "not a valid run ID")
    result = RunResult(
        run_id=record.text,
        outcome=Outcome.INVALID,
        error=error,
        source=record.source,
        line=record.line,
    )
    return result.to_json_line()


def _kept_results_line(raw: bytes) -> bytes | None:
    """Return a results line whose run ID is not valid here, re-written as JSON (no raw
    control bytes), or None for any other line.

    Its evidence is kept: run given the batch's --run-id-pattern reads it back (its own
    ``retriggered`` line turned into a bare ``invalid`` one, the run would be sent again).
    """
    try:
        obj = orjson.loads(raw.removeprefix(BOM).strip())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("outcome"), str):
        return None
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def _row(number: int, record: InputRecord, raw: bytes) -> tuple[Any, ...]:
    """Return the ``best`` row of the ``number``-th line read: its run's, or its own."""
    if record.run_id is None:
        # A run ID is printable, so this key never meets one: each invalid line keeps a row
        # (and its place) of its own.
        ranked, at, sub = order(0)
        line = _kept_results_line(raw) or _invalid_line(record)
        return f"\0{number}", number, ranked, at, sub, line, "invalid", _INVALID_KIND, None
    (ranked, at, sub), outcome, kind, code = _entry(raw)
    # Printed as written, but for a byte-order mark, which RecordReader reads past too.
    line = raw.removeprefix(BOM)
    line = line if line.endswith(b"\n") else line + b"\n"
    return record.run_id, number, ranked, at, sub, line, outcome, kind, code


def run_report(
    ns: argparse.Namespace, out: IO[bytes] | None = None, err: TextIO | None = None
) -> int:
    """Print one current line per run ID and one ``invalid`` line per line naming none, then
    the counts; return the exit code."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr
    files = list(ns.files) or [STDIN]
    check_input_paths(files)
    validator = RunIdValidator(ns.run_id_pattern)
    # "" is SQLite's private temporary database: on disk, deleted when closed.
    conn = sqlite3.connect("", isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE best (key TEXT PRIMARY KEY, first INTEGER, rank INTEGER, at INTEGER, "
            "sub INTEGER, line BLOB, outcome TEXT, kind TEXT, code TEXT)"
        )
        conn.execute("BEGIN")
        rows = []
        for number, (record, raw) in enumerate(_records(files, validator)):
            rows.append(_row(number, record, raw))
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
