"""``check``'s lines: which runs are in doubt and when they were sent; the lines written back.

The input is read as ``watch`` reads it (:func:`~bulkretry._cli.watch_lines.read_lines`).
A results line's window comes from its ``finished_at`` (the latest its answer was lost; for a
request cut off on the wire by a stop, a ``--timeout`` later, the latest it may land) and,
for the earliest its first request left, ``finished_at`` less the batch's ``--deadline`` and
``--timeout`` (a record's last attempt may start at its deadline and last a timeout). Only a
line whose own pass sent the run is trusted so: ``attempts`` of 1 or more, and an ambiguous
attempt among them (``ambiguous_attempts``, or ``error.kind: "interrupted"``, a request on
the wire when the batch stopped). A line held from an earlier pass (``attempts`` 0) names no
window; the windows of several lines of one run are joined.

A run that another input line shows re-triggered needs no look-up: its in-doubt lines come
out ``already_retriggered`` with that line's new run, as ``run`` would write them.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .._engine.follow_fetch import FollowStats
from .._engine.recheck import Doubt
from .._engine.steps import Done
from .._http.runs import clean_id
from .._io.doubts import instant_ms, interrupted, sent_by_its_pass
from .._ledger.resolutions import DoubtRow, Resolution
from .._model import DONE_OUTCOMES, ErrorInfo, Outcome, RunResult
from .watch_lines import Line

__all__ = [
    "Plan",
    "apply",
    "counted_as",
    "doubt_of",
    "plan",
    "resolution",
    "state_line",
    "summary",
    "written",
]

_IN_DOUBT = Outcome.IN_DOUBT.value
_NO_WINDOW = (
    "its results line does not say when its request was sent (no attempt of that pass may have "
    "been processed): give check the results of the pass that sent it, or the batch's --state"
)
_BARE = ErrorInfo(
    kind="not_checked",
    message="a bare run ID says nothing of when it was sent: give check the results lines of "
    "run, or the batch's --state",
)


@dataclass(slots=True)
class Plan:
    """What the input asks: the runs to look up, the new runs it claims, what it settles."""

    doubts: list[Doubt] = field(default_factory=list)
    hard: set[str] = field(default_factory=set)
    soft: set[str] = field(default_factory=set)
    #: Runs in doubt that another line shows re-triggered: ``(new_run_id, etag)``.
    done: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    in_doubt_lines: int = 0

    def claimed(self, ids: set[str]) -> tuple[set[str], set[str]]:
        """Return which of ``ids`` the input claims (see :data:`~._engine.recheck.Claimed`)."""
        return ids & self.hard, (ids & self.soft) - self.hard


def plan(lines: Sequence[Line], *, lookback_ms: int, timeout_ms: int) -> Plan:
    """Read ``lines``: claims, settled runs, and a :class:`Doubt` per run in doubt
    (*timeout_ms*: the batch's ``--timeout``, how long a request cut off may still land)."""
    out = Plan()
    windows: dict[str, list[tuple[int, int] | None]] = {}
    ghosts: set[str] = set()
    for line in lines:
        obj, run_id = line.obj, line.record.run_id
        if obj is None or run_id is None:
            continue
        record = line.record
        # A run of the input is a run being recovered: inside a window it proves no re-trigger.
        out.soft.add(run_id)
        new = clean_id(record.prior_new_run_id) if record.prior in DONE_OUTCOMES else None
        if new is not None:
            # One a look-up gave it may be wrong: never proof that another window is empty.
            (out.hard if record.prior_resolved_by is None else out.soft).add(new)
        if record.prior in DONE_OUTCOMES:
            out.done.setdefault(run_id, (new, record.prior_etag))
        chain = obj.get("chain")
        if isinstance(chain, list):
            out.hard.update(run for item in chain if (run := clean_id(item)))
        candidates = obj.get("candidates")
        if isinstance(candidates, list):
            out.soft.update(run for item in candidates if (run := clean_id(item)))
        if obj.get("outcome") == _IN_DOUBT:
            out.in_doubt_lines += 1
            windows.setdefault(run_id, []).append(_window(obj, lookback_ms, timeout_ms))
        elif _orphaning(obj):
            ghosts.add(run_id)
    for run_id, found in windows.items():
        if run_id in out.done:
            ghosts.add(run_id)  # its lost answer, before the clear one, may have made a run
            continue
        known = [w for w in found if w is not None]
        if not known:
            out.doubts.append(Doubt(run_id, None, None, _NO_WINDOW))
            continue
        since = min(w[0] for w in known)
        out.doubts.append(Doubt(run_id, since, max(w[1] for w in known)))
    out.doubts += (Doubt(run_id, None, None, ghost=True) for run_id in sorted(ghosts))
    return out


def _orphaning(obj: dict[str, Any]) -> bool:
    """True when a line not in doubt shows an attempt that may have made a run it does not
    name: a lost answer retried (``--on-ambiguous retry``) or a further round in doubt."""
    ambiguous, round_ = obj.get("ambiguous_attempts"), obj.get("next_round")
    if isinstance(round_, dict) and round_.get("outcome") == _IN_DOUBT:
        return True
    return isinstance(ambiguous, int) and ambiguous >= 1 and obj.get("resolved_by") != "lookup"


def _window(obj: dict[str, Any], lookback_ms: int, timeout_ms: int) -> tuple[int, int] | None:
    """Return the window of an in-doubt line whose own pass sent the run, else None."""
    finished = instant_ms(obj.get("finished_at"))
    if not sent_by_its_pass(obj) or finished is None:
        return None
    if interrupted(obj):
        # Cut off on the wire at a stop: sent before it, it may land until its timeout, as a
        # state file's window says (bulkretry._ledger.spans).
        return finished - lookback_ms, finished + timeout_ms
    return finished - lookback_ms, finished


def written(line: Line, verdicts: dict[str, Done], found: Plan) -> tuple[bytes, str]:
    """Return a line's output and what it counts as (:func:`counted_as`, ``settled`` for a run
    another line shows re-triggered, ``passed`` for a line not in doubt).

    A line that is not in doubt passes through as it was; one in doubt comes out with the
    verdict on its run (if any); a bare run ID is ``skipped``, an invalid line ``invalid``.
    """
    record, obj = line.record, line.obj
    if obj is None:
        if record.run_id is None:
            error = ErrorInfo(kind="invalid_input", message=record.error or "not a valid run ID")
            outcome, run = Outcome.INVALID, record.text
        else:
            outcome, run, error = Outcome.SKIPPED, record.run_id, _BARE
        result = RunResult(
            run_id=run, outcome=outcome, error=error, source=record.source, line=record.line
        )
        return result.to_json_line(), outcome.value
    run_id = record.run_id
    if obj.get("outcome") != _IN_DOUBT or run_id is None:
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE), "passed"
    out = dict(obj)
    settled = found.done.get(run_id)
    if settled is not None:
        out.update(outcome=Outcome.ALREADY_RETRIGGERED.value, error=None)
        out.update(new_run_id=settled[0], etag=settled[1])
        return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE), "settled"
    verdict = verdicts.get(run_id)
    if verdict is None:  # not looked at (a stop): as it was
        return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE), _IN_DOUBT
    apply(out, verdict)
    return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE), counted_as(verdict)


def counted_as(verdict: Done | None) -> str:
    """Return what a verdict counts as: its outcome, or ``candidates`` for a run re-triggered
    whose new run could not be told apart."""
    if verdict is None:
        return _IN_DOUBT
    if verdict.outcome is Outcome.RETRIGGERED and verdict.new_run_id is None:
        return "candidates"
    return verdict.outcome.value


def apply(out: dict[str, Any], verdict: Done) -> None:
    """Write ``verdict`` into the results object ``out`` (``resolved_by``, ``candidates``)."""
    out["outcome"] = verdict.outcome.value
    if verdict.outcome is not Outcome.IN_DOUBT:
        out["new_run_id"], out["etag"] = verdict.new_run_id, verdict.etag
    out["error"] = verdict.error.as_dict() if verdict.error is not None else None
    out.pop("resolved_by", None)
    out.pop("candidates", None)
    if verdict.resolved_by is not None:
        out["resolved_by"] = verdict.resolved_by
        if verdict.candidates:
            out["candidates"] = list(verdict.candidates)


def resolution(run_id: str, verdict: Done) -> Resolution | None:
    """Return what the state file records for ``verdict`` (None: it stays in doubt)."""
    error = verdict.error.as_dict() if verdict.error is not None else None
    if verdict.outcome is Outcome.RETRIGGERED:
        if error is not None and verdict.candidates:
            error["candidates"] = list(verdict.candidates)
        return Resolution(run_id, "retriggered", verdict.new_run_id, verdict.etag, error)
    if verdict.outcome is Outcome.FAILED:
        # Not processed: the state a resume sends again, its doubt cleared.
        return Resolution(run_id, "not_attempted", None, None, error)
    return None


def state_line(row: DoubtRow, verdict: Done | None, path: str) -> bytes:
    """Return the results line of a run of the state file that was in doubt.

    Its ``finished_at`` is 10 ms past the later of the run's last write and the end of its
    window (the request timeout after a request left in flight), not now: fed back, a verdict
    settles only the doubts up to it (a later in-doubt line of the run, one the look-up never
    saw, wins), and the run's own results line, written with its last write, is one it saw:
    the window alone can end sooner (a lost answer, then a clean refusal, or a look-up that
    could not tell). A line that stays in doubt says no ambiguous attempt, so a later ``check``
    never takes a window from it.
    """
    # Just past the window: the run's own results line, written in the same step a few
    # microseconds after the state file, must not read as a later doubt than the verdict on it
    # (both times are cut to the millisecond). No more: a later pass's doubt must still win.
    end = max(row.updated_at, row.until if row.until is not None else row.updated_at)
    end += _SETTLES_AFTER
    result = RunResult(
        run_id=row.run_id,
        outcome=Outcome.IN_DOUBT,
        http_status=row.http_status,
        attempts=row.attempts,
        request_id=row.request_id,
        finished_at=_iso(end),
        source=path,
        line=row.seq,
    )
    out = result.as_dict()
    out["error"] = row.error
    if verdict is not None:
        apply(out, verdict)
        if verdict.outcome is not Outcome.IN_DOUBT:
            out["ambiguous_attempts"] = row.ambiguous
    return orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)


#: Seconds past a state file's window its verdict line is stamped with (see :func:`state_line`).
_SETTLES_AFTER = 0.01


def _iso(seconds: float) -> str:
    """Return epoch ``seconds`` as ISO-8601 UTC with milliseconds, as results lines write it."""
    when = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


_FED_BACK = (
    "no request of this batch sent it (its doubt came with a results line fed in): check that "
    "results file"
)


def doubt_of(row: DoubtRow) -> Doubt:
    """Return the :class:`Doubt` of a run in doubt of a state file."""
    if row.since is None or row.until is None:
        return Doubt(row.run_id, None, None, _FED_BACK)
    return Doubt(row.run_id, int(row.since * 1000), int(row.until * 1000))


def summary(counts: Counter[str], stats: FollowStats, in_doubt: int) -> str:
    """Return the line for stderr: what became of the records in doubt, what it cost."""
    if not in_doubt:
        bare = counts["skipped"]
        why = (
            f" ({bare} bare run IDs, not_checked: check reads run's results lines, or --state)"
            if bare
            else ""
        )
        return f"bulkretry: no in_doubt record to check; {counts.total()} lines written{why}"
    retriggered = counts["retriggered"] + counts["candidates"]
    settled = counts["settled"]
    return (
        f"bulkretry: {in_doubt} in_doubt checked: {retriggered} retriggered "
        f"({counts['retriggered']} with their new run, {counts['candidates']} with candidates), "
        + (f"{settled} already_retriggered by another line, " if settled else "")
        + f"{counts['failed']} not processed (safe to send again), {counts['in_doubt']} still "
        f"in_doubt; {stats.requests} look-up requests ({stats.gets} runs, {stats.listings} "
        f"listings in {stats.pages} pages, {stats.retries} retries)"
    )
