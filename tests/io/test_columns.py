"""--column: run IDs from a column of CSV or TSV exports, by header name or number."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from bulkretry._cli.main import main
from bulkretry._exceptions import InputError
from bulkretry._io.source import RecordReader, RunIdValidator

A, B = "4fb0418e-1804-45d6-8d56-dd51f05c0baf", "5fb0418e-1804-45d6-8d56-dd51f05c0baf"


def read(text: str, column: str) -> list[tuple[int, str | None, str | None]]:
    reader = RecordReader(["-"], RunIdValidator(), stdin=io.BytesIO(text.encode()), column=column)
    return [(r.line, r.run_id, r.error) for r in reader]


def test_a_named_column_of_a_csv_export_is_read_and_its_header_skipped() -> None:
    """run_id,flow_id,status: every data line yields its run ID; the header yields nothing."""
    rows = read(f"run_id,flow_id,status\n{A},f1,failed\n{B.upper()},f2,failed\n", "run_id")
    assert rows == [(2, A, None), (3, B, None)]


def test_a_tab_separated_export_and_a_column_number_work_too() -> None:
    """A tab in the first line means TSV; a 1-based number reads every line."""
    assert read(f"f1\t{A}\nf2\t{B}\n", "2") == [(1, A, None), (2, B, None)]


def test_quoted_fields_are_read_as_the_csv_module_reads_them() -> None:
    """A comma inside quotes does not shift the columns."""
    rows = read(f'note,run_id\n"failed, retried",{A}\n', "run_id")
    assert rows == [(2, A, None)]


def test_a_line_without_the_column_is_invalid_not_lost() -> None:
    """Every line still yields one record: a short line is invalid, saying why."""
    rows = read(f"f1,{A}\n{B}\n\n", "2")
    assert rows[0] == (1, A, None)
    assert rows[1][:2] == (2, None)
    assert "no column 2" in (rows[1][2] or "")
    assert len(rows) == 2  # the blank line is skipped, as without --column


def test_an_empty_cell_or_one_starting_with_a_hash_is_invalid_not_skipped() -> None:
    """A spreadsheet export with blank cells: each such row yields one invalid record, while
    blank lines and lines starting with '#' (comments) are skipped as without --column."""
    text = f'flow,run_id\nf,{A}\nf,\nf,""\nf,#{B}\n#f,{B}\n\nf,{B}\n'
    rows = read(text, "run_id")
    assert [(line, run_id) for line, run_id, _ in rows] == [
        (2, A),
        (3, None),
        (4, None),
        (5, None),
        (8, B),
    ]
    assert "empty column run_id" in (rows[1][2] or "")
    assert "empty column run_id" in (rows[2][2] or "")
    assert "not a valid run ID" in (rows[3][2] or "")


def test_a_tab_separated_row_with_an_empty_id_cell_is_invalid() -> None:
    """TSV by column number: the same rule, a row of empty cells too (it is no blank line)."""
    rows = read(f"{A}\tf1\n\tf2\n\t\n  \n", "1")
    assert [(line, run_id) for line, run_id, _ in rows] == [(1, A), (2, None), (3, None)]


def test_a_whitespace_line_or_an_indented_comment_of_a_csv_is_skipped_as_without_column() -> None:
    """Only a row holding the delimiter is a row of empty cells: a tab alone in a CSV is a
    blank line, and a tab-indented '#' line a comment."""
    rows = read(f"run_id,flow\n{A},f\n\t\n\t# note\n \f\n", "run_id")
    assert [(line, run_id) for line, run_id, _ in rows] == [(2, A)]


def test_a_column_name_not_in_the_header_is_an_error_naming_the_columns() -> None:
    """A typo in --column is not a silent run of invalid lines."""
    with pytest.raises(InputError, match="'runid' is not in the header of stdin"):
        read(f"run_id,flow_id\n{A},f1\n", "runid")


def test_column_zero_says_columns_are_numbered_from_one() -> None:
    """`--column 0` (a 0-based habit) names the numbering, not only the missing header."""
    with pytest.raises(InputError, match="--column 0: columns are numbered from 1"):
        read(f"run_id,flow_id\n{A},f1\n", "0")


def test_a_column_of_superscript_digits_is_a_name_not_a_crash() -> None:
    """ "²" is a digit to str.isdigit but no number to int(): it is looked for as a name."""
    with pytest.raises(InputError, match="'²' is not in the header"):
        read(f"run_id,flow_id\n{A},f1\n", "²")


def test_a_header_named_by_a_number_is_still_read_by_name() -> None:
    """A column whose header is "0" is that column: the numbering hint is for no match only."""
    rows = read(f"flow,0\nf1,{A}\n", "0")
    assert [run_id for _, run_id, _ in rows] == [A]


def test_the_cli_refuses_a_wrong_column_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2, one line, for a FILE whose header lacks the column."""
    export = tmp_path / "export.csv"
    export.write_text(f"run_id,flow_id\n{A},f1\n")
    args = ["run", "--dry-run", str(export), "-o", os.devnull, "--column"]
    assert main([*args, "id"], env={}) == 2
    assert "'id' is not in the header" in capsys.readouterr().err
    out = tmp_path / "out.jsonl"
    assert (
        main(["run", "--dry-run", str(export), "-o", str(out), "--column", "run_id"], env={}) == 0
    )
    assert A in out.read_text()
