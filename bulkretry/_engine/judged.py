"""What triage says of a record it does not send: the verdicts, and the words they carry.

:mod:`.triage` decides; this room holds its vocabulary, so that the deciding stays readable:
the :class:`Verdict` type, the verdicts shared by every record (a duplicate, a held doubt), and
the messages of evidence that came too late.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._model import ErrorInfo, Outcome

__all__ = [
    "DUPLICATE_VERDICT",
    "HELD",
    "HELD_IN_DOUBT",
    "INVALID",
    "LATE",
    "LATE_DOUBT",
    "LATE_RELEASE",
    "ROUND_RUN",
    "Verdict",
    "held_in_doubt",
    "only_needs_results_lines",
]

#: Outcomes of a results line that mean the run was re-triggered already: never send it again.
HELD = "it may have been re-triggered already; pass --retry-in-doubt to send it again"
LATE = (
    "this line says the run was re-triggered already, but it came after this batch had sent "
    "the run (or judged it to be sent): it may now be re-triggered twice; give results files "
    "as FILE arguments, which are read whole before anything is sent"
)
LATE_DOUBT = (
    "this line says the run was left in doubt (it may have been re-triggered already), but it "
    "came after this batch had sent the run (or judged it to be sent), on evidence no newer "
    "than this doubt: it may now be re-triggered twice; give results files as FILE arguments, "
    "which are read whole before anything is sent"
)


LATE_RELEASE = (
    "this line is a look-up's verdict on the run (resolved_by), but it came after this batch had "
    "held the run in doubt for an earlier line: the run was not sent, and its record says "
    "in_doubt; if this verdict is newer than that doubt, give results files as FILE arguments, "
    "which are read whole before anything is sent"
)


def only_needs_results_lines(lines: int) -> str:
    """Return the one-line error for ``--only`` over input that holds no results line."""
    what = (
        f"none of the {lines} input line{'s' * (lines != 1)} is one"
        if lines
        else "the input holds no record"
    )
    return f"--only needs results lines as input (JSON lines with an outcome); {what}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A record's outcome without a request; ``durable`` asks for it in the state file.

    ``prior_outcome`` is, for a ``skipped`` line, the merged outcome of its run (its
    ``new_run_id``/``etag`` come with it); for a line whose evidence came too late, its own.
    """

    outcome: Outcome
    error: ErrorInfo | None = None
    new_run_id: str | None = None
    etag: str | None = None
    attempts: int = 0
    durable: bool = False
    prior_outcome: str | None = None
    #: Held in doubt by a results line of the input: the state file learns its doubt has no
    #: span of the batch's (its request may have landed at any time).
    fed_doubt: bool = False


INVALID = "not a valid run ID"
DUPLICATE_VERDICT = Verdict(Outcome.DUPLICATE)
#: A run of the state file that a further round of another record's chain re-triggers (or
#: will): never this line's to send.
ROUND_RUN = Verdict(
    Outcome.DUPLICATE,
    ErrorInfo(
        kind="duplicate",
        message="a further round of another record's chain (run --follow) re-triggers this run: "
        "run --state PATH --resume --follow takes the chains up",
    ),
)
#: A run of the batch left in doubt, which no input line named: held, never sent on its own.
HELD_IN_DOUBT = Verdict(
    Outcome.IN_DOUBT,
    ErrorInfo(kind="in_doubt", message="in doubt since an earlier run of this batch: " + HELD),
)


def held_in_doubt() -> Verdict:
    """The verdict of a run a results line of the input holds in doubt."""
    error = ErrorInfo(kind="in_doubt", message="in doubt in an earlier run: " + HELD)
    return Verdict(Outcome.IN_DOUBT, error, durable=True, fed_doubt=True)
