"""What triage saw, as errors and the exit code: ``--only`` on plain IDs, evidence too late."""

from __future__ import annotations

import sys

from .._engine.engine import Engine
from .._engine.triage import only_needs_results_lines
from .options import EXIT_SOME_FAILED, EXIT_USAGE

__all__ = ["judge_triage"]


def judge_triage(engine: Engine, code: int, *, resumed: bool, quiet: bool) -> int:
    """Turn what triage saw into errors: --only on plain IDs, evidence that came too late."""
    triage = engine.triage
    records = sum(engine.stats.outcomes.values())
    if engine.settings.only is not None and not triage.results_lines and not resumed:
        # Every record was skipped: nothing was sent, and that was not what the user meant.
        print(f"bulkretry: error: {only_needs_results_lines(records)}", file=sys.stderr)
        return EXIT_USAGE
    if triage.late_release and not quiet:
        late = f"{triage.late_release} verdict lines (resolved_by) came after their run was held"
        print(f"bulkretry: {late} in doubt for an earlier line (late_evidence)", file=sys.stderr)
    if triage.late_evidence and not quiet:
        print(
            f"bulkretry: {triage.late_evidence} runs were sent before a later input line said "
            "they had been re-triggered already, or may have been (in_doubt) (error kind "
            "late_evidence): check them; put results files first, or give them as FILE arguments",
            file=sys.stderr,
        )
    return (code or EXIT_SOME_FAILED) if triage.late_evidence or triage.late_release else code
