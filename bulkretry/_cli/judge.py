"""What triage saw, as errors and the exit code: ``--only`` on plain IDs, evidence too late."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .._engine.engine import Engine
from .._engine.triage import only_needs_results_lines
from .._exceptions import ConfigurationError
from .._io.evidence import Evidence
from .batch_input import resumes_batch
from .options import EXIT_SOME_FAILED, EXIT_USAGE

__all__ = ["judge_triage", "refuse_only"]


def refuse_only(
    only: frozenset[str] | None, state: str | None, files: Sequence[str], evidence: Evidence | None
) -> None:
    """Refuse ``--only`` before the batch when it could only skip every record.

    It selects by the outcomes of results lines in the input: none over input that holds no
    results line (read whole: *evidence*), and none on the resume of a state file's batch (no
    input read, *evidence* None, or with ``--state`` an empty stdin). There every record came
    out ``skipped``, with no evidence of its own on the line: fed back, such lines re-sent runs
    the state file held re-triggered.
    """
    if only is None:
        return
    read_any = evidence is not None and evidence.records > 0
    if state and resumes_batch(files, reads_input=evidence is not None, read_any=read_any):
        raise ConfigurationError(
            f"--only selects by the outcomes of results lines in the input, and this resumes "
            f"the batch of {state}, which reads none: drop --only to finish the batch, or give "
            "the results file of a pass as input"
        )
    if evidence is not None and set(files) <= evidence.sources and not evidence.results_lines:
        raise ConfigurationError(only_needs_results_lines(evidence.records))


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
