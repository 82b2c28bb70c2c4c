"""The runs a listing leaves out because they were re-triggered already: :class:`DoneRuns`.

Two sources say so. Results files of earlier batches (``list-failed --exclude FILE``): a run is
done when the best evidence of its lines (:class:`~bulkretry._io.evidence.Evidence`, which
ranks them as ``run`` does) is ``retriggered`` or ``already_retriggered``, a ``skipped`` line
standing for its ``prior_outcome``. A state file (``--state PATH``), opened read-only: a run is
done when it is recorded ``retriggered`` or ``already_retriggered``. A run left ``in_doubt``
stays listed: ``run`` holds it back when given the same evidence.

A state file that does not exist yet, or that no batch has written to, excludes nothing: in
``list-failed --state b.db | run --state b.db`` the batch creates it while the listing starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .._io.evidence import Evidence
from .._io.source import RecordReader, RunIdValidator, check_input_paths
from .._ledger import schema
from .._ledger.ledger import Ledger
from .._model import DONE_OUTCOMES

__all__ = ["FROM_RESULTS", "FROM_STATE", "DoneRuns"]

#: Why a run is left out: a results file says it was re-triggered.
FROM_RESULTS = "results"
#: Why a run is left out: the state file records it re-triggered.
FROM_STATE = "state"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _key(run_id: str) -> bytes | str:
    """Return the 16 bytes of a UUID in any case, else the ID itself: what IDs are compared by."""
    if _UUID.fullmatch(run_id):
        return bytes.fromhex(run_id.replace("-", ""))
    return run_id


class DoneRuns:
    """Runs known to be re-triggered already, and which source says so.

    ``results_lines`` and ``state_runs`` count what was read: results lines, and runs the state
    file records re-triggered; ``state_missing`` says the state file did not exist (or was empty).
    """

    __slots__ = ("_evidence", "_state", "results_lines", "sources", "state_missing", "state_runs")

    def __init__(self) -> None:
        self._evidence = Evidence()
        self._state: set[bytes | str] = set()
        self.sources: tuple[str, ...] = ()
        self.results_lines = 0
        self.state_runs = 0
        self.state_missing = False

    def __repr__(self) -> str:
        return (
            f"DoneRuns(results_lines={self.results_lines}, state_runs={self.state_runs}, "
            f"sources={list(self.sources)!r})"
        )

    def __bool__(self) -> bool:
        return bool(len(self._evidence) or self._state)

    @classmethod
    def load(cls, results: Sequence[str] = (), state: str | None = None) -> DoneRuns:
        """Read every results file whole and the state file's re-triggered runs.

        Raise :class:`~bulkretry._exceptions.InputError` for a results file that cannot be
        read, :class:`~bulkretry._exceptions.StateError` for a state file that is not a usable
        ledger.
        """
        done = cls()
        done.sources = (*results, *((state,) if state is not None else ()))
        if results:
            done.add_results(results)
        if state is not None:
            done.add_state(state)
        return done

    def add_results(self, paths: Sequence[str]) -> None:
        """Take every results line of ``paths`` (``-`` is stdin) into account."""
        check_input_paths(paths)
        reader = RecordReader(paths, RunIdValidator(), json_only=True)
        for record in reader:
            if record.prior is not None:
                self.results_lines += 1
                self._evidence.add(record)

    def add_state(self, path: str) -> None:
        """Take the runs the state file at ``path`` records re-triggered, read-only."""
        if not schema.inspect_file(path, None):
            self.state_missing = True
            return
        with Ledger.inspect(path) as ledger:
            self.add_ids(run_id for state in sorted(DONE_OUTCOMES) for run_id in ledger.list(state))

    def add_ids(self, run_ids: Iterable[str]) -> None:
        """Record ``run_ids`` as re-triggered by the state file's word."""
        before = len(self._state)
        self._state.update(_key(run_id) for run_id in run_ids)
        self.state_runs += len(self._state) - before

    def reason(self, run_id: str) -> str | None:
        """Return why ``run_id`` is done (:data:`FROM_STATE`, :data:`FROM_RESULTS`), or None."""
        if self._state and _key(run_id) in self._state:
            return FROM_STATE
        best = self._evidence.best(run_id.lower() if _UUID.fullmatch(run_id) else run_id)
        if best is not None and best.outcome in DONE_OUTCOMES:
            return FROM_RESULTS
        return None
