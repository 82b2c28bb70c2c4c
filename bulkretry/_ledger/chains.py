"""The rounds of ``run --follow`` in the state file: further re-triggers, and how new runs ended.

A further round re-triggers a new run that failed. That run is admitted to ``runs`` like an
input run, so that the same intent, outcome and doubt rules guard its request (a kill -9 while
it is on the wire leaves it ``in_doubt``), but at a negative ``seq``: below every input's, so
that no resume reads it as input and no count of the batch's runs includes it. ``rounds`` links
it to its record; ``ends`` keeps how each followed run ended, so that a resume looks up only
the runs still going::

    rounds(run_id, origin, round)    run_id was re-triggered as round `round` of record origin
    ends(run_id, final, raw, errors) a followed run ended: success, failed or partial
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import orjson

from .._model import ROUND_ANOTHERS, ROUND_MAY_HAVE_LANDED, ROUND_SEND

__all__ = ["DDL_3", "ENDED", "Link", "add_round_sql", "chain_of"]

#: Added by format 3; run on an older file to upgrade it.
DDL_3 = """
CREATE TABLE rounds (
    run_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    round INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE ends (
    run_id TEXT PRIMARY KEY,
    final TEXT NOT NULL,
    raw TEXT,
    errors TEXT
) WITHOUT ROWID;
"""
ENDED = "INSERT OR REPLACE INTO ends (run_id, final, raw, errors) VALUES (?, ?, ?, ?)"
_ROUND_RUN = (
    "INSERT INTO runs (seq, run_id, source, line, state, seen, updated_at) "
    "VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT (run_id) DO NOTHING"
)
_ROUND = "INSERT OR IGNORE INTO rounds (run_id, origin, round) VALUES (?, ?, ?)"
_END_OF = "SELECT final, raw, errors FROM ends WHERE run_id = ?"
_ROUND_OF = (
    "SELECT r.state, r.doubt, r.new_run_id, r.etag FROM rounds k "
    "JOIN runs r ON r.run_id = k.run_id WHERE k.run_id = ?"
)
#: States of a round's run that say no request for it may have landed.
_SENDABLE = frozenset({"pending", "not_attempted", "failed"})
#: A chain longer than this is a corrupt file, not a batch's rounds.
_LONGEST = 10_000


@dataclass(frozen=True, slots=True)
class Link:
    """One new run of a chain, as the state file knows it.

    ``final``/``raw``/``errors``: how it ended, if that was recorded. ``round_state``: the
    state of the further round that re-triggered it (None: none was begun); ``round_doubt``
    says that round's request may have landed.
    """

    run_id: str
    final: str | None = None
    raw: str | None = None
    errors: tuple[tuple[str | None, str | None], ...] = ()
    round_state: str | None = None
    round_doubt: bool = False
    round_new_run_id: str | None = None
    round_etag: str | None = None

    @property
    def sendable(self) -> bool:
        """Tell whether its further round may be sent: begun, and never possibly landed."""
        return self.round_state in _SENDABLE and not self.round_doubt


def add_round_sql(
    conn: sqlite3.Connection, seq: int, run_id: str, origin: str, number: int, **row: object
) -> str:
    """Admit ``run_id`` as round ``number`` of ``origin`` at ``seq``; say whether to send it.

    ``row`` holds ``source``, ``line``, ``seen`` and ``now``. A run the file knows already is
    sent again only when it is this record's own round, begun and never possibly sent.
    """
    params = (seq, run_id, row["source"], row["line"], row["seen"], row["now"])
    if conn.execute(_ROUND_RUN, params).rowcount:
        conn.execute(_ROUND, (run_id, origin, number))
        return ROUND_SEND
    known_seq, state, doubt = conn.execute(
        "SELECT seq, state, doubt FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    mine = conn.execute("SELECT origin FROM rounds WHERE run_id = ?", (run_id,)).fetchone()
    if known_seq > 0 or mine is None or mine[0] != origin:
        return ROUND_ANOTHERS
    return ROUND_SEND if state in _SENDABLE and not doubt else ROUND_MAY_HAVE_LANDED


def chain_of(conn: sqlite3.Connection, first: str) -> list[Link]:
    """Return the chain of new runs that starts at ``first``, as far as the file knows it."""
    links: list[Link] = []
    run_id: str | None = first
    while run_id is not None and len(links) < _LONGEST:
        end = conn.execute(_END_OF, (run_id,)).fetchone()
        step = conn.execute(_ROUND_OF, (run_id,)).fetchone()
        link = Link(run_id)
        if end is not None:
            errors = tuple((c, m) for c, m in orjson.loads(end[2])) if end[2] else ()
            link = Link(run_id, end[0], end[1], errors)
        if step is not None:
            state, doubt, new_run_id, etag = step
            link = Link(
                run_id, link.final, link.raw, link.errors, state, bool(doubt), new_run_id, etag
            )
        links.append(link)
        run_id = None
        if step is not None and state in ("retriggered", "already_retriggered"):
            run_id = new_run_id
    return links
