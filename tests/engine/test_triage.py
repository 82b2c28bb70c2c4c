"""Triage: what each record becomes before any request, by merged evidence."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkretry._config import Settings
from bulkretry._engine.triage import Triage, Verdict, only_needs_results_lines
from bulkretry._io.evidence import prescan
from bulkretry._io.source import InputRecord, RecordReader, RunIdValidator
from bulkretry._ledger.schema import Admission, PriorState
from bulkretry._model import Outcome, RunResult

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_2 = "5fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
ETAG = '"1100c53e-0000-0200-0000-627138980000"'
KINDS = ("bare", "not_attempted", "in_doubt", "failed", "retriggered")
NEW_ADMISSION = Admission(PriorState.NEW, "pending")
DUPLICATE = Admission(PriorState.DUPLICATE)

#: Settings a second pass may be run with: plain, selective, and sending runs in doubt.
PASSES = {
    "plain": Settings(),
    "retry-in-doubt": Settings(retry_in_doubt=True),
    "only-failed": Settings(only=frozenset({"failed"})),
    "only-failed-in-doubt": Settings(only=frozenset({"failed", "in_doubt"}), retry_in_doubt=True),
    "only-not-attempted": Settings(only=frozenset({"not_attempted"})),
    "only-done": Settings(only=frozenset({"retriggered", "already_retriggered"})),
}


def line(kind: str, run_id: str = RUN, **fields: Any) -> bytes:
    """Return one input line: a bare ID, or a results line of that outcome."""
    if kind == "bare":
        return run_id.encode() + b"\n"
    obj: dict[str, Any] = {"run_id": run_id, "outcome": kind}
    if kind == "retriggered":
        obj.update(new_run_id=NEW, etag=ETAG)
    obj.update(fields)
    return orjson.dumps(obj) + b"\n"


def read(data: bytes) -> list[InputRecord]:
    return list(RecordReader(["-"], RunIdValidator(), stdin=io.BytesIO(data)))


def from_files(
    paths: Sequence[Path], settings: Settings = PASSES["plain"]
) -> tuple[Triage, list[Verdict | None]]:
    """Pre-scan the files, then judge every record of them in order, as a batch would."""
    names = [str(p) for p in paths]
    validator = RunIdValidator()
    triage = Triage(settings, with_ledger=False, evidence=prescan(names, validator))
    return triage, [triage.judge(r) for r in RecordReader(names, validator)]


def from_pipe(
    data: bytes, settings: Settings = PASSES["plain"]
) -> tuple[Triage, list[Verdict | None]]:
    """Judge every record of ``data`` read from stdin, with nothing read ahead."""
    triage = Triage(settings, with_ledger=False)
    return triage, [triage.judge(r) for r in read(data)]


def orders() -> Iterator[tuple[str, ...]]:
    """Every order of every set of line kinds that holds a retriggered line: 261 in all."""
    others = [k for k in KINDS if k != "retriggered"]
    for size in range(len(others) + 1):
        for chosen in itertools.combinations(others, size):
            yield from itertools.permutations((*chosen, "retriggered"))


def outcomes(verdicts: Sequence[Verdict | None]) -> list[str | None]:
    return [None if v is None else v.outcome.value for v in verdicts]


# --- concatenated passes, read whole before anything is sent --------------------------------


@pytest.mark.parametrize("settings", PASSES.values(), ids=list(PASSES))
def test_a_run_with_a_retriggered_line_is_never_sent_in_any_order(
    settings: Settings, tmp_path: Path
) -> None:
    """Concatenated passes, every order of every mix of lines: never sent, the new run kept."""
    path = tmp_path / "passes.jsonl"
    for order in orders():
        path.write_bytes(b"".join(line(kind) for kind in order))
        triage, verdicts = from_files([path], settings)
        assert None not in verdicts, order
        for verdict in verdicts:
            assert verdict is not None
            assert verdict.outcome in (
                Outcome.ALREADY_RETRIGGERED,
                Outcome.DUPLICATE,
                Outcome.SKIPPED,
            ), order
            if verdict.outcome is not Outcome.DUPLICATE:
                assert (verdict.new_run_id, verdict.etag) == (NEW, ETAG), order
        assert triage.late_evidence == 0


def test_the_first_line_of_a_done_run_comes_out_already_retriggered_the_rest_duplicate(
    tmp_path: Path,
) -> None:
    """A bare ID before the retriggered line: already_retriggered with the new run, durable."""
    path = tmp_path / "passes.jsonl"
    path.write_bytes(line("bare") + line("failed") + line("retriggered") + line("in_doubt"))
    _, verdicts = from_files([path])
    assert verdicts[0] == Verdict(
        Outcome.ALREADY_RETRIGGERED, new_run_id=NEW, etag=ETAG, durable=True
    )
    assert outcomes(verdicts[1:]) == ["duplicate"] * 3


@pytest.mark.parametrize("halted_first", [True, False])
def test_two_passes_given_as_two_files_resend_nothing(halted_first: bool, tmp_path: Path) -> None:
    """A halted pass (25 not_attempted) and the pass that re-triggered them, in either order."""
    runs = [f"{n:08x}-1804-45d6-8d56-dd51f05c0baf" for n in range(25)]
    halted = tmp_path / "halted.jsonl"
    done = tmp_path / "done.jsonl"
    halted.write_bytes(b"".join(line("not_attempted", r) for r in runs))
    done.write_bytes(b"".join(line("retriggered", r) for r in runs))
    files = [halted, done] if halted_first else [done, halted]
    _, verdicts = from_files(files)
    counts = {o: outcomes(verdicts).count(o) for o in set(outcomes(verdicts))}
    assert counts == {"already_retriggered": 25, "duplicate": 25}


def test_a_stdin_line_is_held_back_by_a_retriggered_line_in_a_file(tmp_path: Path) -> None:
    """`run - done.jsonl`: the file is read ahead, so the failed line on stdin is not sent."""
    path = tmp_path / "done.jsonl"
    path.write_bytes(line("retriggered"))
    triage = Triage(
        Settings(), with_ledger=False, evidence=prescan(["-", str(path)], RunIdValidator())
    )
    verdict = triage.judge(read(line("failed"))[0])
    assert verdict == Verdict(Outcome.ALREADY_RETRIGGERED, new_run_id=NEW, etag=ETAG, durable=True)


# --- --only selects by the merged state ------------------------------------------------------


def test_only_selects_by_the_merged_state_of_the_run(tmp_path: Path) -> None:
    """failed then in_doubt: --only failed skips both lines, saying the run is in doubt."""
    path = tmp_path / "passes.jsonl"
    path.write_bytes(line("failed") + line("in_doubt"))
    _, verdicts = from_files([path], Settings(only=frozenset({"failed"})))
    assert verdicts == [Verdict(Outcome.SKIPPED, prior_outcome="in_doubt")] * 2
    _, verdicts = from_files([path], PASSES["only-failed-in-doubt"])
    assert outcomes(verdicts) == [None, "duplicate"]


def test_a_skipped_line_carries_the_merged_outcome_and_new_run(tmp_path: Path) -> None:
    """The skipped line of a done run says retriggered, with the new run ID and etag."""
    path = tmp_path / "passes.jsonl"
    path.write_bytes(line("not_attempted") + line("retriggered"))
    _, verdicts = from_files([path], Settings(only=frozenset({"not_attempted"})))
    expected = Verdict(Outcome.SKIPPED, new_run_id=NEW, etag=ETAG, prior_outcome="retriggered")
    assert verdicts == [expected, expected]


def test_a_skipped_line_fed_back_alone_still_protects_its_run(tmp_path: Path) -> None:
    """The results line of a skipped verdict, read again, is retriggered evidence."""
    path = tmp_path / "passes.jsonl"
    path.write_bytes(line("not_attempted") + line("retriggered"))
    _, verdicts = from_files([path], Settings(only=frozenset({"failed"})))
    verdict = verdicts[0]
    assert verdict is not None
    result = RunResult(
        run_id=RUN,
        outcome=verdict.outcome,
        new_run_id=verdict.new_run_id,
        etag=verdict.etag,
        prior_outcome=verdict.prior_outcome,
    )
    again = tmp_path / "again.jsonl"
    again.write_bytes(result.to_json_line())
    _, verdicts = from_files([again])
    assert verdicts == [
        Verdict(Outcome.ALREADY_RETRIGGERED, new_run_id=NEW, etag=ETAG, durable=True)
    ]


def test_a_bare_id_skipped_by_only_has_no_prior_outcome() -> None:
    """Nothing is known of a bare ID's run: its skipped line says nothing more."""
    _, verdicts = from_pipe(line("bare"), Settings(only=frozenset({"failed"})))
    assert verdicts == [Verdict(Outcome.SKIPPED)]


# --- resolved_by: a look-up's verdict beats the in_doubt it resolves -------------------------


@pytest.mark.parametrize("resolved_first", [True, False])
def test_a_resolved_failed_line_releases_a_run_held_in_doubt(
    resolved_first: bool, tmp_path: Path
) -> None:
    """in_doubt plus a look-up's failed verdict: --only failed sends it once."""
    lines = [line("in_doubt"), line("failed", resolved_by="lookup")]
    path = tmp_path / "passes.jsonl"
    path.write_bytes(b"".join(lines[::-1] if resolved_first else lines))
    _, verdicts = from_files([path], Settings(only=frozenset({"failed"})))
    assert outcomes(verdicts) == [None, "duplicate"]


def test_without_resolved_by_the_in_doubt_line_still_holds_the_run(tmp_path: Path) -> None:
    """A plain failed line does not outrank in_doubt: the run stays held."""
    path = tmp_path / "passes.jsonl"
    path.write_bytes(line("failed") + line("in_doubt"))
    _, verdicts = from_files([path])
    assert outcomes(verdicts) == ["in_doubt", "duplicate"]


# --- on a pipe: no read-ahead, so merge as lines come and count late evidence ----------------


@pytest.mark.parametrize("settings", PASSES.values(), ids=list(PASSES))
def test_on_a_pipe_a_run_is_sent_at_most_once_and_late_evidence_is_counted(
    settings: Settings,
) -> None:
    """Every order: never sent after its retriggered line; sent before it, or before an in_doubt
    line (unless in-doubt runs are sent again), means late evidence, on the first of them."""
    holding = {"retriggered"} if settings.retry_in_doubt else {"retriggered", "in_doubt"}
    for order in orders():
        triage, verdicts = from_pipe(b"".join(line(kind) for kind in order), settings)
        sent = [i for i, v in enumerate(verdicts) if v is None]
        assert len(sent) <= 1, order
        if sent:
            assert sent[0] < order.index("retriggered"), order
            assert triage.late_evidence == 1, order
            first = next(i for i in range(sent[0], len(order)) if order[i] in holding)
            late = verdicts[first]
            assert late is not None
            assert late.outcome is Outcome.DUPLICATE
            assert late.error is not None
            assert late.error.kind == "late_evidence"
            expected = (NEW, ETAG) if order[first] == "retriggered" else (None, None)
            assert (late.prior_outcome, late.new_run_id, late.etag) == (order[first], *expected)
            assert all(
                v is not None and (v.error is None or v.error.kind != "late_evidence")
                for v in verdicts[first + 1 :]
            ), order
        else:
            assert triage.late_evidence == 0, order


def verdict_and_doubt(verdict_at: str, doubt_at: str) -> tuple[bytes, bytes]:
    """A check's not_processed verdict and an in_doubt line, each dated by its own pass."""
    sent = {"attempts": 1, "ambiguous_attempts": 1}
    verdict = line("failed", resolved_by="check", finished_at=verdict_at, **sent)
    return verdict, line("in_doubt", finished_at=doubt_at, **sent)


def test_on_a_pipe_an_in_doubt_line_newer_than_the_verdict_that_sent_its_run_is_late() -> None:
    """check said not_processed, the run was sent again and that answer was lost too: fed back
    on a pipe with the verdict first, the run is sent a third time, and that is reported."""
    verdict, doubt = verdict_and_doubt("2026-12-05T12:00:00Z", "2026-12-05T12:05:00Z")
    triage, verdicts = from_pipe(verdict + doubt)
    assert verdicts[0] is None
    late = verdicts[1]
    assert late is not None
    assert late.error is not None
    assert (late.outcome, late.error.kind, late.prior_outcome) == (
        Outcome.DUPLICATE,
        "late_evidence",
        "in_doubt",
    )
    assert "left in doubt" in late.error.message
    assert triage.late_evidence == 1


def test_on_a_pipe_a_verdict_after_the_line_that_held_its_run_is_named_late() -> None:
    """Passes in time order on a pipe: pass 1's in_doubt line holds the run, then check's verdict
    on it comes: too late to release it (no pre-scan), but never passed over in silence."""
    verdict, doubt = verdict_and_doubt("2026-12-05T12:05:00Z", "2026-12-05T12:00:00Z")
    triage, verdicts = from_pipe(doubt + verdict)
    assert outcomes(verdicts) == ["in_doubt", "duplicate"]
    late = verdicts[1]
    assert late is not None
    assert late.error is not None
    assert (late.error.kind, late.prior_outcome) == ("late_evidence", "failed")
    assert (triage.late_release, triage.late_evidence) == (1, 0)
    triage, verdicts = from_pipe(line("bare") + verdict)  # sent, then its verdict: nothing late
    assert outcomes(verdicts) == [None, "duplicate"]
    assert triage.late_release == 0
    found = line("retriggered", resolved_by="check")  # a verdict that it was re-triggered
    triage, verdicts = from_pipe(doubt + found)
    assert outcomes(verdicts) == ["in_doubt", "duplicate"]
    assert triage.late_release == 1


def test_a_verdict_too_late_is_named_only_when_it_came_on_the_pipe(tmp_path: Path) -> None:
    """Files are read whole first: a file's verdict was weighed already when a pipe line held
    its run (no label); a pipe verdict after a file's line held its run came too late (named)."""
    verdict, doubt = verdict_and_doubt("2026-12-05T12:00:00Z", "2026-12-05T12:05:00Z")
    for in_file, on_pipe, late in ((verdict, doubt, 0), (doubt, verdict, 1)):
        path = tmp_path / "pass.jsonl"
        path.write_bytes(in_file)
        validator = RunIdValidator()
        triage = Triage(Settings(), with_ledger=False, evidence=prescan([str(path)], validator))
        reader = RecordReader([str(path), "-"], validator, stdin=io.BytesIO(on_pipe))
        verdicts = [triage.judge(r) for r in reader]
        assert outcomes(verdicts)[1] == "duplicate"
        assert triage.late_release == late


def test_on_a_pipe_an_in_doubt_line_the_verdict_settled_is_not_late() -> None:
    """The doubt is older than the verdict that released the run: the run was rightly sent."""
    verdict, doubt = verdict_and_doubt("2026-12-05T12:05:00Z", "2026-12-05T12:00:00Z")
    triage, verdicts = from_pipe(verdict + doubt)
    assert outcomes(verdicts) == [None, "duplicate"]
    assert verdicts[1] is not None
    assert verdicts[1].error is None
    assert triage.late_evidence == 0


def test_on_a_pipe_an_in_doubt_line_after_a_bare_id_is_late_unless_in_doubt_runs_are_resent() -> (
    None
):
    for settings, late in ((PASSES["plain"], 1), (PASSES["retry-in-doubt"], 0)):
        triage, verdicts = from_pipe(line("bare") + line("in_doubt"), settings)
        assert outcomes(verdicts) == [None, "duplicate"]
        assert triage.late_evidence == late


def test_on_a_pipe_an_in_doubt_line_skipped_by_only_still_lets_a_newer_verdict_send_the_run() -> (
    None
):
    """Looking for late evidence must not hold a run that was never sent."""
    verdict, doubt = verdict_and_doubt("2026-12-05T12:05:00Z", "2026-12-05T12:00:00Z")
    triage, verdicts = from_pipe(doubt + verdict, PASSES["only-failed"])
    assert outcomes(verdicts) == ["skipped", None]
    assert triage.late_evidence == 0


def test_a_late_retriggered_line_is_counted_once_per_run() -> None:
    """Sent first, then two retriggered lines: one run sent twice at worst, counted once."""
    triage, verdicts = from_pipe(line("failed") + line("retriggered") + line("retriggered"))
    assert outcomes(verdicts) == [None, "duplicate", "duplicate"]
    assert triage.late_evidence == 1


def test_only_on_a_pipe_learns_from_the_lines_it_skips() -> None:
    """retriggered (skipped by --only failed) then failed: the failed line is not sent."""
    settings = Settings(only=frozenset({"failed"}))
    for first in ("retriggered", "in_doubt"):
        triage, verdicts = from_pipe(line(first) + line("failed"), settings)
        assert outcomes(verdicts) == ["skipped", "skipped"], first
        assert verdicts[1] is not None
        assert verdicts[1].prior_outcome == first
        assert triage.late_evidence == 0


def test_only_on_a_pipe_still_sends_a_failed_line_after_a_not_attempted_one() -> None:
    """A line that says nothing more than its ID holds nothing back."""
    _, verdicts = from_pipe(
        line("not_attempted") + line("failed"), Settings(only=frozenset({"failed"}))
    )
    assert outcomes(verdicts) == ["skipped", None]


# --- counting results lines, for --only on input without any ---------------------------------


def test_results_lines_counts_json_lines_with_an_outcome() -> None:
    """Bare IDs and listing lines are not results lines; a results line with a bad ID is."""
    data = (
        line("bare")
        + orjson.dumps({"id": RUN_2, "flowId": "f"})
        + b"\n"
        + line("failed", RUN_2)
        + line("failed", "not-a-uuid")
    )
    triage, _ = from_pipe(data, Settings(only=frozenset({"failed"})))
    assert triage.results_lines == 2


def test_only_without_results_lines_has_one_clear_message() -> None:
    """The caller's exit-2 line names what --only needs and how many lines were read."""
    assert only_needs_results_lines(3) == (
        "--only needs results lines as input (JSON lines with an outcome); "
        "none of the 3 input lines is one"
    )
    assert only_needs_results_lines(1).endswith("none of the 1 input line is one")
    assert only_needs_results_lines(0).endswith("; the input holds no record")


# --- the path without evidence judges as it always did ---------------------------------------


def test_without_evidence_records_are_judged_by_their_own_line() -> None:
    """Invalid, duplicate, done, in doubt and plain lines, each on its own."""
    data = (
        b"not a run id\n"
        + line("bare")
        + line("bare")
        + line("retriggered", RUN_2)
        + line("in_doubt", "6fb0418e-1804-45d6-8d56-dd51f05c0baf")
    )
    triage, verdicts = from_pipe(data)
    assert outcomes(verdicts) == ["invalid", None, "duplicate", "already_retriggered", "in_doubt"]
    assert verdicts[4] is not None
    assert verdicts[4].durable
    _, verdicts = from_pipe(line("in_doubt"), Settings(retry_in_doubt=True))
    assert verdicts == [None]
    assert triage.late_evidence == 0


def test_triage_repr_shows_what_it_holds_and_counts() -> None:
    """Debugging a batch starts with the repr: seen runs, --only, counts."""
    triage, _ = from_pipe(line("failed") + line("retriggered"))
    text = repr(triage)
    assert "SeenSet(size=1)" in text
    assert "results_lines=2" in text
    assert "late_evidence=1" in text


# --- with a ledger: admissible() sees a batch first, judge() follows its answer --------------


def judge_batch(
    triage: Triage, records: list[InputRecord], admit: Sequence[Admission]
) -> list[Verdict | None]:
    """Do what the engine does with a ledger: admit the admissible ones, then judge in order."""
    admitted = [r for r in records if triage.admissible(r)]
    assert len(admitted) == len(admit)
    admissions = {id(r): a for r, a in zip(admitted, admit, strict=True)}
    return [triage.judge(r, admissions.get(id(r))) for r in records]


def test_with_a_ledger_a_skipped_retriggered_line_keeps_its_run_out_of_the_ledger() -> None:
    """retriggered then failed under --only failed: neither line is admitted, none sent."""
    triage = Triage(Settings(only=frozenset({"failed"})), with_ledger=True)
    verdicts = judge_batch(triage, read(line("retriggered") + line("failed")), [])
    assert outcomes(verdicts) == ["skipped", "skipped"]


def test_with_a_ledger_a_retriggered_line_later_in_the_batch_holds_the_run_back() -> None:
    """failed then retriggered in one batch: the failed line comes out already_retriggered."""
    triage = Triage(Settings(only=frozenset({"failed"})), with_ledger=True)
    verdicts = judge_batch(triage, read(line("failed") + line("retriggered")), [NEW_ADMISSION])
    assert outcomes(verdicts) == ["already_retriggered", "skipped"]
    assert triage.late_evidence == 0


def test_with_a_ledger_a_retriggered_line_after_the_send_is_late_evidence() -> None:
    """The run was sent in an earlier batch: the retriggered line is counted, with --only too."""
    for settings, admit in ((Settings(), [DUPLICATE]), (Settings(only=frozenset({"failed"})), [])):
        triage = Triage(settings, with_ledger=True)
        assert judge_batch(triage, read(line("failed")), [NEW_ADMISSION]) == [None]
        verdicts = judge_batch(triage, read(line("retriggered")), admit)
        assert outcomes(verdicts) == ["duplicate"]
        assert triage.late_evidence == 1


def test_with_a_ledger_a_run_it_knows_as_done_is_not_late_evidence() -> None:
    """The state file said retriggered: nothing was sent, so a later line is only a duplicate."""
    triage = Triage(Settings(), with_ledger=True)
    known = Admission(PriorState.RETRIGGERED, "retriggered", NEW, ETAG)
    assert outcomes(judge_batch(triage, read(line("bare")), [known])) == ["already_retriggered"]
    assert judge_batch(triage, read(line("retriggered")), [DUPLICATE]) == [
        Verdict(Outcome.DUPLICATE)
    ]
    assert triage.late_evidence == 0


def test_with_a_ledger_runs_of_earlier_invocations_are_held_by_their_seq() -> None:
    """Known runs carry their seq: a done one is held (a later line is no late evidence), a
    pending one is sent (a later retriggered line is), and neither goes into a run ID set."""
    triage = Triage(Settings(), with_ledger=True)
    done = Admission(PriorState.RETRIGGERED, "retriggered", NEW, ETAG, seq=70_000)
    pending = Admission(PriorState.PENDING, "pending", seq=3)
    other = "0f0f0f0f-1804-45d6-8d56-dd51f05c0baf"
    bare = read(line("bare") + line("bare", other))
    verdicts = judge_batch(triage, bare, [done, pending])
    assert outcomes(verdicts) == ["already_retriggered", None]
    again = [Admission(PriorState.DUPLICATE, seq=70_000), Admission(PriorState.DUPLICATE, seq=3)]
    verdicts = judge_batch(triage, read(line("retriggered") + line("retriggered", other)), again)
    assert outcomes(verdicts) == ["duplicate", "duplicate"]
    assert triage.late_evidence == 1  # the pending run, sent before its retriggered line
    assert triage._held is None


# --- run --follow lines read on a pipe -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "held"),
    [
        ({"chain": [RUN_2, NEW]}, "already_retriggered"),  # RUN_2 failed, was re-triggered
        ({"chain": [RUN_2], "next_round": {"outcome": "in_doubt"}}, "in_doubt"),
    ],
    ids=["re-triggered-in-the-chain", "further-round-in-doubt"],
)
def test_a_run_of_a_chain_read_on_a_pipe_is_not_sent_when_a_later_line_names_it(
    fields: dict[str, Any], held: str
) -> None:
    """`cat results.jsonl failed-now.txt | bulkretry run`: a run that a results line's chain
    re-triggered (or may have) fails again and is listed; no pre-scan reads a pipe ahead, so
    the chain is taken in as the line is judged, and the listed run is held, not sent."""
    data = line("retriggered", **fields) + line("bare", RUN_2)
    _, verdicts = from_pipe(data)
    assert outcomes(verdicts) == ["already_retriggered", held]
