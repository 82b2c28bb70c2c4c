"""What check --state reads of a batch's runs in doubt, what it records, and what a resume does."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT, as_format

from bulkretry._exceptions import StateError
from bulkretry._ledger import schema
from bulkretry._ledger.ledger import BatchIdentity, Ledger, PriorState
from bulkretry._ledger.resolutions import CheckLedger, Resolution, claimed_runs, doubt_rows

LOST = {
    **DONE,
    "new_run_id": None,
    "etag": None,
    "ambiguous": 1,
    "http_status": 502,
    "error": {"kind": "http", "message": "HTTP 502"},
}
NOT_PROCESSED = {"kind": "not_processed", "message": "a look-up found no new run"}


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.db")


async def batch(path: str) -> None:
    """A closed batch: one run re-triggered, two in doubt after a lost answer, one fed back in
    doubt (never sent), one pending."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((run, "in.txt", i) for i, run in enumerate(("done", "lost", "also"), 1))
        ledger.admit("fed", "in.txt", 4)
        ledger.ambiguous("fed")  # a results line fed back said in_doubt
        ledger.admit("waiting", "in.txt", 5)
        for run in ("done", "lost", "also"):
            await ledger.intent(run)
        ledger.outcome("done", "retriggered", **DONE)
        ledger.outcome("lost", "in_doubt", **LOST, lost_at=time.time())
        ledger.outcome("also", "in_doubt", **LOST, lost_at=time.time())
        ledger.outcome("fed", "in_doubt", **{**LOST, "attempts": 0, "ambiguous": 0}, fed=True)


def rows(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class Clock:
    """``time.time`` for the ledger: set by hand, so windows have exact bounds."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(100.0)
    monkeypatch.setattr(time, "time", clock)
    return clock


async def send(ledger: Ledger, clock: Clock, run_id: str, *, at: float) -> None:
    """The intent of a request for ``run_id`` that leaves at ``at``."""
    clock.now = at
    await ledger.intent(run_id)


def windows(path: str, grace: float = 30.0) -> dict[str, tuple[float | None, float | None]]:
    with CheckLedger.open(path, IDENT) as ledger:
        return {row.run_id: (row.since, row.until) for row in ledger.doubts(in_flight_grace=grace)}


async def test_a_lost_answer_s_window_runs_from_its_request_to_its_loss(
    path: str, clock: Clock
) -> None:
    """Not from the start of the batch: two runs sent a minute apart have windows apart, so
    a look-up can tell their new runs apart."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("a", "in.txt", 1), ("b", "in.txt", 2)])
        for run, sent in (("a", 200.0), ("b", 260.0)):
            await send(ledger, clock, run, at=sent)
            clock.now = sent + 5
            ledger.outcome(run, "in_doubt", **LOST, lost_at=clock.now)
    assert windows(path) == {"a": (200.0, 205.0), "b": (260.0, 265.0)}


async def test_a_window_ends_when_the_answer_was_lost_not_when_a_look_up_gave_up(
    path: str, clock: Clock
) -> None:
    """A flight looked up after its check delay ends in doubt later than its answer was lost:
    new runs of the flow created in between are not this run's."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await send(ledger, clock, "a", at=200.0)
        clock.now = 240.0
        ledger.outcome("a", "in_doubt", **LOST, lost_at=201.5)
    assert windows(path) == {"a": (200.0, 201.5)}


async def test_a_window_spans_every_request_of_the_run_that_may_have_landed(
    path: str, clock: Clock
) -> None:
    """Lost, then retried and refused cleanly: from the first request to the answer lost (the
    clean refusal says nothing of when the lost one landed)."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await send(ledger, clock, "a", at=200.0)
        clock.now = 202.0
        ledger.ambiguous("a")
        await send(ledger, clock, "a", at=210.0)
        clock.now = 211.0
        ledger.outcome("a", "failed", **{**LOST, "attempts": 2, "http_status": 400}, lost_at=202.0)
    assert rows(path, "SELECT state FROM runs") == [("in_doubt",)]
    assert windows(path) == {"a": (200.0, 202.0)}


async def test_a_doubt_a_look_up_cleared_leaves_no_trace_in_the_next_window(
    path: str, clock: Clock
) -> None:
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await send(ledger, clock, "a", at=200.0)
        ledger.ambiguous("a")
        clock.now = 205.0
        ledger.clear_doubt("a")
        await send(ledger, clock, "a", at=210.0)
        clock.now = 215.0
        ledger.outcome("a", "in_doubt", **{**LOST, "attempts": 2}, lost_at=clock.now)
    assert windows(path) == {"a": (210.0, 215.0)}


async def test_a_run_in_flight_when_its_process_died_may_land_a_timeout_after_its_request(
    path: str, clock: Clock
) -> None:
    """Whether check comes before the next open or after its sweep (which writes later):
    from its first request that may have landed to the last one plus the grace."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("a", "in.txt", 1), ("b", "in.txt", 2)])
        await send(ledger, clock, "a", at=200.0)
        await ledger.intent("b")
        clock.now = 202.0
        ledger.ambiguous("b")  # lost, then retried: killed with the retry on the wire
        await send(ledger, clock, "b", at=210.0)
        ledger.close()  # what a kill -9 leaves: intents, no answer
    assert rows(path, "SELECT state FROM runs ORDER BY seq") == [("in_flight",)] * 2
    expected = {"a": (200.0, 230.0), "b": (200.0, 240.0)}
    assert windows(path) == expected
    clock.now = 5000.0
    Ledger.open(path, IDENT).close()  # the next batch sweeps them into doubt
    assert rows(path, "SELECT state FROM runs ORDER BY seq") == [("in_doubt",)] * 2
    assert windows(path) == expected


async def test_a_doubt_that_came_with_the_input_has_no_window_even_once_sent_again(
    path: str, clock: Clock
) -> None:
    """Its earlier request may have landed at any time: no span of this batch's covers it."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("staged", "in.txt", 1), ("known", "in.txt", 2)])
        ledger.ambiguous("staged")  # fed back in doubt before its row was written
        await send(ledger, clock, "known", at=200.0)
        ledger.outcome("known", "failed", **{**LOST, "ambiguous": 0, "http_status": 400})
    with Ledger.open(path, IDENT) as ledger:  # a later pass feeds "known" back in doubt
        assert ledger.admit("known", "in.txt", 1).state is PriorState.PENDING
        ledger.ambiguous("known", fed=True)
        for run in ("staged", "known"):  # --retry-in-doubt: sent again, and lost
            await send(ledger, clock, run, at=300.0)
            clock.now = 301.0
            ledger.outcome(run, "in_doubt", **LOST, lost_at=clock.now)
    assert windows(path) == {"staged": (None, None), "known": (None, None)}


async def test_a_doubt_held_from_the_input_has_no_window_even_once_sent_again_by_bare_id(
    path: str, clock: Clock
) -> None:
    """A results line in doubt held by one pass (no request), the run named again by a bare ID
    and sent with --retry-in-doubt by the next: the first doubt is still of any time. Also so
    for a run whose own span was known when the input's doubt came."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("held", "in.txt", 1), ("spanned", "in.txt", 2)])
        await send(ledger, clock, "spanned", at=200.0)
        ledger.outcome("spanned", "in_doubt", **LOST, lost_at=clock.now)
        await ledger.flush()
    held = {**LOST, "attempts": 0, "ambiguous": 0, "http_status": None}
    with Ledger.open(path, IDENT) as ledger:  # results fed back: both held in doubt
        for run in ("held", "spanned"):
            ledger.admit(run, "r.jsonl", 1)
            ledger.outcome(run, "in_doubt", **held, fed=True)
    assert windows(path) == {"held": (None, None), "spanned": (None, None)}
    with Ledger.open(path, IDENT) as ledger:  # bare IDs, --retry-in-doubt: sent, lost again
        for run in ("held", "spanned"):
            ledger.admit(run, "ids.txt", 1)
            await send(ledger, clock, run, at=300.0)
            ledger.ambiguous(run)
            clock.now = 301.0
            ledger.outcome(run, "in_doubt", **{**LOST, "ambiguous": 2}, lost_at=clock.now)
    assert windows(path) == {"held": (None, None), "spanned": (None, None)}


async def test_a_verdict_clears_the_window_and_the_next_request_starts_its_own(
    path: str, clock: Clock
) -> None:
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await send(ledger, clock, "a", at=200.0)
        ledger.outcome("a", "in_doubt", **LOST, lost_at=clock.now)
    with CheckLedger.open(path, IDENT) as ledger:
        ledger.record([Resolution("a", "not_attempted", None, None, NOT_PROCESSED)])
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("a", "in.txt", 1).state is PriorState.PENDING
        await send(ledger, clock, "a", at=400.0)
        clock.now = 402.0
        ledger.outcome("a", "in_doubt", **LOST, lost_at=clock.now)
    assert windows(path) == {"a": (400.0, 402.0)}


async def test_a_format_3_file_s_runs_in_doubt_have_no_window_once_upgraded(
    path: str, clock: Clock
) -> None:
    """Upgraded in place by check: such a file cannot tell a doubt fed in (then sent again) from
    its own, so none of its doubts is trusted with a window; a run in flight there was sent at
    its last write, and may land until a timeout after."""
    await batch(path)
    clock.now = 500.0
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("flying", "in.txt", 6)
        await send(ledger, clock, "flying", at=600.0)
        clock.now = 700.0
    as_format(path, 3)
    got = windows(path)
    assert got == {"lost": (None, None), "also": (None, None), "fed": (None, None),
                   "flying": (600.0, 630.0)}  # fmt: skip
    assert rows(path, "PRAGMA user_version") == [(schema.FORMAT_VERSION,)]


async def test_a_run_in_doubt_comes_with_what_its_lost_answer_said(path: str) -> None:
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        doubts = {row.run_id: row for row in ledger.doubts(in_flight_grace=30.0)}
    assert sorted(doubts) == ["also", "fed", "lost"]
    lost = doubts["lost"]
    assert (lost.attempts, lost.ambiguous, lost.http_status) == (1, 1, 502)
    assert lost.since is not None
    assert lost.until is not None
    assert lost.since <= lost.until <= lost.updated_at
    assert lost.error == {"kind": "http", "message": "HTTP 502"}
    # Fed back in doubt and never sent by this batch: the state file knows no window.
    assert (doubts["fed"].since, doubts["fed"].until) == (None, None)


async def test_new_runs_of_re_triggered_runs_are_claimed_and_candidates_only_softly(
    path: str,
) -> None:
    """A clear answer's run is claimed; a candidate of a resolved run may be anybody's."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        error = {"kind": "ambiguous_match", "message": "…", "candidates": ["c-1", "c-2"]}
        ledger.record([Resolution("lost", "retriggered", None, None, error)])
        hard, soft = ledger.claimed({"new-1", "c-1", "c-9"})
    assert (hard, soft) == ({"new-1"}, {"c-1"})


async def test_a_new_run_a_look_up_gave_a_run_is_claimed_only_softly(path: str) -> None:
    """check's own verdict (or a live look-up's) may be wrong: a second check must not take
    the new run it named as proof that another run's window is empty."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        ledger.record([Resolution("lost", "retriggered", "found-1", '"e"', None)])
        hard, soft = ledger.claimed({"new-1", "found-1"})
    assert (hard, soft) == ({"new-1"}, {"found-1"})


async def test_a_request_never_answered_may_land_a_timeout_after_it_whatever_comes_later(
    path: str, clock: Clock
) -> None:
    """Killed with it on the wire, swept, then sent again and refused cleanly: the window still
    reaches a timeout past the killed request. So for one a stop cut off on the wire."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("killed", "in.txt", 1), ("cut", "in.txt", 2)])
        await send(ledger, clock, "killed", at=200.0)
        await send(ledger, clock, "cut", at=201.0)
        clock.now = 203.0
        ledger.outcome("cut", "in_doubt", **{**LOST, "http_status": None}, cut_off=True)
        ledger.close()  # kill -9: "killed" is left in flight
    clock.now = 205.0
    with Ledger.open(path, IDENT) as ledger:  # swept; sent again, refused cleanly (400)
        ledger.admit("killed", "in.txt", 1)
        await send(ledger, clock, "killed", at=206.0)
        clock.now = 206.5
        refused = {**LOST, "ambiguous": 1, "http_status": 400}  # its doubt carried, not new
        ledger.outcome("killed", "failed", **refused)
    assert windows(path) == {"killed": (200.0, 230.0), "cut": (201.0, 231.0)}


async def test_a_run_s_own_span_survives_a_hold_that_sent_nothing(path: str, clock: Clock) -> None:
    """Queued for --retry-in-doubt, then a stop before its request: held, not fed in."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await send(ledger, clock, "a", at=200.0)
        clock.now = 201.0
        ledger.outcome("a", "in_doubt", **LOST, lost_at=201.0)
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        clock.now = 300.0
        ledger.outcome("a", "in_doubt", **{**LOST, "attempts": 0, "ambiguous": 1})
    assert windows(path) == {"a": (200.0, 201.0)}


async def test_a_verdict_is_recorded_only_for_a_run_still_in_doubt(path: str) -> None:
    """retriggered clears the doubt with its new run; a run no longer in doubt is untouched."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        changed = ledger.record(
            [
                Resolution("lost", "retriggered", "new-2", '"e2"', None),
                Resolution("also", "not_attempted", None, None, NOT_PROCESSED),
                Resolution("done", "not_attempted", None, None, NOT_PROCESSED),
            ]
        )
    assert changed == 2
    state = {r[0]: r[1:] for r in rows(path, "SELECT run_id, state, doubt, new_run_id FROM runs")}
    assert state["lost"] == ("retriggered", 0, "new-2")
    assert state["also"] == ("not_attempted", 0, None)
    assert state["done"] == ("retriggered", 0, "new-1")


async def test_a_resume_sends_a_run_not_processed_and_never_one_found_re_triggered(
    path: str,
) -> None:
    """What the next run --state sees: the first pending (queued with no doubt), the other done."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        ledger.record(
            [
                Resolution("lost", "retriggered", "new-2", '"e2"', None),
                Resolution("also", "not_attempted", None, None, NOT_PROCESSED),
            ]
        )
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("also", "in.txt", 3).state is PriorState.PENDING
        found = ledger.admit("lost", "in.txt", 2)
        assert (found.state, found.new_run_id) == (PriorState.RETRIGGERED, "new-2")
    with Ledger.open(path, IDENT) as ledger:  # --resume: no input, the state file's runs
        ledger.enqueue_unfinished(path)
        await ledger.flush()
        waiting = {run: doubt for *_, run, _, _, doubt in ledger.waiting(0, 0)}
    assert waiting == {"also": 0, "fed": 1, "waiting": 0}


async def test_check_counts_no_invocation_and_lets_the_next_batch_open_the_file(
    path: str,
) -> None:
    await batch(path)
    before = rows(path, "SELECT value FROM meta WHERE key = 'invocations'")
    with CheckLedger.open(path, IDENT) as ledger:
        ledger.doubts(in_flight_grace=1.0)
    assert rows(path, "SELECT value FROM meta WHERE key = 'invocations'") == before
    Ledger.open(path, IDENT).close()


async def test_a_state_file_a_running_batch_holds_is_refused(path: str) -> None:
    """A live batch may still write its runs' outcomes: check waits for it to end."""
    await batch(path)
    with Ledger.open(path, IDENT), pytest.raises(StateError, match="in use by a running batch"):
        CheckLedger.open(path, IDENT)


async def test_a_state_file_of_another_batch_is_refused_and_left_untouched(path: str) -> None:
    await batch(path)
    other = BatchIdentity(
        base_url=IDENT.base_url, org_id="X@AdobeOrg", sandbox="dev", op="re-trigger"
    )
    with pytest.raises(StateError, match="belongs to another batch"):
        CheckLedger.open(path, other)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"", "is empty"), (b"run ids\n", "not a bulkretry state file")],
)
def test_a_missing_empty_or_foreign_file_is_refused(
    path: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        Path(path).write_bytes(content)
    with pytest.raises(StateError, match=message):
        CheckLedger.open(path, IDENT)
    assert not Path(path).exists() or Path(path).read_bytes() == content


def test_doubt_rows_reads_through_any_connection(tmp_path: Path) -> None:
    """The functions take a plain connection: a batch without runs in doubt yields none."""
    path = str(tmp_path / "empty.db")
    Ledger.open(path, IDENT).close()
    conn = sqlite3.connect(path)
    try:
        assert list(doubt_rows(conn, in_flight_grace=1.0)) == []
        assert claimed_runs(conn, {"x"}) == (set(), set())
    finally:
        conn.close()


async def test_a_further_round_left_in_doubt_is_checked_like_any_run(path: str) -> None:
    """run --follow admits a round's run below every input's seq: it is a run in doubt too."""
    await batch(path)
    rows(
        path,
        "INSERT INTO runs (seq, run_id, source, line, state, seen, attempts, ambiguous, doubt, "
        "updated_at, sent_at, doubt_from, doubt_to) "
        "VALUES (-1, 'round', 'in.txt', 1, 'in_doubt', 1, 1, 1, 1, 9, 8, 8, 9)",
    )
    with CheckLedger.open(path, IDENT) as ledger:
        (row,) = [row for row in ledger.doubts(in_flight_grace=1.0) if row.run_id == "round"]
        assert row.since is not None
        ledger.record([Resolution("round", "retriggered", "new-3", None, None)])
    assert rows(path, "SELECT state, doubt FROM runs WHERE run_id = 'round'") == [
        ("retriggered", 0)
    ]


async def test_a_run_of_the_batch_s_own_input_is_claimed_only_softly(path: str) -> None:
    """A listed run the batch itself recovers is no proof of anybody's re-trigger."""
    await batch(path)
    with CheckLedger.open(path, IDENT) as ledger:
        hard, soft = ledger.claimed({"new-1", "waiting", "elsewhere"})
    assert (hard, soft) == ({"new-1"}, {"waiting"})
