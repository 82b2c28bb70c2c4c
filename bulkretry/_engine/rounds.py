"""``run --follow``: follow each new run to its end, and re-trigger it again while rounds last.

A record whose re-trigger created a new run is not written at once: :meth:`Rounds.take` hands
its new run to the :class:`~.follow.Follower` and keeps its results line in a
:class:`~.chain.Chain`. When the run ends:

- ``failed`` with rounds left (``--rounds N`` counts every re-trigger of the record, the first
  included): the failed run is re-triggered after ``--round-delay`` (with up to a tenth more,
  so that runs that failed together are not sent together again). The further round is a
  record of the engine's own (a :class:`~.steps.Flight` with its ``chain``): the same throttle,
  retries, state file and handling of lost answers as the first. Its new run is followed in turn;
  a round that created no run (refused, stopped, in doubt) ends the chain and says why in
  ``next_round``.
- otherwise the chain is over: a worker writes its line (a ``concluding`` flight).

The dispatcher must not let its workers end while a run is followed, since a further round may
come: one :meth:`~.dispatch.Dispatch.keep` stands for every chain being followed.

A stop (a signal, a halt) stops the follower: every run still followed ends ``unknown``, and a
round waiting out its delay is never sent (its chain ends ``failed``, ``next_round``
``not_attempted``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from typing import TYPE_CHECKING

from .._config import Settings
from .._exceptions import StateError
from .._http.lookups import Final, RunView
from .._io.source import InputRecord
from .._model import (
    DONE_OUTCOMES,
    ROUND_ANOTHERS,
    ROUND_LANDED,
    ROUND_MAY_HAVE_LANDED,
    ROUND_SEND,
    ErrorInfo,
    Followed,
    RunResult,
)
from .._stats import Stats
from .chain import Chain
from .dispatch import Dispatch
from .follow import Ended, Follower
from .steps import Control, Flight

if TYPE_CHECKING:
    from .._ledger.ledger import Ledger
    from .attempt import Attempt
    from .triage import Triage

__all__ = ["Rounds"]

_FINALS: tuple[Final, ...] = ("success", "failed", "partial")
_NOT_FOLLOWED = Followed()
_UNKNOWN_RUN = Followed(final_status="unknown")
_ROUND_IN_DOUBT = ErrorInfo(
    kind="in_doubt",
    message="a further round's request for the failed run may have landed: not sent again "
    "(bulkretry check --state can tell)",
)
_ROUND_REFUSED = ErrorInfo(kind="http", message="a further round's re-trigger was refused")
_ANOTHERS = ErrorInfo(
    kind="duplicate",
    message="the failed run is re-triggered by another line of this batch (an input line "
    "naming it, or another record's chain): see that line",
)
#: Runs a chain walked from the evidence may hold (a corrupt file's loop stops here).
_LONGEST = 10_000
#: A further round waits --round-delay and up to this share more.
_JITTER = 0.1


class Rounds:
    """Follow the chains of one batch's records; re-trigger their failed runs while rounds last."""

    def __init__(
        self,
        settings: Settings,
        follower: Follower,
        dispatch: Dispatch[Flight],
        stats: Stats,
        rng: random.Random,
        *,
        control: Control,
        ledger: Ledger | None = None,
        triage: Triage | None = None,
    ) -> None:
        self.follower = follower
        self._triage = triage
        self._control = control
        self._ledger = ledger
        self._rounds = settings.rounds
        self._delay = settings.round_delay
        self._skew = settings.check_skew
        self._dispatch = dispatch
        self._stats = stats
        self._rng = rng
        self._following = 0
        self._stopping = False
        self._following_stopped = False
        #: The chains followed, by their last run.
        self._chains: dict[str, Chain] = {}

    @classmethod
    def of(
        cls,
        control: Control,
        attempt: Attempt,
        dispatch: Dispatch[Flight],
        stats: Stats,
        rng: random.Random,
        ledger: Ledger | None = None,
        triage: Triage | None = None,
    ) -> Rounds:
        """Follow under ``attempt``'s client, tokens and governor (the batch's)."""
        follower = Follower(
            client=attempt.client,
            tokens=attempt.tokens,
            governor=attempt.governor,
            settings=attempt.settings,
            rng=rng,
        )
        settings = attempt.settings
        return cls(
            settings, follower, dispatch, stats, rng, control=control, ledger=ledger, triage=triage
        )

    def __repr__(self) -> str:
        return f"<Rounds following={self._following} rounds={self._rounds} {self.follower!r}>"

    def take(self, line: RunResult, flight: Flight | None, record: InputRecord) -> bool:
        """Follow the new run of a record's line; False when it has none (write the line now).

        A line stands for a new run when the record was re-triggered (now, or before: a state
        file, a results line fed back) and its new run is known. A line fed back goes on from
        the chain it holds (its rounds count), and one whose further round was in doubt is
        never sent again.
        """
        new_run_id = line.new_run_id
        if new_run_id is None or line.outcome._value_ not in DONE_OUTCOMES:
            return False
        chain = Chain(line, [new_run_id], etag=line.etag)
        if flight is None and self._ledger is not None:
            # Re-triggered before (a resume): go on from where the state file's chain ends.
            try:
                self._resume(chain, self._ledger, record)
            except StateError as exc:
                self._control.stop(str(exc), hard=True)
                return False
            return True
        if flight is not None and flight.first_wall:
            chain.since_ms = int((flight.first_wall - self._skew) * 1000)
        elif self._fed_back(chain, record):
            return True
        if self._triage is not None:
            for run_id in chain.runs[:-1]:
                # Re-triggered already (a line fed back): an input line naming one is a
                # duplicate. The last is claimed when a round is sent for it.
                self._triage.claim_round(run_id)
        self._follow(chain)
        return True

    def unfollowed(self, line: RunResult) -> RunResult:
        """Return the line of a record with no new run to follow, and count how it ended.

        ``final_status`` is null for a record that was not re-triggered, ``unknown`` for one
        re-triggered whose new run a look-up could not tell (``candidates``).
        """
        if line.outcome._value_ in DONE_OUTCOMES:
            self._stats.finals["unknown"] += 1
            return dataclasses.replace(line, followed=_UNKNOWN_RUN)
        self._stats.finals[""] += 1
        return dataclasses.replace(line, followed=_NOT_FOLLOWED)

    def _fed_back(self, chain: Chain, record: InputRecord) -> bool:
        """Take in what a results line fed back says of the chain; True when it is over.

        Its ``chain`` (continued by the pairs other lines' chains hold) counts its rounds; a
        further round that may have landed (``next_round`` in doubt, or re-triggered with no
        run named) is never sent again.
        """
        prior = record.prior_chain
        if not prior or (chain.runs[-1] not in prior and not self._continues(prior, chain)):
            return False
        if chain.runs[-1] in prior:
            chain.runs = list(prior[: prior.index(chain.runs[-1]) + 1])
        if record.prior_next_round in ROUND_LANDED and chain.runs[-1] == prior[-1]:
            self._unsent(chain, ROUND_MAY_HAVE_LANDED)
            return True
        return False

    def _continues(self, prior: tuple[str, ...], chain: Chain) -> bool:
        """Walk the evidence's pairs from ``prior``'s last run; True (and ``chain`` set) when
        they lead to ``chain``'s run: a later line of the same record went further."""
        runs = list(prior)
        while self._triage is not None and len(runs) < _LONGEST:
            best = self._triage.evidence_of(runs[-1])
            if best is None or best.outcome not in DONE_OUTCOMES or best.new_run_id is None:
                return False
            runs.append(best.new_run_id)
            if runs[-1] == chain.runs[-1]:
                chain.runs = runs
                return True
        return False

    def _resume(self, chain: Chain, ledger: Ledger, record: InputRecord) -> None:
        """Take up a chain the state file holds: follow its last run, or finish what was begun."""
        links = ledger.chain(chain.runs[0])
        chain.runs = [link.run_id for link in links]
        if len(links) == 1 and self._fed_back(chain, record):
            return  # a line fed back knows more of this chain than the state file
        if len(links) > 1:
            chain.etag = links[-2].round_etag
        last = links[-1]
        if last.final is not None:
            view = RunView(
                id=last.run_id, status_raw=last.raw, final=_final(last.final), errors=last.errors
            )
            chain.ended = Ended(last.run_id, view)
        if last.round_state is not None and not last.sendable:
            # A further round was sent and may have landed, or was refused: nothing to redo.
            doubt = last.round_doubt or last.round_state in DONE_OUTCOMES
            chain.next_round = "in_doubt" if last.round_doubt else last.round_state
            chain.next_doubt = doubt
            chain.next_error = _ROUND_IN_DOUBT if doubt else _ROUND_REFUSED
        elif last.final is None:
            self._follow(chain)
            return
        elif last.final == "failed" and len(chain.runs) < self._rounds:
            self._send_round(chain, 0.0)  # it failed before this invocation: no wait
            return
        self._adopt_conclusion(chain)

    def round_done(
        self,
        flight: Flight,
        outcome: str,
        new_run_id: str | None,
        etag: str | None,
        error: ErrorInfo | None,
    ) -> RunResult | None:
        """Take in a further round's verdict; return the chain's line when it is over."""
        chain = flight.chain
        assert chain is not None
        if outcome in DONE_OUTCOMES and new_run_id is not None:
            self._stats.rounds += 1
            chain.runs.append(new_run_id)
            chain.etag = etag
            chain.ended = None
            chain.since_ms = int((flight.first_wall - self._skew) * 1000)
            self._follow(chain)
            return None
        chain.next_round = outcome
        chain.next_error = error
        # A round whose request may have landed (in doubt, or re-triggered with no run named):
        # the chain may go on without us knowing its new run.
        chain.next_doubt = outcome == "in_doubt" or outcome in DONE_OUTCOMES
        return self.conclude(chain)

    def conclude(self, chain: Chain) -> RunResult:
        """Count how ``chain`` ended and return its results line."""
        self._stats.finals[chain.final_status] += 1
        self._stats.follow_lookups = self.follower.stats.requests
        return chain.results_line()

    def stop(self, *, follow_on: bool = False) -> None:
        """Send no further round (a stop of the batch); stop following too unless ``follow_on``.

        Called again by a later stop (a signal after --max-retriggers): following ends then.
        """
        self._stopping = True
        if not follow_on and not self._following_stopped:
            self._following_stopped = True
            self.follower.stop()

    async def run(self) -> None:
        """Follow until every chain is over; look-ups refused (credentials…) halt the batch."""
        await self.follower.run()
        reason = self.follower.halt_reason
        if reason is not None:
            self._control.stop(f"following new runs stopped: {reason}")

    def close(self) -> None:
        """Say that no record will come any more: the follower ends once every run has ended."""
        self.follower.close()

    def _follow(self, chain: Chain) -> None:
        last = chain.runs[-1]
        if last in self._chains:
            # Two records' chains reached one run (a line fed back beside another): one chain
            # follows it and may send its round; the other says whose line it is.
            self._unsent(chain, ROUND_ANOTHERS)
            return
        if not self._following:
            self._dispatch.keep()
        self._following += 1
        self._chains[last] = chain
        future = self.follower.add(chain.runs[-1], since_ms=chain.since_ms)
        future.add_done_callback(functools.partial(self._ended, chain))

    def _ended(self, chain: Chain, future: asyncio.Future[Ended]) -> None:
        """The last run of ``chain`` ended: send a further round, or have its line written."""
        try:
            self._next(chain, future.result())
        finally:
            # Whatever became of it, the chain no longer holds the workers back.
            self._release()

    def _next(self, chain: Chain, ended: Ended) -> None:
        """Send a further round for ``chain``, whose last run ended so, or have its line written."""
        chain.ended = ended
        self._chains.pop(chain.runs[-1], None)
        view = ended.view
        if self._ledger is not None and view is not None and view.final is not None:
            try:
                self._ledger.ended(view.id, view.final, view.status_raw, view.errors)
            except StateError as exc:
                self._control.stop(str(exc), hard=True)
        if ended.final_status == "failed" and len(chain.runs) < self._rounds:
            if self._stopping:
                chain.next_round = "not_attempted"
            else:
                self._send_round(chain, self._delay * (1.0 + _JITTER * self._rng.random()))
                return
        self._adopt_conclusion(chain)

    def _send_round(self, chain: Chain, delay: float) -> None:
        """Have a worker re-trigger the last run of ``chain`` after ``delay`` seconds."""
        run_id = chain.runs[-1]
        line = chain.line
        verdict = ROUND_SEND
        if self._ledger is not None:
            try:
                number = len(chain.runs) + 1
                verdict = self._ledger.add_round(
                    run_id, origin=line.run_id, number=number, source=line.source, line=line.line
                )
            except StateError as exc:
                self._control.stop(str(exc), hard=True)
                verdict = ROUND_MAY_HAVE_LANDED
        elif self._triage is not None and not self._triage.claim_round(run_id):
            verdict = ROUND_ANOTHERS
        if verdict == ROUND_SEND and self._triage is not None:
            # A line fed back says the run was re-triggered already, or may have been.
            best = self._triage.evidence_of(run_id)
            if best is not None and best.outcome in DONE_OUTCOMES:
                verdict = ROUND_ANOTHERS
            elif best is not None and best.outcome == "in_doubt":
                verdict = ROUND_MAY_HAVE_LANDED
        if verdict != ROUND_SEND:
            self._unsent(chain, verdict)
            return
        record = InputRecord(line.source, line.line, run_id, run_id)
        at = asyncio.get_running_loop().time() + delay
        self._dispatch.adopt(Flight(record, chain=chain), at)

    def _unsent(self, chain: Chain, verdict: str) -> None:
        """End ``chain`` with its further round not sent, and have its line written: the run
        is another line's (``ROUND_ANOTHERS``), or a request for it may have landed."""
        doubt = verdict == ROUND_MAY_HAVE_LANDED
        chain.next_round, chain.next_doubt = verdict, doubt
        chain.next_error = _ROUND_IN_DOUBT if doubt else _ANOTHERS
        self._adopt_conclusion(chain)

    def _adopt_conclusion(self, chain: Chain) -> None:
        line = chain.line
        record = InputRecord(line.source, line.line, line.run_id, line.run_id)
        at = asyncio.get_running_loop().time()
        self._dispatch.adopt(Flight(record, chain=chain, concluding=True), at)

    def _release(self) -> None:
        self._following -= 1
        if not self._following:
            self._dispatch.release()


def _final(word: str) -> Final | None:
    """Read a final status the state file holds (None for a word this version does not know)."""
    for final in _FINALS:
        if word == final:
            return final
    return None
