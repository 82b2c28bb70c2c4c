"""``watch``'s input and output lines: what each results line asks to follow, and its answer.

The input is read by :class:`~bulkretry._io.source.RecordReader`, as ``run`` reads it (the same
validation, the same invalid records), through :class:`~bulkretry._io.tee.LineTee`, which keeps
each line as read, so that a results line comes back whole with the followed keys added
(``final_status``, ``chain``, ``rounds``…). A line is followed when its outcome (or the outcome
it stands for) is ``retriggered`` or ``already_retriggered`` with a new run ID; its ``chain``,
if it has one, continues from its last element. A line re-triggered whose last new run is not
known (``check``'s ``candidates``, or a ``run --follow`` line whose further round may have
landed) is ``final_status: "unknown"``, as ``run --follow`` writes it; a line never re-triggered
is null; a bare run ID is ``skipped``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from .._exceptions import InputError
from .._http.lookups import is_flow_id
from .._http.runs import clean_id
from .._io.doubts import instant_ms
from .._io.source import STDIN, InputRecord, RecordReader, RunIdValidator, next_round_outcome
from .._io.tee import LineTee
from .._model import DONE_OUTCOMES, ROUND_LANDED, ErrorInfo, Followed, Outcome, RunResult

__all__ = ["BARE", "NOT_RETRIGGERED", "UNTOLD", "Line", "read_lines", "since_of"]

#: Why a valid line has no run to follow (:attr:`Line.unfollowed`): a bare run ID, a results
#: line not re-triggered, or one re-triggered whose new run is not known.
BARE, NOT_RETRIGGERED, UNTOLD = "bare", "not_retriggered", "untold"

#: The followed keys a results line may carry already: replaced, never doubled.
_FOLLOWED_KEYS = ("final_status", "final_status_raw", "chain", "rounds", "final_error")
#: How long before a results line's ``finished_at`` its new run may have been created: the
#: request's own time, retries of a lost answer, and the clocks of client and service.
SINCE_MARGIN_MS = 15 * 60 * 1000
_NOT_FOLLOWED = Followed()


@dataclass(slots=True)
class Line:
    """One input line: its record, the results object it holds, and the run to follow.

    ``untold`` marks a line re-triggered whose last new run is not known (a look-up's
    ``candidates``, or a further round that may have landed): nothing to follow, but it was
    re-triggered.
    """

    record: InputRecord
    obj: dict[str, Any] | None
    target: str | None = None
    untold: bool = False
    chain: tuple[str, ...] = ()
    flow_id: str | None = None
    since_ms: int | None = None

    @property
    def valid(self) -> bool:
        """Tell whether the line names a valid run ID."""
        return self.record.run_id is not None

    @property
    def unfollowed(self) -> str:
        """Return why a valid line has no run to follow: BARE, UNTOLD or NOT_RETRIGGERED."""
        if self.obj is None:
            return BARE
        return UNTOLD if self.untold else NOT_RETRIGGERED

    def followed_none(self) -> Followed:
        """Return what following adds to a line with no run to follow."""
        # As run --follow writes it: re-triggered is not "never re-triggered", even when
        # which new run is this one's cannot be told.
        if not self.untold:
            return _NOT_FOLLOWED
        return Followed(final_status="unknown", chain=self.chain)

    def output(self, followed: Followed) -> bytes:
        """Return the output line: the input results line with ``followed``'s keys."""
        obj = self.obj
        if obj is None:
            return self._result(followed).to_json_line()
        out = {key: value for key, value in obj.items() if key not in _FOLLOWED_KEYS}
        out.update(followed.as_dict())
        return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)

    def _result(self, followed: Followed) -> RunResult:
        record = self.record
        if record.run_id is None:
            outcome = Outcome.INVALID
            error = ErrorInfo(kind="invalid_input", message=record.error or "not a valid run ID")
        else:
            outcome = Outcome.SKIPPED
            error = ErrorInfo(
                kind="not_retriggered",
                message="a bare run ID names no new run to follow: give watch the results lines "
                "of run",
            )
        return RunResult(
            run_id=record.run_id or record.text,
            outcome=outcome,
            error=error,
            source=record.source,
            line=record.line,
            followed=followed,
        )


def since_of(finished_at: object) -> int | None:
    """Return a time (epoch ms) before a new run's creation, from its line's ``finished_at``."""
    finished = instant_ms(finished_at)
    return None if finished is None else finished - SINCE_MARGIN_MS


def _line_of(record: InputRecord, raw: bytes) -> Line:
    """Work out what ``record`` (read from ``raw``) asks to follow."""
    if record.run_id is None:
        return Line(record, None)
    stripped = raw.strip().removeprefix(b"\xef\xbb\xbf")
    if not stripped.startswith(b"{"):
        return Line(record, None)
    obj = orjson.loads(stripped)  # RecordReader has read it as a JSON object already
    line = Line(record, obj)
    if record.prior not in DONE_OUTCOMES:
        return line
    chain = obj.get("chain")
    if isinstance(chain, list) and chain and all(clean_id(item) for item in chain):
        line.chain = tuple(chain)
    else:
        new_run_id = clean_id(record.prior_new_run_id)
        line.chain = (new_run_id,) if new_run_id else ()
    if not line.chain or next_round_outcome(obj) in ROUND_LANDED:
        # Re-triggered, but no new run named (check's candidates), or a further round of
        # run --follow that may have made one after the chain's last: the last new run is
        # not known, so nothing to follow, yet the line is no line never re-triggered.
        line.untold = True
        return line
    line.target = line.chain[-1]
    flow = obj.get("flow_id")
    line.flow_id = flow if isinstance(flow, str) and is_flow_id(flow) else None
    # A line found re-triggered by evidence was written long after the new run was created.
    if record.prior == Outcome.RETRIGGERED.value:
        line.since_ms = since_of(obj.get("finished_at"))
    return line


def read_lines(
    paths: Sequence[str], validator: RunIdValidator, *, stdin: IO[bytes] | None = None
) -> Iterator[Line]:
    """Yield a :class:`Line` per non-blank, non-comment input line, files in order."""
    from .._io.source import MAX_LINE_BYTES

    for path in paths or [STDIN]:
        if path == STDIN:
            if stdin is not None:
                yield from _lines_of(stdin, path, validator, MAX_LINE_BYTES)
            else:
                with open(sys.stdin.fileno(), "rb", closefd=False) as stream:
                    yield from _lines_of(stream, path, validator, MAX_LINE_BYTES)
            continue
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as exc:
            raise InputError(f"cannot read input {path}: {exc.strerror}") from None
        try:
            yield from _lines_of(fh, path, validator, MAX_LINE_BYTES)
        finally:
            fh.close()


def _lines_of(
    stream: IO[bytes], source: str, validator: RunIdValidator, cap: int
) -> Iterator[Line]:
    tee = LineTee(stream, cap + 1)
    reader = RecordReader([STDIN], validator, stdin=tee)  # type: ignore[arg-type]
    for record in reader:
        record.source = source
        yield _line_of(record, tee.line)
