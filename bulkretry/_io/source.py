"""Read input lines and turn each into an :class:`InputRecord`: a valid run ID, or why not.

A line is a run ID, or a JSON object whose ``run_id`` (or ``id``) is one, so that listings and
earlier results files can be piped back in. Blank lines and ``#`` comments are skipped; every
other line yields exactly one record, so every line is accounted for in the output.

A results line's ``outcome`` becomes the record's ``prior``; a ``skipped`` or ``duplicate`` line
that carries a ``prior_outcome`` stands for that outcome instead (with its ``new_run_id`` and
``etag``), so that such a line fed back alone still says what became of the run. A
``resolved_by`` (a look-up's verdict on a run left in doubt) is kept as ``prior_resolved_by``,
and when the doubt it settles, or the line raises, arose as ``prior_at``.

Reading is synchronous and line-bounded (a line longer than :data:`MAX_LINE_BYTES` is skipped
over in chunks, never held whole); the engine calls :meth:`RecordReader.read_batch` in a
worker thread so that a slow pipe never blocks the event loop.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from .._config import DEFAULT_RUN_ID_PATTERN
from .._exceptions import InputError
from .columns import Columns
from .doubts import doubt_at, next_round_outcome

__all__ = [
    "ASCII_WHITESPACE",
    "BOM",
    "MAX_LINE_BYTES",
    "InputRecord",
    "RecordReader",
    "RunIdValidator",
    "check_column",
    "check_input_paths",
    "next_round_outcome",
]

#: A line longer than this is invalid without being read whole (results lines are ~400 bytes).
MAX_LINE_BYTES = 64 * 1024
#: How much of an invalid line an output record quotes back.
QUOTE_CHARS = 120
STDIN = "-"

_UUID_ANY_CASE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
BOM = b"\xef\xbb\xbf"
#: Never a run ID, whatever --run-id-pattern says: each would change the path it is put in.
_NEVER_IDS = frozenset({"", ".", ".."})
#: What bytes.strip() trims from a bare line: an ID from a JSON line or from the library API is
#: trimmed of the same and no more (str.strip() would take Unicode spaces and separators too),
#: so that one ID is judged alike whichever way it comes.
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


@dataclass(slots=True)
class InputRecord:
    """One non-blank, non-comment input line: a valid ``run_id``, or an ``error``.

    ``text`` is the (shortened) line as read, quoted back in the output of an invalid record.
    ``prior`` is the outcome a results line already carries (``retriggered``, ``failed``…), and
    ``prior_new_run_id``/``prior_etag`` what it says the re-trigger created;
    ``prior_resolved_by`` says what resolved a doubt, when something did.
    """

    source: str
    line: int
    run_id: str | None
    text: str
    error: str | None = None
    prior: str | None = None
    prior_new_run_id: str | None = None
    prior_etag: str | None = None
    prior_resolved_by: str | None = None
    #: A ``run --follow`` line's ``chain`` (its new runs, in order), and the outcome of its
    #: further round that created no run (``next_round``), if any.
    prior_chain: tuple[str, ...] = ()
    prior_next_round: str | None = None
    #: When the doubt the line speaks of arose, epoch ms (:func:`~bulkretry._io.doubts.doubt_at`).
    prior_at: int | None = None


#: Outcomes of lines that did nothing to their run: their ``prior_outcome`` says what did.
_STANDS_FOR = frozenset({"skipped", "duplicate"})


class RunIdValidator:
    """Check a run ID against the pattern, folding UUID hex to lower case first."""

    __slots__ = ("_pattern",)

    def __init__(self, pattern: str = DEFAULT_RUN_ID_PATTERN) -> None:
        self._pattern = re.compile(pattern)

    def __repr__(self) -> str:
        return f"RunIdValidator(pattern={self._pattern.pattern!r})"

    def normalise(self, candidate: str) -> tuple[str | None, str | None]:
        """Return ``(run_id, None)`` for a valid ID, or ``(None, reason)``."""
        # Only UUID-shaped IDs are folded: a custom pattern may describe case-sensitive IDs.
        if _UUID_ANY_CASE.fullmatch(candidate):
            candidate = candidate.lower()
        if (
            candidate not in _NEVER_IDS
            and self._pattern.fullmatch(candidate)
            and candidate.isprintable()
            and candidate.isascii()
        ):
            return candidate, None
        return (
            None,
            "not a valid run ID (expected a UUID such as 4fb0418e-1804-45d6-8d56-dd51f05c0baf)",
        )


def check_input_paths(paths: Sequence[str]) -> None:
    """Fail with one clear line for an input that is missing, a directory or unreadable."""
    for path in paths:
        if path == STDIN:
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"input file not found: {path}") from None
        except OSError as exc:
            raise InputError(f"cannot read input {path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"input is a directory, not a file: {path}")
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read input {path}: permission denied")


def _quote(raw: bytes) -> str:
    text = raw[: QUOTE_CHARS * 4].decode("utf-8", "backslashreplace")
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


class RecordReader:
    """Stream :class:`InputRecord` s out of files and stdin, one source after another.

    With ``json_only``, lines that are not JSON objects are counted in :attr:`passed_over`
    instead of being read into records: a pre-scan for results lines needs no bare IDs.
    """

    def __init__(
        self,
        paths: Sequence[str],
        validator: RunIdValidator,
        *,
        stdin: IO[bytes] | None = None,
        stdin_on_hand: Callable[[], bool] | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        json_only: bool = False,
        column: str | None = None,
    ) -> None:
        self._paths = list(paths) or [STDIN]
        self._validator = validator
        self._stdin = stdin
        self._max = max_line_bytes
        self._json_only = json_only
        self._column = column
        self._records = self._iterate()
        # Whether the input read now (or first) is a regular file: its lines come whatever a
        # writer does. Stdin's are on hand when *stdin_on_hand* says so (read ahead).
        self._stdin_on_hand = stdin_on_hand
        self._enter(self._paths[0])
        self.lines_read = 0
        self.passed_over = 0

    def __repr__(self) -> str:
        extra = f", passed_over={self.passed_over}" if self._json_only else ""
        return f"RecordReader(paths={self._paths!r}, lines_read={self.lines_read}{extra})"

    @property
    def on_file(self) -> bool:
        """True while the lines read come whatever a writer does: a regular file, or a stdin
        whose next bytes are on hand (copied ahead); only a pipe or a terminal can go silent."""
        if self._reading_stdin:
            return self._stdin_on_hand is not None and self._stdin_on_hand()
        return self._on_file

    def _enter(self, path: str) -> None:
        # A regular file always has its next line: only a pipe or a terminal can go silent.
        self._on_file = path != STDIN and os.path.isfile(path)
        self._reading_stdin = path == STDIN

    @property
    def paths(self) -> list[str]:
        """The inputs, in the order they are read (``-`` is stdin)."""
        return self._paths

    def read_batch(self, size: int = 512) -> list[InputRecord]:
        """Return up to ``size`` records; an empty list means the input is exhausted."""
        batch: list[InputRecord] = []
        for record in self._records:
            batch.append(record)
            if len(batch) >= size:
                break
        return batch

    def __iter__(self) -> Iterator[InputRecord]:
        return self._records

    def _iterate(self) -> Iterator[InputRecord]:
        for path in self._paths:
            self._enter(path)
            if path == STDIN:
                if self._stdin is not None:
                    yield from self._records_of(self._stdin, STDIN)
                    continue
                # A reader of its own on descriptor 0, not sys.stdin.buffer: a reader thread
                # left blocked on a silent pipe at exit would hold sys.stdin's lock, and the
                # interpreter aborts when it finds that lock taken at shutdown.
                with open(sys.stdin.fileno(), "rb", closefd=False) as stream:
                    yield from self._records_of(stream, STDIN)
            else:
                try:
                    fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below
                except OSError as exc:
                    raise InputError(f"cannot read input {path}: {exc.strerror}") from None
                try:
                    yield from self._records_of(fh, path)
                except OSError as exc:
                    raise InputError(f"cannot read input {path}: {exc.strerror}") from None
                finally:
                    fh.close()

    def _records_of(self, stream: IO[bytes], source: str) -> Iterator[InputRecord]:
        number = 0
        table: Columns | None = None
        limit = self._max
        while True:
            raw = stream.readline(limit + 1)
            if not raw:
                return
            number += 1
            self.lines_read += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                # Skip the rest of an over-long line in bounded chunks, noting its first
                # non-blank byte: a long comment or blank line is skipped like a short one.
                size = len(raw)
                if number == 1 and raw.startswith(BOM):
                    raw = raw[3:]
                first = raw.lstrip()[:1]
                while not raw.endswith(b"\n"):
                    raw = stream.readline(limit)
                    if not raw:
                        break
                    size += len(raw)
                    if not first:
                        first = raw.lstrip()[:1]
                if first in (b"", b"#"):
                    continue
                yield InputRecord(
                    source,
                    number,
                    None,
                    "",
                    f"line is {size} bytes long; a run ID line is at most {limit} bytes",
                )
                continue
            if number == 1 and raw.startswith(BOM):
                raw = raw[3:]
            if self._column is not None:
                if table is None:
                    where = "stdin" if source == STDIN else source
                    table = Columns.of_first_line(raw, self._column, where)
                    if table.header:
                        continue
                line = raw.strip()
                # A blank line or a comment, as without --column; but a row of empty cells
                # ("\t" in a TSV) is a row.
                if (not line and table.delimiter.encode() not in raw) or line.startswith(b"#"):
                    continue
                field = table.field(raw)
                if field is None or not field.strip():
                    # A row with an empty cell is not a blank line: invalid, never lost (and a
                    # cell starting with '#' is no comment: _parse finds it an invalid ID).
                    missing = "has no" if field is None else "has an empty"
                    yield InputRecord(
                        source, number, None, _quote(line), f"line {missing} column {self._column}"
                    )
                    continue
                raw = field
            record = self._parse(raw, source, number, comments=self._column is None)
            if record is not None:
                yield record

    def _parse(
        self, raw: bytes, source: str, number: int, *, comments: bool = True
    ) -> InputRecord | None:
        stripped = raw.strip()
        if not stripped or (comments and stripped.startswith(b"#")):
            return None
        if self._json_only and not stripped.startswith(b"{"):
            self.passed_over += 1
            return None
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            return InputRecord(source, number, None, _quote(stripped), "line is not valid UTF-8")
        if text.startswith("{"):
            return self._parse_json(stripped, text, source, number)
        run_id, error = self._validator.normalise(text)
        return InputRecord(source, number, run_id, _quote(stripped) if error else "", error)

    def _parse_json(self, raw: bytes, text: str, source: str, number: int) -> InputRecord:
        try:
            obj: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return InputRecord(
                source, number, None, _quote(raw), "line starts with '{' but is not valid JSON"
            )
        if not isinstance(obj, dict):
            return InputRecord(source, number, None, _quote(raw), "JSON line is not an object")
        candidate = obj.get("run_id")
        if candidate is None:
            candidate = obj.get("id")
        if not isinstance(candidate, str):
            return InputRecord(
                source,
                number,
                None,
                _quote(raw),
                "JSON line has no string 'run_id' or 'id' field",
            )
        prior = obj.get("outcome")
        if not isinstance(prior, str):
            prior = None
        elif prior in _STANDS_FOR:
            stands_for = obj.get("prior_outcome")
            if isinstance(stands_for, str) and stands_for:
                prior = stands_for
        new_run_id = obj.get("new_run_id")
        etag = obj.get("etag")
        resolved_by = obj.get("resolved_by")
        run_id, error = self._validator.normalise(candidate.strip(ASCII_WHITESPACE))
        chain, next_round = self._chain_of(obj)
        return InputRecord(
            source,
            number,
            run_id,
            _quote(candidate.encode()) if error else "",
            error,
            prior,
            new_run_id if isinstance(new_run_id, str) else None,
            etag if isinstance(etag, str) else None,
            resolved_by if isinstance(resolved_by, str) else None,
            chain,
            next_round,
            doubt_at(obj, prior),
        )

    def _chain_of(self, obj: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
        """Read a ``run --follow`` line's ``chain`` (valid run IDs only) and ``next_round``."""
        raw = obj.get("chain")
        chain: tuple[str, ...] = ()
        if isinstance(raw, list) and raw:
            ids = [self._validator.normalise(i)[0] if isinstance(i, str) else None for i in raw]
            chain = tuple(i for i in ids if i is not None)
        return chain, next_round_outcome(obj)


def check_column(paths: Sequence[str], column: str) -> None:
    """Check a named ``--column`` against the header of every FILE before anything is sent."""
    for path in paths:
        if path == STDIN:
            continue
        with open(path, "rb") as fh:
            first = fh.readline(MAX_LINE_BYTES)
        if first.startswith(BOM):
            first = first[3:]
        Columns.of_first_line(first, column, path)
