"""Tests of bulkretry._io.source: reading, validating and accounting for every input line."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkretry._config import DEFAULT_RUN_ID_PATTERN
from bulkretry._exceptions import InputError
from bulkretry._io.source import (
    MAX_LINE_BYTES,
    QUOTE_CHARS,
    InputRecord,
    RecordReader,
    RunIdValidator,
    check_input_paths,
)

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_2 = "5fb0418e-1804-45d6-8d56-dd51f05c0baf"
RUN_3 = "6fb0418e-1804-45d6-8d56-dd51f05c0baf"
BOM = b"\xef\xbb\xbf"
NOT_A_RUN_ID = "not a valid run ID"


class RecordingStream(io.BytesIO):
    """A stdin stand-in that remembers the size of every piece ``readline`` returned."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int] = []

    def readline(self, size: int | None = -1, /) -> bytes:
        piece = super().readline(size)
        self.sizes.append(len(piece))
        return piece


def read(data: bytes, *, pattern: str = DEFAULT_RUN_ID_PATTERN, **kw: Any) -> list[InputRecord]:
    """Return every record of ``data`` read as stdin."""
    reader = RecordReader(["-"], RunIdValidator(pattern), stdin=io.BytesIO(data), **kw)
    return list(reader)


def only(data: bytes, **kw: Any) -> InputRecord:
    """Return the one record ``data`` must yield."""
    records = read(data, **kw)
    assert len(records) == 1, records
    return records[0]


# --- valid lines ----------------------------------------------------------------------------


def test_plain_run_ids_are_read_one_per_line() -> None:
    """Each line holding a run ID yields a valid record with its source and line number."""
    records = read(f"{RUN}\n{RUN_2}\n".encode())
    assert [(r.source, r.line, r.run_id, r.error) for r in records] == [
        ("-", 1, RUN, None),
        ("-", 2, RUN_2, None),
    ]


def test_blank_lines_and_comments_are_skipped_but_counted() -> None:
    """Blank and ``#`` lines yield nothing, yet line numbers still match the file."""
    data = f"# failed runs of flow X\n\n   \n{RUN}\n\t# indented comment\n{RUN_2}\n".encode()
    records = read(data)
    assert [(r.line, r.run_id) for r in records] == [(4, RUN), (6, RUN_2)]


@pytest.mark.parametrize(
    "data",
    [
        f"  {RUN}  \n".encode(),
        f"\t{RUN}\t\n".encode(),
        f"{RUN}\r\n".encode(),
        BOM + f"{RUN}\n".encode(),
        BOM + f"{RUN}\r\n".encode(),
        f"{RUN}".encode(),
    ],
    ids=["spaces", "tabs", "crlf", "bom", "bom-crlf", "no-trailing-newline"],
)
def test_surrounding_whitespace_crlf_and_a_bom_are_tolerated(data: bytes) -> None:
    """What editors and Windows tools add around an ID does not make it invalid."""
    record = only(data)
    assert (record.run_id, record.error) == (RUN, None)


def test_a_bom_before_a_comment_still_makes_a_comment() -> None:
    """A file saved with a BOM may start with a comment."""
    records = read(BOM + f"# header\n{RUN}\n".encode())
    assert [(r.line, r.run_id) for r in records] == [(2, RUN)]


def test_upper_case_uuid_is_normalised_to_lower_case() -> None:
    """Run IDs are compared and sent in lower case, however they were written."""
    assert only(f"{RUN.upper()}\n".encode()).run_id == RUN


def test_json_line_with_run_id_is_read_and_its_outcome_kept_as_prior() -> None:
    """A results line piped back in yields its run ID and earlier outcome."""
    line = f'{{"run_id": "{RUN}", "outcome": "failed", "new_run_id": "{RUN_2}"}}\n'
    record = only(line.encode())
    assert (record.run_id, record.prior, record.error) == (RUN, "failed", None)


def test_json_line_with_id_is_read() -> None:
    """A Flow Service listing line carries the run ID as ``id``."""
    record = only(f'{{"id": "{RUN.upper()}", "flowId": "x"}}\n'.encode())
    assert (record.run_id, record.prior) == (RUN, None)


def test_json_line_prefers_run_id_over_id() -> None:
    """When both are there, ``run_id`` is the input's run; ``id`` may be something else."""
    assert only(f'{{"run_id": "{RUN}", "id": "{RUN_2}"}}'.encode()).run_id == RUN


def test_json_line_ignores_an_outcome_that_is_not_text() -> None:
    """Only a string outcome becomes ``prior``."""
    assert only(f'{{"run_id": "{RUN}", "outcome": 3}}'.encode()).prior is None


@pytest.mark.parametrize("outcome", ["[3]", '{"a": 1}', "null", "true"])
def test_json_line_with_an_unhashable_or_odd_outcome_has_no_prior(outcome: str) -> None:
    """A list or object as the outcome is no outcome, and no crash."""
    record = only(f'{{"run_id": "{RUN}", "outcome": {outcome}}}'.encode())
    assert (record.run_id, record.prior) == (RUN, None)


@pytest.mark.parametrize("outcome", ["skipped", "duplicate"])
def test_a_line_that_stands_for_another_takes_its_prior_outcome(outcome: str) -> None:
    """A skipped (or duplicate) line with a prior_outcome is read as that outcome's evidence."""
    line = (
        f'{{"run_id": "{RUN}", "outcome": "{outcome}", "prior_outcome": "retriggered", '
        f'"new_run_id": "{RUN_2}", "etag": "\\"e1\\""}}'
    )
    record = only(line.encode())
    assert (record.prior, record.prior_new_run_id, record.prior_etag) == (
        "retriggered",
        RUN_2,
        '"e1"',
    )


@pytest.mark.parametrize("prior_outcome", ["null", '""', "7"])
def test_a_skipped_line_without_a_usable_prior_outcome_stays_skipped(prior_outcome: str) -> None:
    """Results files written before prior_outcome existed read as they always did."""
    line = f'{{"run_id": "{RUN}", "outcome": "skipped", "prior_outcome": {prior_outcome}}}'
    assert only(line.encode()).prior == "skipped"


def test_prior_outcome_of_a_line_that_acted_on_its_run_is_ignored() -> None:
    """A failed line is failed evidence, whatever else it carries."""
    line = f'{{"run_id": "{RUN}", "outcome": "failed", "prior_outcome": "retriggered"}}'
    assert only(line.encode()).prior == "failed"


def test_resolved_by_is_kept_as_prior_resolved_by() -> None:
    """A look-up's verdict on a run left in doubt is carried into the record."""
    line = f'{{"run_id": "{RUN}", "outcome": "failed", "resolved_by": "lookup"}}'
    record = only(line.encode())
    assert (record.prior, record.prior_resolved_by) == ("failed", "lookup")
    assert only(f'{{"run_id": "{RUN}", "resolved_by": 1}}'.encode()).prior_resolved_by is None


def test_json_only_reader_passes_over_lines_that_are_not_json_objects() -> None:
    """A pre-scan reads results lines only, counting the bare IDs it passes over."""
    data = f'# c\n{RUN}\n\n{{"run_id": "{RUN_2}", "outcome": "failed"}}\nnot an id\n'.encode()
    reader = RecordReader(["-"], RunIdValidator(), stdin=io.BytesIO(data), json_only=True)
    assert [(r.line, r.run_id, r.prior) for r in reader] == [(4, RUN_2, "failed")]
    assert reader.passed_over == 2
    assert "passed_over=2" in repr(reader)


# --- invalid lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b'{"id": 5}', "JSON line has no string 'run_id' or 'id' field"),
        (b'{"flowId": "x"}', "JSON line has no string 'run_id' or 'id' field"),
        (b'{"run_id": null}', "JSON line has no string 'run_id' or 'id' field"),
        (b'{"run_id": "../../flows"}', NOT_A_RUN_ID),
        (b'{"run_id": "' + RUN.encode() + b'/../x"}', NOT_A_RUN_ID),
        (b'{"run_id": "' + RUN.encode() + b'\\u0000"}', NOT_A_RUN_ID),
        (b'{"run_id": ', "line starts with '{' but is not valid JSON"),
        (b"{not json}", "line starts with '{' but is not valid JSON"),
        (b"[1]", NOT_A_RUN_ID),
        (b'["' + RUN.encode() + b'"]', NOT_A_RUN_ID),
    ],
)
def test_unusable_json_lines_are_invalid_with_a_clear_error(line: bytes, error: str) -> None:
    """A JSON line without a usable run ID yields one invalid record saying why."""
    record = only(line + b"\n")
    assert record.run_id is None
    assert record.error is not None
    assert record.error.startswith(error)


def test_invalid_utf8_is_invalid_and_quoted_readably() -> None:
    """Bytes that are not UTF-8 are reported, and quoted with backslash escapes."""
    record = only(b"4fb0418e-\xff\xfe-45d6\n")
    assert record.run_id is None
    assert record.error == "line is not valid UTF-8"
    assert record.text == "4fb0418e-\\xff\\xfe-45d6"


LOOKALIKES = {
    "nul": RUN[:8] + "\x00" + RUN[8:],
    "escape": RUN + "\x1b[31m",
    "delete": RUN[:-1] + "\x7f",
    "bell": "\x07" + RUN,
    "slash": RUN[:8] + "/" + RUN[9:],
    "path": "../" + RUN,
    "dotdot": RUN[:-2] + "..",
    "query": RUN + "?op=delete",
    "fragment": RUN + "#x",
    "percent-dot": "%2e%2e/" + RUN,
    "percent-in": RUN[:-3] + "%2e",
    "space-inside": RUN[:8] + " " + RUN[9:],
    "tab-inside": RUN[:8] + "\t" + RUN[9:],
    "arabic-indic": RUN.replace("4", "\u0664"),
    "full-width": RUN.replace("1", "\uff11"),
    "devanagari": RUN.replace("8", "\u096e"),
    "cyrillic-a": RUN.replace("a", "\u0430"),
    "unicode-dash": RUN.replace("-", "\u2010"),
    "zero-width": RUN[:8] + "\u200b" + RUN[8:],
    "too-short": RUN[:-1],
    "too-long": RUN + "0",
    "no-dashes": RUN.replace("-", ""),
    "parentheses": "(" + RUN + ")",
    "urn": "urn:uuid:" + RUN,
}


@pytest.mark.parametrize("text", LOOKALIKES.values(), ids=list(LOOKALIKES))
def test_anything_but_a_clean_uuid_is_invalid(text: str) -> None:
    """Control characters, path and URL syntax, and Unicode look-alikes never pass."""
    record = only(text.encode() + b"\n")
    assert record.run_id is None
    assert record.error is not None
    assert record.error.startswith(NOT_A_RUN_ID)


@pytest.mark.parametrize("text", LOOKALIKES.values(), ids=list(LOOKALIKES))
def test_anything_but_a_clean_uuid_is_invalid_inside_json_too(text: str) -> None:
    """The same checks apply to the ``run_id`` of a JSON line."""
    import orjson

    record = only(orjson.dumps({"run_id": text}) + b"\n")
    assert record.run_id is None
    assert record.error is not None


def test_an_invalid_line_is_quoted_back_shortened() -> None:
    """An invalid record quotes the line, cut to a readable length."""
    record = only(b"x" * 1000 + b"\n")
    assert record.text == "x" * QUOTE_CHARS + "…"


def test_a_valid_record_carries_no_quote() -> None:
    """Only invalid records quote their line back."""
    assert only(f"{RUN}\n".encode()).text == ""


# --- long lines -----------------------------------------------------------------------------


def test_a_line_over_64_kib_is_one_invalid_record() -> None:
    """A line one byte past the limit is invalid, and the next line is read normally."""
    data = b"a" * (MAX_LINE_BYTES + 1) + b"\n" + RUN.encode() + b"\n"
    records = read(data)
    assert [(r.line, r.run_id) for r in records] == [(1, None), (2, RUN)]
    assert records[0].error == (
        f"line is {MAX_LINE_BYTES + 2} bytes long; a run ID line is at most {MAX_LINE_BYTES} bytes"
    )


def test_a_line_of_exactly_the_limit_is_read_as_usual() -> None:
    """The limit itself is allowed: such a line is judged on its content."""
    record = only(b"a" * MAX_LINE_BYTES + b"\n")
    assert record.error is not None
    assert record.error.startswith(NOT_A_RUN_ID)


def test_a_line_of_several_megabytes_is_skipped_without_being_held_whole() -> None:
    """A multi-megabyte line is read in bounded pieces and yields exactly one record."""
    huge = b"7" * (5 * 1024 * 1024)
    stream = RecordingStream(f"{RUN}\n".encode() + huge + f"\n{RUN_2}".encode())
    records = list(RecordReader(["-"], RunIdValidator(), stdin=stream))
    assert [(r.line, r.run_id) for r in records] == [(1, RUN), (2, None), (3, RUN_2)]
    assert records[1].error is not None
    assert records[1].error.startswith(f"line is {len(huge) + 1} bytes long")
    assert max(stream.sizes) <= MAX_LINE_BYTES + 1


def test_an_over_long_last_line_without_newline_is_one_invalid_record() -> None:
    """An over-long line cut by the end of input still yields exactly one record."""
    records = read(RUN.encode() + b"\n" + b"z" * 100, max_line_bytes=40)
    assert [(r.line, r.run_id is None) for r in records] == [(1, False), (2, True)]


@pytest.mark.parametrize(
    "line",
    [
        b"#" + b"-" * 200,
        b" " * 200,
        b"   \t" * 50 + b"# late comment" + b"=" * 100,
        BOM + b" " * 90,
    ],
    ids=["comment", "blank", "indented-comment", "bom-blank"],
)
def test_an_over_long_comment_or_blank_line_is_skipped(line: bytes) -> None:
    """A long comment or blank line is skipped like a short one, not reported as invalid."""
    records = read(line + b"\n" + RUN.encode() + b"\n", max_line_bytes=64)
    assert [(r.line, r.run_id) for r in records] == [(2, RUN)]


# --- sources --------------------------------------------------------------------------------


def test_empty_input_yields_nothing() -> None:
    """No input, no records, no error."""
    assert read(b"") == []


def test_only_comments_and_blanks_yield_nothing() -> None:
    """A file of comments has no records."""
    assert read(b"# a\n\n#b\r\n   \n") == []


def test_line_numbers_restart_in_each_of_several_files(tmp_path: Path) -> None:
    """Every record names its own file and its line within that file."""
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    first.write_bytes(f"# header\n{RUN}\n\n{RUN_2}\n".encode())
    second.write_bytes(f"oops\n{RUN_3}".encode())
    stdin = io.BytesIO(b"\n\nnope\n")
    reader = RecordReader([str(first), "-", str(second)], RunIdValidator(), stdin=stdin)
    records = list(reader)
    assert [(Path(r.source).name, r.line, r.run_id) for r in records] == [
        ("first.txt", 2, RUN),
        ("first.txt", 4, RUN_2),
        ("-", 3, None),
        ("second.txt", 1, None),
        ("second.txt", 2, RUN_3),
    ]
    assert reader.lines_read == 9


def test_no_paths_means_stdin() -> None:
    """Without paths the reader reads stdin."""
    reader = RecordReader([], RunIdValidator(), stdin=io.BytesIO(RUN.encode()))
    assert [r.source for r in reader] == ["-"]


def test_read_batch_returns_bounded_batches_then_an_empty_list() -> None:
    """read_batch hands out at most ``size`` records; an empty list means the end."""
    data = "\n".join([RUN, RUN_2, RUN_3, "x", "y"]).encode()
    reader = RecordReader(["-"], RunIdValidator(), stdin=io.BytesIO(data))
    sizes = [len(reader.read_batch(2)) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]


def test_reader_repr_shows_paths_and_progress() -> None:
    """The repr of a reader shows where it reads from and how far it got."""
    reader = RecordReader(["-"], RunIdValidator(), stdin=io.BytesIO(f"{RUN}\n".encode()))
    list(reader)
    assert repr(reader) == "RecordReader(paths=['-'], lines_read=1)"


def test_reading_a_vanished_file_is_an_input_error(tmp_path: Path) -> None:
    """A file removed after the check fails with one clear line, not a traceback."""
    reader = RecordReader([str(tmp_path / "gone.txt")], RunIdValidator())
    with pytest.raises(InputError, match="cannot read input"):
        list(reader)


# --- check_input_paths ----------------------------------------------------------------------


def test_check_input_paths_accepts_readable_files_and_stdin(tmp_path: Path) -> None:
    """Readable files and ``-`` pass the check."""
    path = tmp_path / "ids.txt"
    path.write_text(RUN)
    check_input_paths([str(path), "-"])


def test_check_input_paths_refuses_a_missing_file(tmp_path: Path) -> None:
    """A missing file is named in the error."""
    missing = tmp_path / "missing.txt"
    with pytest.raises(InputError, match=f"input file not found: {re.escape(str(missing))}"):
        check_input_paths(["-", str(missing)])


def test_check_input_paths_refuses_a_directory(tmp_path: Path) -> None:
    """A directory is not an input file."""
    with pytest.raises(InputError, match="input is a directory"):
        check_input_paths([str(tmp_path)])


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read every file"
)
def test_check_input_paths_refuses_an_unreadable_file(tmp_path: Path) -> None:
    """A file without read permission is refused before the batch starts."""
    path = tmp_path / "secret.txt"
    path.write_text(RUN)
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="permission denied"):
            check_input_paths([str(path)])
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_check_input_paths_refuses_a_file_access_denies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The permission check itself runs even as root, by faking what os.access answers."""
    path = tmp_path / "ids.txt"
    path.write_text(RUN)
    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    with pytest.raises(InputError, match=f"cannot read input {re.escape(str(path))}"):
        check_input_paths([str(path)])


# --- custom patterns ------------------------------------------------------------------------


def test_custom_pattern_accepts_its_ids_without_folding_case() -> None:
    """A custom pattern may describe case-sensitive IDs: they are kept as written."""
    records = read(b"ABC-1234\nabc-1234\n", pattern=r"[A-Z]{3}-\d{4}")
    assert [(r.run_id, r.error is None) for r in records] == [("ABC-1234", True), (None, False)]


def test_custom_pattern_still_refuses_non_ascii_digits() -> None:
    """``\\d`` matches Arabic-Indic digits in Python; such IDs are refused all the same."""
    record = only("ABC-\u0661\u0662\u0663\u0664\n".encode(), pattern=r"[A-Z]{3}-\d{4}")
    assert record.run_id is None


def test_custom_pattern_still_folds_upper_case_uuids() -> None:
    """UUID-shaped IDs are folded to lower case before a custom pattern sees them."""
    record = only(RUN.upper().encode(), pattern=r"[0-9a-f-]{36}")
    assert record.run_id == RUN


def test_validator_repr_shows_its_pattern() -> None:
    """The validator's repr shows the pattern it checks against."""
    assert repr(RunIdValidator(r"\w+")) == "RunIdValidator(pattern='\\\\w+')"


# --- every line accounted for ---------------------------------------------------------------

PIECES = [
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"#",
    b"{",
    b"}",
    b'"run_id": ',
    b'"',
    BOM,
    RUN.encode(),
    RUN.upper().encode(),
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"x",
    b"-",
    b"/",
]


def expected_record_count(data: bytes) -> int:
    """Count the lines that are neither blank nor comments, as a reader of the docs would."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    count = 0
    for number, line in enumerate(lines, start=1):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            count += 1
    return count


LINE_STARTS = [b"", b" ", b"\t", b"#", b"  #", BOM, BOM + b"#", b"{"]
LINES = st.builds(
    lambda start, pieces, end: start + b"".join(pieces) + end,
    st.sampled_from(LINE_STARTS),
    st.lists(st.sampled_from(PIECES[2:]), max_size=8),
    st.sampled_from([b"\n", b"\r\n", b" \n", b""]),
)


@given(
    data=st.lists(LINES, max_size=12).map(b"".join)
    | st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join)
    | st.binary(max_size=300),
    limit=st.sampled_from([16, 48, MAX_LINE_BYTES]),
)
def test_every_non_blank_non_comment_line_yields_exactly_one_record(
    data: bytes, limit: int
) -> None:
    """Whatever the bytes, records match lines one to one and every valid ID is a UUID."""
    reader = RecordReader(["-"], RunIdValidator(), stdin=io.BytesIO(data), max_line_bytes=limit)
    records = list(reader)
    assert len(records) == expected_record_count(data)
    assert [r.line for r in records] == sorted({r.line for r in records})
    for record in records:
        assert (record.run_id is None) != (record.error is None)
        if record.run_id is not None:
            assert re.fullmatch(DEFAULT_RUN_ID_PATTERN, record.run_id)
