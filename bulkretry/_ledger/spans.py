"""When each run's doubt arose and when it was last lost: the columns format 4 adds to ``runs``.

``check --state`` looks for a run's new run among the new runs of its flow created inside a
window. Before format 4 the window began when the invocation that first saw the run started
(every run of a batch admitted at once shares it) and ended at the run's last write (the crash
sweep's, for a run killed in flight): in a batch of a thousand runs every window held every new
run of its flow, and the look-ups could tell none apart. Format 4 keeps, per run:

==============  ===============================================================================
column          what it holds
==============  ===============================================================================
``sent_at``     when its latest request went on the wire (the intent)
``doubt_from``  the ``sent_at`` of the first request that may have landed unanswered; 0 when
                the doubt came with the input (a results line fed back in doubt, held or sent
                again), whose request may have landed at any time before; NULL while there is
                no doubt
``doubt_to``    when the last request that may have landed was known unanswered (its answer
                lost, or the flight ended in doubt); NULL when the latest request never had an
                answer (its process died: in flight, or swept into doubt at the next open)
==============  ===============================================================================

A doubt cleared by a look-up (live or ``check``'s ``not_processed``) clears both bounds: the
next request starts a window of its own. A file upgraded from an earlier format keeps the old,
wide window for the runs in doubt then (never a narrower one than the evidence allows).
"""

from __future__ import annotations

__all__ = ["DDL_4", "FED", "SINCE", "UPGRADE_4", "window"]

#: Added by format 4; run on an older file (after :data:`UPGRADE_4`'s columns exist) to upgrade.
DDL_4 = """
ALTER TABLE runs ADD COLUMN sent_at REAL;
ALTER TABLE runs ADD COLUMN doubt_from REAL;
ALTER TABLE runs ADD COLUMN doubt_to REAL
"""
#: Fill the format 4 columns of a file of an earlier format from what it kept: a run in doubt
#: gets the wide window ``check --state`` gave it before (from the start of the invocation that
#: first saw it, else the batch's; to its last write), or none if it came in doubt with the
#: input; a run in flight, its last write as the time it was sent.
UPGRADE_4 = """
UPDATE runs SET sent_at = updated_at WHERE state = 'in_flight';
UPDATE runs SET
    doubt_from = CASE WHEN attempts > 0 AND ambiguous <= attempts THEN coalesce(
        (SELECT started_at FROM invocations WHERE number = runs.seen),
        (SELECT CAST(value AS REAL) FROM meta WHERE key = 'created_at'), 0) ELSE 0 END,
    doubt_to = CASE WHEN state = 'in_flight' THEN NULL ELSE updated_at END
WHERE doubt = 1
"""
#: ``doubt_from`` of a doubt that came with the input: it may have landed at any time before.
FED = 0.0
#: What ``doubt_from`` becomes when the latest request (sent at ``sent_at``) may have landed, in
#: SQL over the row before the update: the span begun already, else that request's time; a doubt
#: without a span (one held from the input, or anything unforeseen) stays one of any time.
SINCE = (
    f"CASE WHEN doubt_from IS NOT NULL THEN doubt_from WHEN doubt = 1 THEN {FED} ELSE sent_at END"
)


def window(
    state: str,
    sent_at: float | None,
    doubt_from: float | None,
    doubt_to: float | None,
    *,
    grace: float,
) -> tuple[float, float] | None:
    """Return a run's window in doubt, epoch seconds, from its format 4 columns (None: none
    known). *grace* is how long after it was sent a request whose process died may land."""
    if doubt_from is None and state == "in_flight":
        doubt_from = sent_at  # its first request, still unanswered
    if doubt_from is None or doubt_from <= FED:
        return None
    if doubt_to is None or state == "in_flight":
        # Its latest request never had an answer: it may land until it would have timed out.
        if sent_at is None:
            return None
        doubt_to = sent_at + grace
    return doubt_from, doubt_to
