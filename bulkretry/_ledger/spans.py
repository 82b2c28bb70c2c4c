"""When each run's doubt arose and when it was last lost: the columns format 4 adds to ``runs``.

``check --state`` looks for a run's new run among the new runs of its flow created inside a
window. Before format 4 the window began when the invocation that first saw the run started
(every run of a batch admitted at once shares it) and ended at the run's last write (the crash
sweep's, for a run killed in flight): in a batch of a thousand runs every window held every new
run of its flow, and the look-ups could tell none apart. Format 4 keeps, per run:

===============  ==============================================================================
column           what it holds
===============  ==============================================================================
``sent_at``      when its latest request went on the wire (the intent)
``doubt_from``   the ``sent_at`` of the first request that may have landed unanswered; 0 when
                 the doubt came with the input (a results line fed back in doubt, held or sent
                 again), or from a file of an earlier format, which cannot tell such a doubt
                 from its own: its request may have landed at any time before; NULL while there
                 is no doubt
``doubt_to``     when the last request that may have landed was known unanswered (its answer
                 lost, or the flight ended in doubt)
``unanswered``   when the latest request that never had an answer left: its process died with
                 it on the wire (swept into doubt at the next open), or a stop cut it off. It
                 may land until it would have timed out, whatever happens to the run later: no
                 later write lowers this bound
===============  ==============================================================================

A run still ``in_flight`` (its process died, no batch has opened the file since) may land until
its ``sent_at`` plus the timeout. A doubt cleared by a look-up (live or ``check``'s
``not_processed``) clears every bound: the next request starts a window of its own.
"""

from __future__ import annotations

__all__ = ["DDL_4", "FED", "SINCE", "UPGRADE_4", "window"]

#: Added by format 4.
DDL_4 = """
ALTER TABLE runs ADD COLUMN sent_at REAL;
ALTER TABLE runs ADD COLUMN doubt_from REAL;
ALTER TABLE runs ADD COLUMN doubt_to REAL;
ALTER TABLE runs ADD COLUMN unanswered REAL
"""
#: ``doubt_from`` of a doubt that came with the input: it may have landed at any time before.
FED = 0.0
#: Fill the format 4 columns of a file of an earlier format: a run in doubt there has no window
#: (a doubt fed in and then sent again looks like the batch's own, so none can be trusted); a
#: run in flight was sent at its last write.
UPGRADE_4 = f"""
UPDATE runs SET sent_at = updated_at WHERE state = 'in_flight';
UPDATE runs SET doubt_from = {FED} WHERE doubt = 1
"""
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
    unanswered: float | None,
    *,
    grace: float,
) -> tuple[float, float] | None:
    """Return a run's window in doubt, epoch seconds, from its format 4 columns (None: none
    known). *grace* is how long after it was sent a request that never had an answer may land
    (the request timeout)."""
    if state == "in_flight":
        unanswered = sent_at  # its process died with it on the wire; no open swept it yet
        if doubt_from is None:
            doubt_from = sent_at
    if doubt_from is None or doubt_from <= FED:
        return None
    if unanswered is not None:
        doubt_to = max(doubt_to or unanswered, unanswered + grace)
    return None if doubt_to is None else (doubt_from, doubt_to)
