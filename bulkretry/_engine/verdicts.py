"""The verdicts a look-up of a lost answer gives (:mod:`.resolve`): found, unsure, send again."""

from __future__ import annotations

from .._http.lookups import RunView
from .._model import ErrorInfo, Outcome
from .steps import Done

__all__ = ["AMBIGUOUS_MATCH", "SEND_AGAIN", "cannot_tell", "found", "unsure"]


def found(view: RunView) -> Done:
    """The run a look-up found to be the lost answer's re-trigger."""
    return Done(Outcome.RETRIGGERED, None, view.id, view.etag, resolved_by="lookup")


def unsure(names: tuple[str, ...], why: str) -> Done:
    """In doubt: a look-up found new runs of the flow it cannot attribute (``why``), or none
    (``names`` empty), which cannot tell either."""
    if not names:
        return cannot_tell(why)
    message = f"a look-up found new runs of its flow {why}; candidates: " + ", ".join(names)
    return Done(Outcome.IN_DOUBT, ErrorInfo(kind="in_doubt", message=message), candidates=names)


def cannot_tell(why: str) -> Done:
    """In doubt: the look-up could not tell (``why``)."""
    return Done(
        Outcome.IN_DOUBT,
        ErrorInfo(
            kind="in_doubt", message=f"the answer was lost and a look-up could not tell: {why}"
        ),
    )


#: The verdict handed to another check of the group: nothing of theirs was processed either.
SEND_AGAIN = Done(Outcome.NOT_ATTEMPTED, None)
AMBIGUOUS_MATCH = ErrorInfo(
    kind="ambiguous_match",
    message="re-triggered (a look-up found as many new runs of its flow and time as unclear "
    "answers), but which new run is this one's cannot be told; see candidates",
)
