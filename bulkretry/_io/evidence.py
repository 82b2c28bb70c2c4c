"""Merge what every results line says about a run: the most advanced evidence wins.

Results of several passes fed back together may say different things about one run. Each
line's prior outcome has a :func:`rank`, and a later line wins among equals:

=============================================================  ====
line                                                           rank
=============================================================  ====
a bare ID; ``not_attempted``, ``would_retrigger``, ``skipped``   0
(and any other outcome)
``failed``                                                       2
``in_doubt``                                                     4
any line below ``retriggered`` with a ``resolved_by``:           5
a look-up's verdict, which beats the doubt it resolves
``retriggered``, ``already_retriggered``                         6
the same, with a ``resolved_by``                                 7
=============================================================  ====

Ranks 4 and 5 are ordered by when their doubt arose first (:func:`order`, one total order for
every input): a verdict settles the doubts up to its line's ``finished_at``, and an ``in_doubt``
line its own pass sent later (the run sent again after a ``not_processed`` verdict, its answer
lost again) beats it (:mod:`.doubts`).

:class:`Evidence` keeps the best line of each run whose best is ``failed`` or above (rank 0
says nothing a bare ID does not), keyed by the 16 bytes of a lower-case UUID, else by the ID.
A bare ``failed`` or ``in_doubt`` costs its key and no more (one shared value per outcome); a
``retriggered`` line whose new run ID and etag are UUIDs, as Flow Service writes them, is packed
into 33 bytes (about 160 bytes a run in all, against 400 for the strings and a tuple).
:func:`prescan` fills one from every regular input file before the first request, so that a
``retriggered`` line anywhere in them holds back each line of its run, wherever it stands.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Sequence
from typing import IO, NamedTuple

from .._model import ROUND_LANDED
from .source import MAX_LINE_BYTES, STDIN, InputRecord, RecordReader, RunIdValidator

__all__ = [
    "DONE_RANK",
    "FAILED_RANK",
    "IN_DOUBT_RANK",
    "RESOLVED_RANK",
    "Evidence",
    "Prior",
    "order",
    "prescan",
    "rank",
]

FAILED_RANK = 2
IN_DOUBT_RANK = 4
RESOLVED_RANK = 5
DONE_RANK = 6

_LEVELS: dict[str | None, int] = {
    "failed": FAILED_RANK,
    "in_doubt": IN_DOUBT_RANK,
    "retriggered": DONE_RANK,
    "already_retriggered": DONE_RANK,
}
# Only the canonical form is packed: any other spelling could make different strings collide.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def rank(outcome: str | None, resolved_by: str | None = None) -> int:
    """Return how far a line with this prior ``outcome`` says its run went (see the table)."""
    level = _LEVELS.get(outcome, 0)
    if resolved_by is None:
        return level
    return DONE_RANK + 1 if level == DONE_RANK else RESOLVED_RANK


# The time of a line whose doubt has none: before every other.
_NO_TIME = -(1 << 62)


def order(ranked: int, at: int | None = None) -> tuple[int, int, int]:
    """Return a line's place in the merge from its :func:`rank` and when its doubt arose (*at*,
    epoch ms): by rank, but a verdict and an ``in_doubt`` line by time first."""
    if ranked in (IN_DOUBT_RANK, RESOLVED_RANK):
        return IN_DOUBT_RANK, _NO_TIME if at is None else at, ranked
    return ranked, _NO_TIME, 0


class Prior(NamedTuple):
    """What the winning line of a run says: its outcome, the new run it names, who resolved it,
    and when the doubt it settles or raises arose (epoch ms)."""

    outcome: str
    new_run_id: str | None = None
    etag: str | None = None
    resolved_by: str | None = None
    at: int | None = None


# Most kept lines are a bare outcome: they share one object each instead of a tuple apiece.
_BARE = {outcome: Prior(outcome) for outcome in _LEVELS if outcome is not None}
#: A packed done line starts with the index of its outcome here.
_PACKED_OUTCOMES = ("retriggered", "already_retriggered")
_PACKED_CODES = {outcome: bytes([i]) for i, outcome in enumerate(_PACKED_OUTCOMES)}
_QUOTED_UUID_CHARS = 38


def _key(run_id: str) -> bytes | str:
    if _CANONICAL_UUID.fullmatch(run_id):
        return bytes.fromhex(run_id.replace("-", ""))
    return run_id


def _kept(outcome: str, new_run_id: str | None, etag: str | None) -> Prior | bytes:
    """Return what to keep of a line without ``resolved_by``: the smallest exact form."""
    if new_run_id is None and etag is None:
        return _BARE[outcome]
    code = _PACKED_CODES.get(outcome)
    if (
        code is not None
        and new_run_id is not None
        and etag is not None
        and _CANONICAL_UUID.fullmatch(new_run_id)
        and len(etag) == _QUOTED_UUID_CHARS
        and etag[0] == etag[-1] == '"'
        and _CANONICAL_UUID.fullmatch(etag, 1, _QUOTED_UUID_CHARS - 1)
    ):
        return (
            code
            + bytes.fromhex(new_run_id.replace("-", ""))
            + bytes.fromhex(etag[1:-1].replace("-", ""))
        )
    return Prior(outcome, new_run_id, etag)


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _unpacked(packed: bytes) -> Prior:
    return Prior(_PACKED_OUTCOMES[packed[0]], _uuid(packed[1:17]), '"' + _uuid(packed[17:33]) + '"')


def _order_of(kept: Prior | bytes) -> tuple[int, int, int]:
    if isinstance(kept, bytes):
        return order(DONE_RANK)
    return order(rank(kept.outcome, kept.resolved_by), kept.at)


class Evidence:
    """The best prior of each run that has one worth keeping (``failed`` or above).

    ``sources`` are the inputs read whole into it (by :func:`prescan`): each of their lines is
    in it already. ``records`` and ``results_lines`` count what the pre-scan read: input
    records, and those that are results lines (JSON lines with an outcome).
    """

    __slots__ = ("_best", "records", "results_lines", "sources")

    def __init__(self, *, sources: Iterable[str] = ()) -> None:
        self._best: dict[bytes | str, Prior | bytes] = {}
        self.sources = frozenset(sources)
        self.records = 0
        self.results_lines = 0

    def __repr__(self) -> str:
        return (
            f"Evidence(runs={len(self._best)}, records={self.records}, "
            f"results_lines={self.results_lines}, sources={sorted(self.sources)!r})"
        )

    def __len__(self) -> int:
        return len(self._best)

    def add(self, record: InputRecord) -> bool:
        """Take ``record``'s line into account; True when it is now the best of its run."""
        run_id = record.run_id
        outcome = record.prior
        if run_id is None or outcome is None:
            return False
        resolved_by = record.prior_resolved_by
        ranked = rank(outcome, resolved_by)
        if ranked < FAILED_RANK:
            return False
        key = _key(run_id)
        best = self._best
        old = best.get(key)
        at = record.prior_at
        chain = record.prior_chain
        if len(chain) > 1 or record.prior_next_round is not None:
            # What the chain says of its runs holds even when a better line of this run wins.
            self._add_chain(chain, record.prior_next_round, at)
        if old is not None and _order_of(old) > order(ranked, at):
            return False
        new_run_id, etag = record.prior_new_run_id, record.prior_etag
        if resolved_by is None and at is None:
            best[key] = _kept(outcome, new_run_id, etag)
        else:
            best[key] = Prior(outcome, new_run_id, etag, resolved_by, at)
        return True

    def _add_chain(self, chain: tuple[str, ...], next_round: str | None, at: int | None) -> None:
        """A ``run --follow`` line: each run of its chain but the last was re-triggered into
        the next; the last is in doubt when its further round may have landed (in doubt, or
        re-triggered with no run named)."""
        best = self._best
        steps: list[tuple[str, str, str | None]] = [
            (run, "retriggered", new) for run, new in itertools.pairwise(chain)
        ]
        if next_round in ROUND_LANDED and chain:
            steps.append((chain[-1], "in_doubt", None))
        for run_id, outcome, new_run_id in steps:
            key = _key(run_id)
            old = best.get(key)
            # The further round left in doubt was sent by the line's pass: its doubt has the
            # line's time (a verdict from before it does not settle it).
            when = at if outcome == "in_doubt" else None
            if old is None or _order_of(old) < order(rank(outcome), when):
                best[key] = (
                    _kept(outcome, new_run_id, None) if when is None else Prior(outcome, at=when)
                )

    def best(self, run_id: str) -> Prior | None:
        """Return the winning prior of ``run_id``, or None when no line says more than its ID."""
        kept = self._best.get(_key(run_id))
        return _unpacked(kept) if isinstance(kept, bytes) else kept


def prescan(
    paths: Sequence[str],
    validator: RunIdValidator,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    stdin: IO[bytes] | None = None,
) -> Evidence:
    """Read every regular input file once, before the first request, and keep its evidence.

    Stdin (``-``) and other pipes are left alone: reading them would consume them. Their lines
    are merged as they come, so a ``retriggered`` line there can only hold back the lines after
    it (see :attr:`Triage.late_evidence <bulkretry._triage.Triage.late_evidence>`). *stdin*,
    a copy of stdin read whole (:mod:`.spool`), is read too, and put back at its start.
    """
    # In their order: among equal lines, the later wins. Stdin is read once, where it first is.
    files = [
        path
        for index, path in enumerate(paths)
        if (path == STDIN and stdin is not None and STDIN not in paths[:index])
        or (path != STDIN and os.path.isfile(path))
    ]
    evidence = Evidence(sources=files)
    if not files:
        return evidence
    reader = RecordReader(
        files, validator, max_line_bytes=max_line_bytes, json_only=True, stdin=stdin
    )
    records = results = 0
    for record in reader:
        records += 1
        if record.prior is not None:
            results += 1
            evidence.add(record)
    evidence.records = records + reader.passed_over
    evidence.results_lines = results
    if stdin is not None:
        stdin.seek(0)
    return evidence
