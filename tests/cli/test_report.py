"""`bulkretry report`: one current line per run from any passes, in any order."""

from __future__ import annotations

import io
import itertools
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkretry._cli.main import build_parser, main
from bulkretry._cli.report import run_report
from bulkretry._io.source import BOM, MAX_LINE_BYTES

A, B, C = (f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in (1, 2, 3))


def line(run_id: str, outcome: str, **extra: Any) -> bytes:
    return orjson.dumps({"run_id": run_id, "outcome": outcome, **extra}) + b"\n"


PASS_1 = [
    line(A, "in_doubt", error={"kind": "network", "message": "reset"}),
    line(B, "failed", error={"kind": "http", "message": "404", "error_code": "FLOW-1101-404"}),
    line(C, "not_attempted"),
]
PASS_2 = [
    line(A, "retriggered", new_run_id="n-a"),
    line(B, "failed", error={"kind": "http", "message": "404", "error_code": "FLOW-1101-404"}),
    f"{C.upper()}\n".encode(),
]


def report(
    tmp_path: Path, *chunks: list[bytes], fmt: str = "table", extra: tuple[str, ...] = ()
) -> tuple[int, list[Any], str]:
    paths = []
    for number, chunk in enumerate(chunks):
        path = tmp_path / f"pass{number}.jsonl"
        path.write_bytes(b"".join(chunk))
        paths.append(str(path))
    ns = build_parser({}, "report").parse_args(["report", *paths, "--format", fmt, *extra])
    out, err = io.BytesIO(), io.StringIO()
    code = run_report(ns, out=out, err=err)
    rows = [
        orjson.loads(raw) if raw.startswith(b"{") else raw.decode()
        for raw in out.getvalue().splitlines()
    ]
    return code, rows, err.getvalue()


@pytest.mark.parametrize("order", list(itertools.permutations([PASS_1, PASS_2])))
def test_the_most_advanced_evidence_wins_whatever_the_order_of_passes(
    tmp_path: Path, order: tuple[list[bytes], list[bytes]]
) -> None:
    """One line per run: A retriggered, B failed; C's two equal lines: the later one."""
    code, rows, _ = report(tmp_path, *order)
    by_run = {row["run_id"] if isinstance(row, dict) else row.lower(): row for row in rows}
    assert len(rows) == 3
    assert by_run[C] == (C.upper() if order[-1] is PASS_2 else by_run[C])
    if order[-1] is PASS_1:
        assert by_run[C]["outcome"] == "not_attempted"
    assert by_run[A]["outcome"] == "retriggered"
    assert by_run[A]["new_run_id"] == "n-a"
    assert by_run[B]["outcome"] == "failed"
    assert code == 1


def test_a_doubt_raised_after_a_verdict_is_the_current_line_in_any_order(tmp_path: Path) -> None:
    """not_processed, sent again, its answer lost again: the report says in_doubt (fed to run,
    the run is held), not failed (fed to run, sent a third time)."""
    sent = {"attempts": 1, "ambiguous_attempts": 1}
    first = line(A, "in_doubt", finished_at="2026-12-05T12:00:00Z", **sent)
    verdict = line(A, "failed", finished_at="2026-12-05T12:00:00Z", resolved_by="lookup", **sent)
    second = line(A, "in_doubt", finished_at="2026-12-05T12:30:00Z", **sent)
    for chunks in itertools.permutations([[first], [verdict], [second]]):
        code, rows, _ = report(tmp_path, *chunks)
        assert rows == [orjson.loads(second)]
        assert code == 1
    code, rows, _ = report(tmp_path, [first], [verdict])
    assert rows == [orjson.loads(verdict)]


def test_the_winning_line_is_printed_as_it_was_written(tmp_path: Path) -> None:
    """Byte for byte: the report is a results file that run reads back."""
    code, rows, _ = report(tmp_path, [line(A, "retriggered", new_run_id="n", extra="kept")])
    assert rows == [{"run_id": A, "outcome": "retriggered", "new_run_id": "n", "extra": "kept"}]
    assert code == 0


def test_counts_and_top_error_codes_go_to_stderr_as_table_or_json(tmp_path: Path) -> None:
    """--format json gives one object; the table names the top codes of runs not done."""
    _, _, table = report(tmp_path, PASS_1, PASS_2)
    assert "3 runs" in table
    assert "FLOW-1101-404:1" in table.replace(" ", "")
    _, _, text = report(tmp_path, PASS_1, PASS_2, fmt="json")
    summary = orjson.loads(text)
    assert summary["runs"] == 3
    assert summary["outcomes"] == {"retriggered": 1, "failed": 1, "bare": 1}
    assert summary["error_codes"] == {"FLOW-1101-404": 1}


def test_a_skipped_line_counts_as_the_evidence_it_stands_for(tmp_path: Path) -> None:
    """A skipped line carrying prior_outcome retriggered beats a later failed line."""
    skipped = line(A, "skipped", prior_outcome="retriggered", new_run_id="n")
    _, rows, _ = report(tmp_path, [skipped], [line(A, "failed")])
    assert [row["outcome"] for row in rows] == ["skipped"]


def test_everything_done_exits_0_and_an_unreadable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 only when every run is re-triggered; a missing file is a usage error."""
    done = tmp_path / "done.jsonl"
    done.write_bytes(line(A, "retriggered") + line(B, "already_retriggered"))
    assert main(["report", str(done)], env={}) == 0
    assert main(["report", str(tmp_path / "missing.jsonl")], env={}) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_a_skipped_line_standing_for_a_retriggered_run_counts_as_done(tmp_path: Path) -> None:
    """A second pass's skipped lines (prior_outcome retriggered) leave every run done: exit 0."""
    first = [line(A, "retriggered", new_run_id="n")]
    second = [line(A, "skipped", prior_outcome="retriggered", new_run_id="n")]
    code, rows, err = report(tmp_path, first, second, fmt="json")
    assert [row["outcome"] for row in rows] == ["skipped"]  # printed as written
    assert orjson.loads(err)["outcomes"] == {"retriggered": 1}
    assert code == 0


def test_a_results_line_whose_run_id_is_not_valid_is_counted_invalid_and_exits_1(
    tmp_path: Path,
) -> None:
    """A 'retriggered' line naming '../../x' is no run done here: counted invalid, in its place
    among the runs, exit 1; the line itself is kept (as JSON), for run to judge as it reads it."""
    bad = line("../../x", "retriggered")
    code, rows, err = report(tmp_path, [line(A, "retriggered"), bad, line(B, "retriggered")])
    assert [row["run_id"] for row in rows] == [A, "../../x", B]
    assert rows[1] == orjson.loads(bad)
    assert orjson.loads(report(tmp_path, [bad], fmt="json")[2])["outcomes"] == {"invalid": 1}
    assert "invalid: 1" in err
    assert code == 1


def test_junk_lines_are_each_invalid_not_bare_runs(tmp_path: Path) -> None:
    """Text, broken JSON, a JSON array, an object without a string run_id: one invalid record
    each (two equal junk lines stay two), none merged into a run."""
    junk = [b"hello world\n", b"hello world\n", b"{not json\n", b"[1, 2]\n", b'{"id": 5}\n']
    code, rows, err = report(tmp_path, [*junk, f"{A}\n".encode()], fmt="json")
    assert [row["outcome"] for row in rows[:5]] == ["invalid"] * 5
    assert [row["line"] for row in rows[:5]] == [1, 2, 3, 4, 5]
    assert rows[5] == A  # the valid bare ID, as written
    assert orjson.loads(err)["outcomes"] == {"invalid": 5, "bare": 1}
    assert code == 1


def test_an_invalid_line_is_written_json_escaped_never_raw(tmp_path: Path) -> None:
    """Terminal escape sequences of an invalid line (bare or in run_id) come out escaped in a
    results line that report (like run) reads back as the same invalid record."""
    path = tmp_path / "garbage.txt"
    path.write_bytes(b"\x1b[31mred\x1b[0m\n" + line("\x1b]0;x\x07", "retriggered"))
    ns = build_parser({}, "report").parse_args(["report", str(path)])
    out = io.BytesIO()
    assert run_report(ns, out=out, err=io.StringIO()) == 1
    written = out.getvalue()
    assert b"\x1b" not in written
    assert b"\x07" not in written
    rows = [orjson.loads(raw) for raw in written.splitlines()]
    assert [row["run_id"] for row in rows] == ["\x1b[31mred\x1b[0m", "\x1b]0;x\x07"]
    assert [row["outcome"] for row in rows] == ["invalid", "retriggered"]  # the line, escaped
    again = tmp_path / "again.jsonl"
    again.write_bytes(written)
    ns = build_parser({}, "report").parse_args(["report", str(again)])
    out = io.BytesIO()
    assert run_report(ns, out=out, err=io.StringIO()) == 1
    assert [orjson.loads(raw)["run_id"] for raw in out.getvalue().splitlines()] == [
        row["run_id"] for row in rows
    ]


def test_an_over_long_line_is_invalid(tmp_path: Path) -> None:
    """A line longer than any run ID line is invalid (and is not quoted back whole)."""
    long = b'{"run_id": "' + A.encode() + b'", "pad": "' + b"x" * (MAX_LINE_BYTES + 1) + b'"}\n'
    code, rows, _ = report(tmp_path, [long, line(B, "retriggered")])
    assert [row["outcome"] for row in rows] == ["invalid", "retriggered"]
    assert "bytes long" in rows[0]["error"]["message"]
    assert code == 1


def test_a_byte_order_mark_is_read_past_as_run_reads_it(tmp_path: Path) -> None:
    """A file saved with a BOM: its first line is the run it names, printed without the BOM."""
    code, rows, _ = report(tmp_path, [BOM + line(A, "retriggered")])
    assert rows == [{"run_id": A, "outcome": "retriggered"}]
    assert code == 0


def test_stdin_with_an_invalid_line_appended_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """(cat results.jsonl; echo '{"run_id":"../../x",...}') | bulkretry report: exit 1."""
    piped = line(A, "retriggered") + b'{"run_id":"../../x","outcome":"retriggered"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
    assert main(["report"], env={}) == 1
    captured = capsysbinary.readouterr()
    rows = [orjson.loads(raw) for raw in captured.out.splitlines()]
    assert [(row["run_id"], row["outcome"]) for row in rows] == [
        (A, "retriggered"),
        ("../../x", "retriggered"),  # kept as written, counted invalid
    ]
    assert b"invalid: 1" in captured.err


def test_run_ids_of_a_custom_pattern_are_runs_with_the_pattern_run_was_given(
    tmp_path: Path,
) -> None:
    """--run-id-pattern (or BULKRETRY_RUN_ID_PATTERN), as run's: job-7 is a run, not invalid."""
    lines = [line("job-7", "retriggered", new_run_id="n"), b"job-8\n"]
    code, rows, _ = report(tmp_path, lines, extra=("--run-id-pattern", "job-[0-9]+"))
    assert rows[0] == orjson.loads(lines[0])
    assert rows[1] == "job-8"
    assert code == 1  # job-8 was never re-triggered
    code, rows, err = report(tmp_path, lines)
    assert code == 1
    assert "invalid: 2" in err
    # Without the pattern, the retriggered line is kept as written (not turned into a bare
    # invalid record): run, given the pattern, still reads the report as the run done.
    assert rows[0] == orjson.loads(lines[0])
    assert rows[1]["outcome"] == "invalid"
    current = tmp_path / "current.jsonl"
    current.write_bytes(orjson.dumps(rows[0]) + b"\n")
    out = tmp_path / "again.jsonl"
    words = ["run", "--dry-run", "--run-id-pattern", "job-[0-9]+", str(current), "-o", str(out)]
    assert main(words, env={}) == 0
    assert orjson.loads(out.read_bytes())["outcome"] == "already_retriggered"
