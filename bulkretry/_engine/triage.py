"""Decide, before any request, what becomes of an input record: send it, or say why not.

A record is not sent when it is invalid, when its run was already seen in this batch, when a
results line fed back in says it is done (or in doubt), or when the state file knows it is done
or in doubt from an earlier invocation. Everything else is sent (or, with ``--dry-run``,
reported as ``would_retrigger``).

A record is judged by the most advanced evidence about its run (see :mod:`bulkretry._evidence`):
its own line, or a better one from the pre-scan of the input files or from a line read before it.
``--only`` selects by that merged state. A ``retriggered`` line that comes after its run was
sent (on a pipe, which no pre-scan can read ahead) is counted in :attr:`Triage.late_evidence`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._config import Settings
from .._io.dedup import SeenSet
from .._io.evidence import (
    FAILED_RANK,
    RESOLVED_RANK,
    Evidence,
    Prior,
    order,
    rank,
)
from .._io.source import InputRecord
from .._model import DONE_OUTCOMES, ErrorInfo, Outcome
from .judged import (
    DUPLICATE_VERDICT,
    HELD,
    HELD_IN_DOUBT,
    INVALID,
    LATE,
    LATE_DOUBT,
    LATE_RELEASE,
    ROUND_RUN,
    Verdict,
    held_in_doubt,
    only_needs_results_lines,
)

if TYPE_CHECKING:
    from .._ledger.ledger import Admission

# Verdict, the shared verdicts and only_needs_results_lines are re-exported: their importers
# name them here, beside the decisions.
__all__ = ["HELD_IN_DOUBT", "Triage", "Verdict", "only_needs_results_lines"]

# PriorState values, compared as strings so that batches without --state never load sqlite3.
_DUPLICATE, _RETRIGGERED, _IN_DOUBT = "duplicate", "retriggered", "in_doubt"
_IN_DOUBT_PRIOR = Outcome.IN_DOUBT.value


class Triage:
    """Judge records in input order; keeps the in-memory set of runs seen when no ledger does.

    ``evidence`` (from :func:`~bulkretry._evidence.prescan`) is merged into every judgement;
    lines of other inputs that ``--only`` passes over are added to it as they come, so that a
    later line of their run is judged by them too.
    """

    def __init__(
        self, settings: Settings, *, with_ledger: bool, evidence: Evidence | None = None
    ) -> None:
        self._only = settings.only
        self._retry_in_doubt = settings.retry_in_doubt
        self._with_ledger = with_ledger
        self._seen = None if with_ledger else SeenSet()
        # Runs judged to be sent, for late evidence: the ledger knows them, not this object.
        self._sent = SeenSet() if with_ledger and settings.only is not None else None
        # Runs judged and not sent (done, held in doubt): a retriggered line after one of them
        # came too late only if its run is not here. Runs of the state file's earlier
        # invocations are held by their seq, one bit each: on a resume over a million done
        # runs, a SeenSet of them cost 17% of the time and 24 MB.
        self._held: SeenSet | None = None
        self._held_seqs = bytearray()
        self._evidence = evidence
        self._covered = evidence.sources if evidence is not None else frozenset()
        self._merging = evidence is not None and len(evidence) > 0
        # Runs sent on a verdict that settled a doubt (a check's not_processed), by the verdict's
        # place in the merge: a later in_doubt line beats it only if its doubt is newer.
        self._released: dict[str, tuple[int, int, int]] = {}
        # Runs held in doubt for an input line: a verdict on a pipe after that is too late.
        self._doubted: SeenSet | None = None
        self._late = 0
        self._late_release = 0
        self._results_lines = 0
        self._elsewhere = 0

    def __repr__(self) -> str:
        return (
            f"Triage(seen={self._seen!r}, only={sorted(self._only or ())}, "
            f"evidence={self._evidence!r}, held={self._held!r}, "
            f"results_lines={self._results_lines}, late_evidence={self._late})"
        )

    @property
    def late_evidence(self) -> int:
        """Runs sent (or judged to be) before a line saying they were re-triggered already."""
        return self._late

    @property
    def late_release(self) -> int:
        """Verdict lines that came after their run was held in doubt for an earlier line."""
        return self._late_release

    @property
    def results_lines(self) -> int:
        """Results lines (JSON lines with an outcome) judged so far, or heard of (`hear`)."""
        return self._results_lines + self._elsewhere

    def evidence_of(self, run_id: str) -> Prior | None:
        """What the results lines fed in say of ``run_id`` (a chain's pairs included)."""
        return None if self._evidence is None else self._evidence.best(run_id)

    def claim_round(self, run_id: str) -> bool:
        """Take ``run_id``, a new run to re-trigger as a further round, as one of this batch's
        runs; False when an input line named it already (its own line sends it, or did).

        Without a state file, this is what keeps a round and an input line from both sending
        it: an input line naming it later is a ``duplicate``. With one, the state file decides.
        """
        return self._seen is None or self._seen.add(run_id)

    def admissible(self, record: InputRecord) -> bool:
        """True for a record the state file should know: valid, and not skipped by ``--only``.

        With a ledger, this is asked of a whole batch before any of it is judged, and the
        judgement follows its answer; a record it passes over is added to the evidence here.
        """
        run_id = record.run_id
        if run_id is None:
            return False
        only = self._only
        if only is None:
            return True
        best = self._merge(record, run_id) if self._merging else None
        if (record.prior if best is None else best.outcome) in only:
            return True
        if self._with_ledger:
            self._learn(record)
        return False

    def learn(self, record: InputRecord) -> None:
        """Take in what a ``run --follow`` line read on a pipe says of the other runs of its
        chain (each but the last re-triggered into the next), before the lines after it.

        A pre-scan reads files ahead, not pipes: without this, a failed run of a chain named
        on a later line of the pipe (a listing of failed runs) was sent again. ``--shard``
        calls it for the lines of other shards too: a chain's runs may be this shard's.
        """
        if len(record.prior_chain) > 1 or record.prior_next_round is not None:
            self._learn(record)

    def hear(self, record: InputRecord) -> None:
        """Take in a line this process does not judge (another ``--shard``'s): its results
        line counts for ``--only``, and its chain may hold runs of this shard. Nothing else
        of it is kept: its own run is never this shard's to judge."""
        if record.prior is not None:
            self._elsewhere += 1
            self.learn(record)

    def judge(self, record: InputRecord, admission: Admission | None = None) -> Verdict | None:
        """Return the record's outcome if it is not to be sent, else None."""
        run_id = record.run_id
        prior = record.prior
        if prior is not None:
            self._results_lines += 1
            self.learn(record)
        if run_id is None:
            return Verdict(
                Outcome.INVALID, ErrorInfo(kind="invalid_input", message=record.error or INVALID)
            )
        best = self._merge(record, run_id) if self._merging else None
        only = self._only
        if only is not None:
            if self._with_ledger:
                skipped = admission is None
            else:
                skipped = (prior if best is None else best.outcome) not in only
                if skipped:
                    self._learn(record)
            if skipped:
                return self._skip(record, run_id, best)
        seq = 0
        if admission is not None:
            seq = admission.seq
            if admission.state == _DUPLICATE:
                return self._duplicate(record, run_id, admission.seq)
            if admission.state == _RETRIGGERED:
                # The state file's own record of a re-trigger beats any line fed back.
                self._hold(run_id, seq)
                return Verdict(
                    Outcome.ALREADY_RETRIGGERED,
                    new_run_id=admission.new_run_id,
                    etag=admission.etag,
                    attempts=admission.attempts,
                )
        elif self._seen is not None and not self._seen.add(run_id):
            return self._duplicate(record, run_id)
        if best is not None:
            prior = best.outcome
        if prior is not None:
            if prior in DONE_OUTCOMES:
                self._hold(run_id, seq)
                winner = record.prior_new_run_id, record.prior_etag
                if best is not None:
                    winner = best.new_run_id, best.etag
                return Verdict(
                    Outcome.ALREADY_RETRIGGERED, new_run_id=winner[0], etag=winner[1], durable=True
                )
            if prior == _IN_DOUBT_PRIOR and not self._retry_in_doubt:
                self._hold(run_id, seq)
                if self._doubted is None:
                    self._doubted = SeenSet()
                self._doubted.add(run_id)
                return held_in_doubt()
        if admission is not None and admission.state == _IN_DOUBT and not self._retry_in_doubt:
            self._hold(run_id, seq)
            message = "in doubt since an earlier run of this batch: " + HELD
            return Verdict(
                Outcome.IN_DOUBT,
                ErrorInfo(kind="in_doubt", message=message),
                attempts=admission.attempts,
            )
        if prior == _IN_DOUBT_PRIOR:
            # Sent again (--retry-in-doubt): its earlier request may have landed, so this
            # attempt can end retriggered or in_doubt, never failed.
            record.prior = prior
        if self._sent is not None:
            self._sent.add(run_id)
        if prior is not None and not self._retry_in_doubt:  # a bare ID (most lines) releases none
            if best is None:
                resolved_by, at = record.prior_resolved_by, record.prior_at
            else:
                resolved_by, at = best.resolved_by, best.at
            if rank(prior, resolved_by) == RESOLVED_RANK:
                self._released[run_id] = order(RESOLVED_RANK, at)
        return None

    def _merge(self, record: InputRecord, run_id: str) -> Prior | None:
        """Return the evidence's prior for the record's run if it beats the record's own line.

        Among equals the later line wins: for an input the evidence read whole, that is the
        evidence's (it holds this line and every later one); otherwise this line.
        """
        evidence = self._evidence
        best = None if evidence is None else evidence.best(run_id)
        if best is None:
            return None
        theirs = order(rank(best.outcome, best.resolved_by), best.at)
        ours = order(rank(record.prior, record.prior_resolved_by), record.prior_at)
        if theirs > ours or (theirs == ours and record.source in self._covered):
            return best
        return None

    def _learn(self, record: InputRecord) -> None:
        """Add a line ``--only`` passes over to the evidence, unless a pre-scan read it."""
        ranked = rank(record.prior, record.prior_resolved_by)
        if ranked < FAILED_RANK or record.source in self._covered:
            return
        if self._evidence is None:
            self._evidence = Evidence()
        self._merging = self._evidence.add(record) or self._merging

    def _hold(self, run_id: str, seq: int) -> None:
        # A further round's run sits at a negative seq (see _ledger/chains.py): held by ID.
        if seq > 0:
            self._hold_seq(seq)
            return
        if self._held is None:
            self._held = SeenSet()
        self._held.add(run_id)

    def _is_held(self, run_id: str, seq: int) -> bool:
        """True when ``run_id`` (at ``seq``, see :meth:`_hold`) was held: judged and not sent."""
        if seq > 0:
            byte = seq >> 3
            return byte < len(self._held_seqs) and bool(self._held_seqs[byte] & 1 << (seq & 7))
        return self._held is not None and run_id in self._held

    def _hold_seq(self, seq: int) -> bool:
        """Hold the run of an earlier invocation at ``seq``; False if it was held already."""
        held = self._held_seqs
        byte, mask = seq >> 3, 1 << (seq & 7)
        if byte >= len(held):
            held.extend(bytes(max(byte + 1 - len(held), len(held))))  # doubled: amortised
        if held[byte] & mask:
            return False
        held[byte] |= mask
        return True

    def _came_late(self, run_id: str, *, seen: bool, seq: int = 0) -> bool:
        """Hold ``run_id`` from now on; True when it was judged to be sent before this line."""
        if not seen:
            marks = self._seen if self._seen is not None else self._sent
            # Marking the run seen is harmless: a retriggered line means it is never sent.
            seen = marks is not None and not marks.add(run_id)
        if seq > 0:
            return self._hold_seq(seq) and seen
        if self._held is None:
            self._held = SeenSet()
        return self._held.add(run_id) and seen

    def _late_verdict(self, record: InputRecord) -> Verdict:
        self._late += 1
        return Verdict(
            Outcome.DUPLICATE,
            ErrorInfo(
                kind="late_evidence",
                message=LATE if record.prior in DONE_OUTCOMES else LATE_DOUBT,
            ),
            new_run_id=record.prior_new_run_id,
            etag=record.prior_etag,
            prior_outcome=record.prior,
        )

    def _holds(self, record: InputRecord, run_id: str, *, seen: bool, seq: int = 0) -> bool:
        """True when the record's own line would have kept its run from being sent, had it come
        first: it says the run was re-triggered, or left in doubt after what released it.

        An ``in_doubt`` line counts only for a run this batch sent (*seen*: judged before this
        line), so that holding it from now on never keeps back a newer verdict's release.
        """
        prior = record.prior
        if prior in DONE_OUTCOMES:
            return True
        if prior != _IN_DOUBT_PRIOR or self._retry_in_doubt:
            return False
        if self._is_held(run_id, seq):
            return False
        marks = self._seen if self._seen is not None else self._sent
        if not seen and (marks is None or run_id not in marks):
            return False
        released = self._released.get(run_id)
        return released is None or order(rank(prior), record.prior_at) > released

    def _duplicate(self, record: InputRecord, run_id: str, seq: int = 0) -> Verdict:
        if self._holds(record, run_id, seen=True, seq=seq) and self._came_late(
            run_id, seen=True, seq=seq
        ):
            return self._late_verdict(record)
        if (
            seq >= 0
            and record.prior_resolved_by is not None
            and record.source not in self._covered
            and self._doubted is not None
            and run_id in self._doubted
        ):
            # On a pipe no pre-scan read it: held for an older line, never passed over in silence.
            self._late_release += 1
            error = ErrorInfo(kind="late_evidence", message=LATE_RELEASE)
            return Verdict(Outcome.DUPLICATE, error, prior_outcome=record.prior)
        return ROUND_RUN if seq < 0 else DUPLICATE_VERDICT

    def _skip(self, record: InputRecord, run_id: str, best: Prior | None) -> Verdict:
        if self._holds(record, run_id, seen=False) and self._came_late(run_id, seen=False):
            return self._late_verdict(record)
        if best is None:
            return Verdict(
                Outcome.SKIPPED,
                new_run_id=record.prior_new_run_id,
                etag=record.prior_etag,
                prior_outcome=record.prior,
            )
        return Verdict(
            Outcome.SKIPPED,
            new_run_id=best.new_run_id,
            etag=best.etag,
            prior_outcome=best.outcome,
        )
