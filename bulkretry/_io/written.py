"""The results file: open it safely, and continue a batch's own file where it stopped.

:func:`open_output` refuses unsafe targets (a directory, an input, a non-empty file without
``--append``/``--overwrite``; :func:`check_output` alone refuses them, opening nothing) and,
when appending, first removes a line a killed writer cut.

A resume given the ``-o`` that its batch wrote (recognised by path, and by its last whole record
naming a run the state file knows) appends to it instead of starting over, so that across the
file every input record appears once. What the file holds is read once into a private,
disk-backed SQLite table (memory stays flat however long the file), keyed by run ID (or by
source and line for records without one); a new record is written only when it carries more
advanced evidence than the file's line for the same run (a ``not_attempted`` left by a stop is
followed by the run's real outcome; a second ``already_retriggered`` is not written), or a
``--follow`` line whose chain went on since (:func:`settled`).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence

import orjson

from .._exceptions import InputError
from .evidence import rank
from .source import STDIN, next_round_outcome

__all__ = [
    "STDOUT_FD",
    "WrittenRecords",
    "check_output",
    "check_stdout",
    "last_record",
    "open_output",
    "read_records",
    "settled",
]

log = logging.getLogger("bulkretry")
#: Results go to the process's standard output, whatever ``sys.stdout`` has been replaced by.
STDOUT_FD = 1
_STDIN_FD = 0

_BATCH = 2048


def _key(run_id: object, outcome: object, source: object, line: object) -> str | None:
    if outcome in ("invalid", "duplicate") or not isinstance(run_id, str):
        if not isinstance(source, str) or not isinstance(line, int):
            return None
        # A character no run ID or path holds keeps these apart from run IDs.
        return f"\0{source}\0{line}"
    return run_id


def read_records(path: str) -> Iterator[dict[str, object]]:
    """Yield the JSON objects of a results file's whole lines (others are skipped)."""
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # a cut last line: removed before anything is appended
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


def last_record(path: str, tail: int = 1 << 16) -> dict[str, object] | None:
    """Return the last whole JSON line of a file (None if it has none)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - tail))
        chunk = fh.read()
    lines = chunk.split(b"\n")[:-1]  # the part after the last newline is cut, or empty
    for raw in reversed(lines):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        return obj if isinstance(obj, dict) else None
    return None


class WrittenRecords:
    """What a results file already holds, by run ID (or source and line), at its best evidence."""

    def __init__(self) -> None:
        # "" is SQLite's private temporary database: on disk, deleted when closed.
        self._conn = sqlite3.connect("", isolation_level=None)
        self._conn.execute("CREATE TABLE written (key TEXT PRIMARY KEY, rank INTEGER NOT NULL)")
        self.count = 0
        self.skipped = 0

    def __repr__(self) -> str:
        return f"WrittenRecords(count={self.count}, skipped={self.skipped})"

    @classmethod
    def of_file(cls, path: str, *, follow: bool = False) -> WrittenRecords:
        """Read a results file's records; InputError if it cannot be read.

        ``follow``: the batch follows new runs, so a line written without following is not
        its final word (the chain's line is written after it).
        """
        written = cls()
        try:
            written._load(read_records(path), follow)
        except OSError as exc:
            written.close()
            raise InputError(f"cannot read output {path}: {exc.strerror}") from None
        return written

    def _load(self, records: Iterator[dict[str, object]], follow: bool = False) -> None:
        sql = (
            "INSERT INTO written (key, rank) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET rank = max(rank, excluded.rank)"
        )
        conn = self._conn
        rows: list[tuple[str, int]] = []
        conn.execute("BEGIN")
        for obj in records:
            outcome = obj.get("outcome")
            key = _key(obj.get("run_id"), outcome, obj.get("source"), obj.get("line"))
            if key is None:
                continue
            final = settled(obj.get("final_status"), next_round_outcome(obj))
            if follow and "final_status" not in obj:
                final = False
            rows.append((key, 2 * rank(str(outcome)) + final))
            self.count += 1
            if len(rows) >= _BATCH:
                conn.executemany(sql, rows)
                rows = []
        conn.executemany(sql, rows)
        conn.execute("COMMIT")

    def holds(
        self, run_id: str, outcome: str, source: str, line: int, *, final: bool = True
    ) -> bool:
        """True when the file has a line for this record with evidence at least as advanced.

        ``final`` is False for a ``--follow`` line whose chain may still go on (:func:`settled`):
        a line of the file that is final too holds it.
        """
        key = _key(run_id, outcome, source, line)
        if key is None:
            return False
        row = self._conn.execute("SELECT rank FROM written WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] < 2 * rank(outcome) + final:
            return False
        self.skipped += 1
        return True

    def close(self) -> None:
        """Drop the table (and its temporary file)."""
        self._conn.close()


def settled(final_status: object, next_round: str | None) -> bool:
    """Tell whether a line's chain is over (any line not from ``--follow`` is).

    Not over: following was cut short (``unknown``, unless a further round was in doubt, which
    no later pass sends), or a further round was never sent (``not_attempted``): a resume goes
    on with it, and its line is written again.
    """
    if final_status == "unknown":
        return next_round == "in_doubt"
    return not (final_status == "failed" and next_round == "not_attempted")


def open_output(path: str | None, *, append: bool, overwrite: bool, inputs: Sequence[str]) -> int:
    """Open the results destination and return its descriptor; refuse unsafe targets."""
    if path is None or path == "-":
        check_stdout(inputs)
        return STDOUT_FD
    st = check_output(path, append=append, overwrite=overwrite, inputs=inputs)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
        if append and st is not None and stat.S_ISREG(st.st_mode):
            _drop_cut_line(fd, path)
        return fd
    except OSError as exc:
        raise InputError(f"cannot write output {path}: {exc.strerror}") from None


def check_output(
    path: str, *, append: bool, overwrite: bool, inputs: Sequence[str]
) -> os.stat_result | None:
    """Refuse an unsafe results destination, touching nothing; return its status (None: new)."""
    if append and overwrite:
        raise InputError("--append and --overwrite cannot be used together")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
        # A new file: its directory must take it (a typo'd one is said now, not at the open).
        where = os.path.dirname(path) or "."
        if not os.path.isdir(where) or not os.access(where, os.W_OK | os.X_OK):
            why = os.strerror(errno.ENOENT if not os.path.isdir(where) else errno.EACCES)
            raise InputError(f"cannot write output {path}: {why}") from None
    except OSError as exc:
        raise InputError(f"cannot use output {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"output is a directory: {path}")
        if (name := _input_at(st, inputs)) is not None:
            also = "an input" if name != STDIN else "the input on stdin"
            raise InputError(f"output {path} is also {also}; write the results elsewhere")
        if stat.S_ISREG(st.st_mode) and st.st_size > 0 and not (append or overwrite):
            raise InputError(f"output {path} exists and is not empty; use --append or --overwrite")
    return st


def check_stdout(inputs: Sequence[str]) -> None:
    """Refuse a standard output that is an input's file (``run ids.txt >> ids.txt``, or ``<``
    and ``>>`` the same file): the batch would read its own results without end."""
    try:
        st = os.fstat(STDOUT_FD)
    except OSError:
        return  # closed: writing will say so
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return
    if (name := _input_at(st, inputs)) is not None:
        also = f"the input {name}" if name != STDIN else "the input on stdin"
        raise InputError(f"stdout is also {also}; write the results elsewhere")


def _input_at(output: os.stat_result, inputs: Sequence[str]) -> str | None:
    """Return the first of *inputs* that is the output's file, if one is."""
    return next((name for name in inputs if _same_file(name, output)), None)


def _same_file(name: str, output: os.stat_result) -> bool:
    """True if the input *name* (``-``: whatever stdin is, ``< file`` too) is the output's file.

    Stdin counts as a regular file or a pipe (``-o /dev/stdin`` would write into its own
    input), not as a terminal, which is both when the output is ``/dev/tty``.
    """
    try:
        if name != STDIN:
            st = os.stat(name)
        elif stat.S_ISREG(output.st_mode) or stat.S_ISFIFO(output.st_mode):
            st = os.fstat(_STDIN_FD)
        else:
            return False
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (output.st_dev, output.st_ino)


def _drop_cut_line(fd: int, path: str) -> None:
    """Truncate a results file after its last whole line: a killed writer may have cut one."""
    size = os.fstat(fd).st_size
    with open(path, "rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
    log.warning(
        "%s ended with a cut line (%d bytes); removed it before appending", path, size - keep
    )
    os.ftruncate(fd, keep)
