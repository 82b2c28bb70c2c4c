"""Evidence: one order of evidence per run, and the pre-scan of input files."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from bulkretry._io.evidence import (
    DONE_RANK,
    FAILED_RANK,
    Evidence,
    Prior,
    order,
    prescan,
    rank,
)
from bulkretry._io.source import STDIN, InputRecord, RunIdValidator

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_2 = "5fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW_2 = "2fb0418e-1804-45d6-8d56-dd51f05c0baf"


def record(
    outcome: str | None,
    run_id: str = RUN,
    *,
    new_run_id: str | None = None,
    etag: str | None = None,
    resolved_by: str | None = None,
    line: int = 1,
    at: int | None = None,
) -> InputRecord:
    return InputRecord(
        "r.jsonl", line, run_id, "", None, outcome, new_run_id, etag, resolved_by, prior_at=at
    )


def results_line(outcome: str | None, run_id: str = RUN, **fields: object) -> bytes:
    obj: dict[str, object] = {"run_id": run_id}
    if outcome is not None:
        obj["outcome"] = outcome
    obj.update(fields)
    return orjson.dumps(obj) + b"\n"


def follow_line(**fields: object) -> bytes:
    """A run --follow line of RUN re-triggered into NEW, whose further round was lost."""
    return results_line(
        "retriggered",
        new_run_id=NEW,
        chain=[NEW],
        next_round={"outcome": "in_doubt"},
        attempts=1,
        finished_at="2026-12-05T12:30:00Z",
        **fields,
    )


def prescanned(tmp_path: Path, lines: list[bytes]) -> Evidence:
    """The evidence of one results file holding ``lines``."""
    path = tmp_path / "passes.jsonl"
    path.write_bytes(b"".join(lines))
    return prescan([str(path)], RunIdValidator())


# --- rank -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ((None, None), ("failed", None)),
        (("not_attempted", None), ("failed", None)),
        (("failed", None), ("in_doubt", None)),
        (("in_doubt", None), ("failed", "lookup")),
        (("in_doubt", None), ("not_attempted", "lookup")),
        (("failed", "lookup"), ("retriggered", None)),
        (("in_doubt", None), ("already_retriggered", None)),
        (("retriggered", None), ("retriggered", "lookup")),
    ],
)
def test_rank_orders_lines_by_how_far_they_say_the_run_went(
    lower: tuple[str | None, str | None], higher: tuple[str | None, str | None]
) -> None:
    """bare < failed < in_doubt < resolved < retriggered; resolved_by beats in_doubt."""
    assert rank(*lower) < rank(*higher)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("retriggered", "already_retriggered"),
        ("not_attempted", None),
        ("would_retrigger", "skipped"),
        ("skipped", "duplicate"),
        ("not_attempted", "some future outcome"),
    ],
)
def test_rank_treats_these_outcomes_as_equals(one: str | None, other: str | None) -> None:
    """Outcomes that say the same about a run rank the same."""
    assert rank(one) == rank(other)


# --- Evidence -------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [None, "not_attempted", "would_retrigger", "skipped"])
def test_lines_that_say_no_more_than_a_bare_id_are_not_kept(outcome: str | None) -> None:
    """Bare IDs and not_attempted-like lines carry no evidence and cost no memory."""
    evidence = Evidence()
    assert not evidence.add(record(outcome))
    assert len(evidence) == 0
    assert evidence.best(RUN) is None


def test_a_better_line_replaces_the_kept_one_and_a_worse_one_does_not() -> None:
    """The best line of a run is kept, whatever the order the lines came in."""
    evidence = Evidence()
    assert evidence.add(record("failed"))
    assert evidence.add(record("retriggered", new_run_id=NEW, etag='"e"'))
    assert not evidence.add(record("in_doubt"))
    assert evidence.best(RUN) == Prior("retriggered", NEW, '"e"', None)
    assert len(evidence) == 1


def test_a_later_line_wins_among_equals() -> None:
    """Two retriggered lines of one run: the later one's new run is kept."""
    evidence = Evidence()
    evidence.add(record("retriggered", new_run_id=NEW, line=1))
    evidence.add(record("already_retriggered", new_run_id=NEW_2, line=2))
    best = evidence.best(RUN)
    assert best is not None
    assert (best.outcome, best.new_run_id) == ("already_retriggered", NEW_2)


def test_a_resolved_line_beats_the_in_doubt_it_resolves_in_either_order() -> None:
    """A look-up's failed verdict outranks the in_doubt line, before it or after it."""
    for lines in (
        [record("in_doubt"), record("failed", resolved_by="lookup")],
        [record("failed", resolved_by="lookup"), record("in_doubt")],
    ):
        evidence = Evidence()
        for line in lines:
            evidence.add(line)
        assert evidence.best(RUN) == Prior("failed", None, None, "lookup")


def test_a_doubt_raised_after_a_verdict_beats_it_in_either_order() -> None:
    """Sent again after not_processed and lost again: the newer doubt is not the one the verdict
    settled, so it wins, and the run stays in doubt."""
    for lines in (
        [record("failed", resolved_by="lookup", at=1000), record("in_doubt", at=2000)],
        [record("in_doubt", at=2000), record("failed", resolved_by="lookup", at=1000)],
    ):
        evidence = Evidence()
        for line in lines:
            evidence.add(line)
        assert evidence.best(RUN) == Prior("in_doubt", at=2000)


def test_a_verdict_beats_the_doubt_it_settled_and_a_line_that_only_repeats_it() -> None:
    """The doubt of its own time, and a held line (no time of its own), lose to the verdict."""
    verdict = record("failed", resolved_by="lookup", at=1000)
    for others in ([record("in_doubt", at=1000)], [record("in_doubt")], [record("in_doubt")]):
        for lines in ([verdict, *others], [*others, verdict]):
            evidence = Evidence()
            for line in lines:
                evidence.add(line)
            assert evidence.best(RUN) == Prior("failed", None, None, "lookup", 1000)


def test_a_verdict_with_no_time_loses_to_a_doubt_that_has_one() -> None:
    """Which came first cannot be told: the doubt stands (a run is never sent twice on a guess)."""
    evidence = Evidence()
    evidence.add(record("in_doubt", at=2000))
    evidence.add(record("failed", resolved_by="lookup"))
    assert evidence.best(RUN) == Prior("in_doubt", at=2000)


def test_order_is_rank_except_that_doubts_and_verdicts_go_by_time() -> None:
    """failed < every doubt and verdict < retriggered, whatever their times."""
    doubt, verdict = rank("in_doubt"), rank("failed", "lookup")
    assert order(rank("failed")) < order(doubt, 1) < order(verdict, 1) < order(doubt, 2)
    assert order(verdict, 3) < order(rank("retriggered"))
    assert order(verdict) < order(doubt, 0)


def test_prescan_reads_when_each_doubt_arose(tmp_path: Path) -> None:
    """The reviewer's journey: pass 1 in doubt, check says not processed, pass 2 sent it again
    and lost the answer: whatever the order of files, the run is in doubt."""
    sent = {"attempts": 1, "ambiguous_attempts": 1}
    first = results_line("in_doubt", finished_at="2026-12-05T12:00:00Z", **sent)
    verdict = results_line(
        "failed", finished_at="2026-12-05T12:00:00Z", resolved_by="lookup", **sent
    )
    second = results_line("in_doubt", finished_at="2026-12-05T12:30:00Z", **sent)
    held = results_line("in_doubt", finished_at="2026-12-05T12:40:00Z", attempts=0)
    held_before = results_line("in_doubt", finished_at="2026-12-05T11:59:00Z", attempts=0)
    skipped = results_line(
        "skipped", prior_outcome="in_doubt", attempts=0, finished_at="2026-12-05T12:40:00Z"
    )
    for lines, outcome in (
        ([first, verdict, second], "in_doubt"),
        ([second, verdict, first], "in_doubt"),
        # Held after the second pass, it may repeat the second pass's doubt: the verdict, older,
        # does not settle it (a review sent the run a third time when it did).
        ([first, verdict, held], "in_doubt"),
        ([held, verdict], "in_doubt"),
        ([skipped, verdict], "in_doubt"),
        # Held before the look-up's window ended: the doubt it repeats is settled.
        ([held_before, verdict], "failed"),
        ([first, verdict, held_before], "failed"),
    ):
        path = tmp_path / "passes.jsonl"
        path.write_bytes(b"".join(lines))
        best = prescan([str(path)], RunIdValidator()).best(RUN)
        assert best is not None
        assert best.outcome == outcome


def test_a_follow_line_s_further_round_in_doubt_beats_an_earlier_verdict_on_its_last_run(
    tmp_path: Path,
) -> None:
    """The chain's last run was found not processed, then run --follow sent a further round of
    it and lost the answer: that doubt is later than the verdict, so the run is in doubt."""
    sent = {"attempts": 1, "ambiguous_attempts": 1}
    verdict = results_line(
        "failed", NEW, finished_at="2026-12-05T12:00:00Z", resolved_by="lookup", **sent
    )
    follow = follow_line()
    for lines in ([verdict, follow], [follow, verdict]):
        best = prescanned(tmp_path, lines).best(NEW)
        assert best is not None
        assert best.outcome == "in_doubt"


def test_a_verdict_on_an_interrupted_request_beats_the_doubt_it_resolves(
    tmp_path: Path,
) -> None:
    """SIGINT cut a request (attempts 1, error 'interrupted'); check found it not processed:
    fed back with the pass's own line, in either order, the run is sent again, not held."""
    interrupted = {"attempts": 1, "ambiguous_attempts": 0, "finished_at": "2026-12-05T12:00:00Z"}
    doubt = results_line("in_doubt", error={"kind": "interrupted"}, **interrupted)
    verdict = results_line(
        "failed", resolved_by="lookup", error={"kind": "not_processed"}, **interrupted
    )
    for lines in ([doubt, verdict], [verdict, doubt]):
        best = prescanned(tmp_path, lines).best(RUN)
        assert best is not None
        assert (best.outcome, best.resolved_by) == ("failed", "lookup")


def test_a_follow_line_s_chain_counts_even_when_a_better_line_of_its_run_came_first(
    tmp_path: Path,
) -> None:
    """A look-up's retriggered line (rank 7) of the run, then its follow line: the chain's last
    run is still in doubt (the follow line lost to the better one, its chain did not)."""
    found = results_line("retriggered", new_run_id=NEW, resolved_by="lookup")
    follow = follow_line()
    for lines in ([found, follow], [follow, found]):
        evidence = prescanned(tmp_path, lines)
        best = evidence.best(NEW)
        assert best is not None
        assert best.outcome == "in_doubt"
        run = evidence.best(RUN)
        assert run is not None
        assert run.resolved_by == "lookup"


def test_bare_outcomes_share_one_object_per_outcome() -> None:
    """A million failed lines cost their keys, not a tuple each."""
    evidence = Evidence()
    evidence.add(record("failed", RUN))
    evidence.add(record("failed", RUN_2))
    assert evidence.best(RUN) is evidence.best(RUN_2)


@pytest.mark.parametrize("outcome", ["retriggered", "already_retriggered"])
@pytest.mark.parametrize(
    "etag",
    [
        '"1100c53e-0000-0200-0000-627138980000"',
        '"1100C53E-0000-0200-0000-627138980000"',
        "1100c53e-0000-0200-0000-627138980000",
        'W/"1a00"',
        "",
        None,
    ],
)
def test_a_done_line_gives_back_exactly_what_it_said(outcome: str, etag: str | None) -> None:
    """Packed or not, the outcome, new run ID and etag come back byte for byte."""
    evidence = Evidence()
    evidence.add(record(outcome, new_run_id=NEW, etag=etag))
    evidence.add(record(outcome, RUN_2, new_run_id="not-a-uuid", etag=etag))
    assert evidence.best(RUN) == Prior(outcome, NEW, etag)
    assert evidence.best(RUN_2) == Prior(outcome, "not-a-uuid", etag)


def test_a_packed_done_line_still_loses_to_a_later_equal_one() -> None:
    """Packing changes how a line is kept, not how it ranks."""
    evidence = Evidence()
    evidence.add(record("retriggered", new_run_id=NEW, etag='"' + NEW_2 + '"'))
    evidence.add(record("already_retriggered", new_run_id=NEW_2))
    assert evidence.best(RUN) == Prior("already_retriggered", NEW_2)
    assert not evidence.add(record("failed", resolved_by="lookup"))


def test_ids_that_are_not_uuids_are_kept_by_their_text() -> None:
    """A custom --run-id-pattern's IDs are evidence too, exactly as written."""
    evidence = Evidence()
    evidence.add(record("retriggered", "RUN-A", new_run_id="RUN-B"))
    assert evidence.best("RUN-A") == Prior("retriggered", "RUN-B")
    assert evidence.best("run-a") is None


def test_an_invalid_record_is_no_evidence() -> None:
    """A line without a valid run ID says nothing about any run."""
    evidence = Evidence()
    bad = InputRecord("r.jsonl", 1, None, "x", "not a valid run ID", "retriggered")
    assert not evidence.add(bad)
    assert len(evidence) == 0


def test_evidence_repr_shows_its_size_and_what_it_read() -> None:
    """The repr says how many runs it holds and which inputs it read."""
    evidence = Evidence(sources=["a.jsonl"])
    evidence.add(record("failed"))
    assert repr(evidence) == "Evidence(runs=1, records=0, results_lines=0, sources=['a.jsonl'])"


# --- prescan --------------------------------------------------------------------------------


def test_prescan_reads_every_file_and_merges_their_lines(tmp_path: Path) -> None:
    """Two passes given as two files: the retriggered line of the second wins."""
    first = tmp_path / "pass1.jsonl"
    second = tmp_path / "pass2.jsonl"
    first.write_bytes(results_line("not_attempted") + results_line("failed", RUN_2))
    second.write_bytes(results_line("retriggered", new_run_id=NEW, etag='"e"'))
    evidence = prescan([str(first), str(second)], RunIdValidator())
    assert evidence.best(RUN) == Prior("retriggered", NEW, '"e"')
    assert evidence.best(RUN_2) == Prior("failed")
    assert evidence.sources == {str(first), str(second)}
    assert (evidence.records, evidence.results_lines) == (3, 3)


def test_prescan_counts_bare_ids_without_keeping_them(tmp_path: Path) -> None:
    """Bare IDs, comments and blanks: counted as the main read will count them, not kept."""
    path = tmp_path / "ids.txt"
    path.write_bytes(
        b"\xef\xbb\xbf# header\n" + RUN.encode() + b"\n\n" + results_line(None, RUN_2) + b"junk\n"
    )
    evidence = prescan([str(path)], RunIdValidator())
    assert (evidence.records, evidence.results_lines, len(evidence)) == (3, 0, 0)


def test_prescan_reads_the_upper_case_ids_of_results_lines_as_run_ids(tmp_path: Path) -> None:
    """The pre-scan parses lines as the main read does: upper-case UUIDs are folded."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(results_line("retriggered", RUN.upper(), new_run_id=NEW))
    assert prescan([str(path)], RunIdValidator()).best(RUN) == Prior("retriggered", NEW)


def test_prescan_leaves_stdin_and_pipes_unread(tmp_path: Path) -> None:
    """A pipe given as a FILE (/dev/fd/N) is not consumed: the main read still gets it all."""
    data = results_line("retriggered", new_run_id=NEW)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
        os.close(write_end)
        evidence = prescan([STDIN, f"/dev/fd/{read_end}"], RunIdValidator())
        assert os.read(read_end, 1000) == data
    finally:
        os.close(read_end)
    assert (len(evidence), evidence.records, evidence.sources) == (0, 0, frozenset())


def test_prescan_of_no_file_reads_nothing() -> None:
    """Stdin alone: an empty evidence, which no judgement needs to consult."""
    evidence = prescan([STDIN], RunIdValidator())
    assert (len(evidence), evidence.records, evidence.sources) == (0, 0, frozenset())


def test_the_ranks_named_in_the_module_are_the_ones_used() -> None:
    """failed is the least evidence kept; retriggered is done."""
    assert rank("failed") == FAILED_RANK
    assert rank("retriggered") == rank("already_retriggered") == DONE_RANK


@pytest.mark.parametrize("stdin_first", [True, False])
def test_stdin_read_ahead_counts_where_it_stands_among_the_inputs(
    tmp_path: Path, stdin_first: bool
) -> None:
    """`cat a | run - b` and `run a b` keep the same order: among equal lines, b's (later) wins;
    `run b -` lets stdin's win. Stdin is read once, and put back at its start."""
    import io

    said_by_stdin = results_line("retriggered", new_run_id="a" * 8)
    said_by_file = results_line("retriggered", new_run_id="b" * 8)
    path = tmp_path / "b.jsonl"
    path.write_bytes(said_by_file)
    stdin = io.BytesIO(said_by_stdin)
    paths = [STDIN, str(path), STDIN] if stdin_first else [str(path), STDIN]
    evidence = prescan(paths, RunIdValidator(), stdin=stdin)
    best = evidence.best(RUN)
    assert best is not None
    assert best.new_run_id == ("b" * 8 if stdin_first else "a" * 8)
    assert evidence.results_lines == 2
    assert stdin.tell() == 0
