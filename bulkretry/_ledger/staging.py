"""Hold what an input adds to a ledger in memory, and write it to the state file in large groups.

Why: a run ID is a random key of the ``runs`` table's unique index, so each insert dirties a
random leaf page of it, and each commit writes every page it dirtied to the WAL. Inserted as
they were read, with an intent's commit every few milliseconds, a million runs rewrote the index
about fifty times (6 GB of WAL for a 128 MB file) and admission took twice a dry run. Written in
groups of up to :data:`STAGE_MAX`, each leaf page is written about once per group.

What is staged is not yet in the state file: a kill -9 loses it, and the input's progress is
staged with it, so the state file never claims a line it does not hold (a resume asks for the
input again). Nothing staged can have been sent: the pager reads only rows written. A group is
committed as soon as it is written, so when the state file fails, the writes it rolls back are
exactly the ones still staged here: the caller accounts for each (:meth:`Staging.take`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from . import schema
from .commits import GroupCommit
from .records import Record

#: A run the stage lost: ``(run_id, source, line, in_doubt)``.
Lost = tuple[str, str, int, bool]

__all__ = ["STAGE_AGE", "STAGE_MAX", "Lost", "Staging", "write"]

#: Staged runs that are written at once. 32,768 keep the stage near 6 MB; 4,096 cost 1.6x
#: the admission time of a million runs, 65,536 saved a further 10% for twice the memory.
STAGE_MAX = 32_768
#: Seconds after which what is staged is written anyway, so that a slow input is in the state
#: file within about this long of being read.
STAGE_AGE = 1.0


class Staging:
    """New runs, queued runs and input progress not yet written to the state file.

    ``runs`` maps a new run to its ``(source, line, place)`` in input order, ``place`` counting
    from 1 (a dict: membership is asked for every admitted run); ``doubt`` holds the staged
    runs fed back in doubt (and the queued runs in doubt); ``queue`` the runs of earlier
    invocations to send again; ``progress`` how far each source was read; ``settled`` the
    outcome statement of each staged run whose record is written already (its evidence settled
    it): written with its row, in one transaction, and never handed back as lost.
    """

    __slots__ = ("doubt", "progress", "queue", "runs", "settled", "since")

    def __init__(self) -> None:
        self.runs: dict[str, tuple[str, int, int]] = {}
        self.doubt: set[str] = set()
        self.queue: list[Record] = []
        self.progress: dict[str, tuple[int, bool]] = {}
        self.settled: dict[str, tuple[str, tuple[Any, ...] | dict[str, Any]]] = {}
        self.since = 0.0  # monotonic time of the oldest staged entry

    def __repr__(self) -> str:
        return (
            f"Staging(runs={len(self.runs)}, queue={len(self.queue)}, sources={len(self.progress)})"
        )

    def __len__(self) -> int:
        return len(self.runs) + len(self.queue)

    def __bool__(self) -> bool:
        return bool(self.runs or self.queue or self.progress)

    def _touch(self) -> None:
        if not self:
            self.since = time.monotonic()

    def add_run(self, run_id: str, source: str, line: int) -> None:
        """Stage a run this invocation admits for the first time."""
        self._touch()
        runs = self.runs
        runs[run_id] = (source, line, len(runs) + 1)

    def drop_runs(self, count: int) -> None:
        """Unstage the last ``count`` runs staged (an admission that failed half-way)."""
        runs = self.runs
        for _ in range(count):
            run_id, _ = runs.popitem()
            self.doubt.discard(run_id)
            self.settled.pop(run_id, None)

    def add_queued(self, run_id: str, source: str, line: int) -> None:
        """Stage a run of an earlier invocation, to be sent for this input line."""
        self._touch()
        self.queue.append((run_id, source, line))

    def add_progress(self, source: str, lines: int, complete: bool) -> None:
        """Stage how far ``source`` was read."""
        self._touch()
        self.progress[source] = (lines, complete)

    def due(self) -> bool:
        """True when the stage is full or its oldest entry old enough to be written."""
        if len(self) >= STAGE_MAX:
            return True
        return bool(self) and time.monotonic() - self.since >= STAGE_AGE

    def take(self) -> list[Lost]:
        """Empty the stage; return the runs it held whose record is not written yet (new, then
        queued, in the order staged), each with whether an earlier request may have landed."""
        doubt, settled = self.doubt, self.settled
        lost: list[Lost] = [
            (run_id, s, line, run_id in doubt)
            for run_id, (s, line, _) in self.runs.items()
            if run_id not in settled
        ]
        lost += [(run_id, s, line, run_id in doubt) for run_id, s, line in self.queue]
        self.runs.clear()  # cleared, not replaced: the admitter holds this dict
        doubt.clear()
        settled.clear()
        self.queue = []
        self.progress.clear()
        return lost


def write(stage: Staging, group: GroupCommit, invocation: int) -> None:
    """Write and commit what ``stage`` holds; empty it once committed.

    Raise :class:`StateError` if that fails: the stage then still holds what was lost.
    """
    if not stage:
        return
    conn = group.begin()
    now = time.time()
    doubt = stage.doubt
    runs = stage.runs
    try:
        if runs:
            # In run ID order, each with the seq of its place in the input: the unique index
            # then takes the group leaf by leaf, and the cache size hardly matters.
            top = conn.execute("SELECT max(seq) FROM runs").fetchone()[0] or 0
            rows = (
                (top + place, run_id, source, line, invocation, now, int(run_id in doubt))
                for run_id in sorted(runs)
                for source, line, place in (runs[run_id],)
            )
            conn.executemany(schema.INSERT, rows)
        for sql, params in stage.settled.values():
            conn.execute(sql, params)
        if stage.queue:
            conn.executemany(schema.ENQUEUE, stage.queue)
        for source, (lines, complete) in stage.progress.items():
            conn.execute(schema.SOURCE, (invocation, source, lines, int(complete)))
    except sqlite3.Error as exc:
        raise group.fail("write", exc) from exc
    group.wrote(len(stage))
    group.commit()
    group.check()
    stage.take()
