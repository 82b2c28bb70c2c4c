"""The machine-readable summary of a batch: one JSON object, the same for ``run`` and ``status``.

Its keys are always present, counts 0 when none (``throttled`` and ``learned_rate`` are null
for a state file, which does not keep them)::

    {"outcomes": {"retriggered": N, ...every outcome...}, "error_kinds": {...},
     "error_codes": {...}, "requests": N, "throttled": N, "ambiguous_attempts": N,
     "learned_rate": R, "elapsed_s": S, "exit_code": C}

``run --follow`` adds ``"followed": {"final_status": {"success": N, "failed": N, "partial": N,
"unknown": N}, "further_rounds": N, "lookups": N}``.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import orjson

from .._exceptions import InputError
from .._model import Outcome, RunResult
from .._stats import Stats

__all__ = ["ErrorCounts", "summary_object", "write_summary_json"]

#: The final statuses a followed record may end with, in the summary's order.
FINAL_STATUSES_ORDER = ("success", "failed", "partial", "unknown")


class ErrorCounts:
    """Count the records' error kinds and Adobe error codes, as results are written."""

    __slots__ = ("codes", "kinds")

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"ErrorCounts(kinds={dict(self.kinds)}, codes={dict(self.codes)})"

    def add(self, result: RunResult) -> None:
        error = result.error
        if error is not None:
            self.kinds[error.kind] += 1
            if error.error_code:
                self.codes[error.error_code] += 1


def summary_object(
    *,
    outcomes: Counter[Outcome] | dict[str, int],
    errors: ErrorCounts,
    requests: int,
    throttled: int | None,
    ambiguous_attempts: int,
    learned_rate: float | None,
    elapsed: float,
    exit_code: int,
) -> dict[str, Any]:
    """Return the summary object, every key present."""
    counts = {outcome.value: 0 for outcome in Outcome}
    for outcome, count in outcomes.items():
        counts[str(getattr(outcome, "value", outcome))] = count
    return {
        "outcomes": counts,
        "error_kinds": dict(errors.kinds.most_common()),
        "error_codes": dict(errors.codes.most_common()),
        "requests": requests,
        "throttled": throttled,
        "ambiguous_attempts": ambiguous_attempts,
        "learned_rate": None if learned_rate is None else round(learned_rate, 3),
        "elapsed_s": round(elapsed, 3),
        "exit_code": exit_code,
    }


def summary_of_stats(
    stats: Stats, errors: ErrorCounts, learned_rate: float | None, exit_code: int
) -> dict[str, Any]:
    """Return the summary object of a batch this process ran (``followed`` under --follow)."""
    summary = summary_object(
        outcomes=stats.outcomes,
        errors=errors,
        requests=stats.attempts,
        throttled=stats.throttled,
        ambiguous_attempts=stats.ambiguous_attempts,
        learned_rate=learned_rate if stats.attempts else None,
        elapsed=stats.elapsed,
        exit_code=exit_code,
    )
    followed = {status: n for status, n in stats.finals.items() if status}
    if stats.finals:
        summary["followed"] = {
            "final_status": {status: followed.get(status, 0) for status in FINAL_STATUSES_ORDER},
            "further_rounds": stats.rounds,
            "lookups": stats.follow_lookups,
        }
    return summary


def write_summary_json(path: str, summary: dict[str, Any]) -> None:
    """Write the summary to ``path`` whole (a temporary file renamed over it)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write the summary to {path}: {exc.strerror}") from None
