"""Tests of bulkretry._model: the JSON-lines schema of a results line, and the Answer value."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import orjson
import pytest

from bulkretry._model import Answer, ErrorInfo, Outcome, RunResult, utc_now_iso

RUN = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
NEW_RUN = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
SCHEMA_KEYS = [
    "run_id",
    "outcome",
    "new_run_id",
    "etag",
    "prior_outcome",
    "http_status",
    "attempts",
    "ambiguous_attempts",
    "error",
    "request_id",
    "finished_at",
    "source",
    "line",
]
ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def test_a_success_line_has_exactly_the_documented_keys_in_order() -> None:
    """Every results line carries the thirteen schema keys, in the documented order."""
    result = RunResult(
        run_id=RUN,
        outcome=Outcome.RETRIGGERED,
        new_run_id=NEW_RUN,
        etag='"1a00"',
        http_status=200,
        attempts=1,
        request_id="req-1",
        finished_at="2025-04-08T10:00:00.000Z",
        source="ids.txt",
        line=3,
    )
    line = result.to_json_line()
    decoded = orjson.loads(line)
    assert list(decoded) == SCHEMA_KEYS
    assert decoded == {
        "run_id": RUN,
        "outcome": "retriggered",
        "new_run_id": NEW_RUN,
        "etag": '"1a00"',
        "prior_outcome": None,
        "http_status": 200,
        "attempts": 1,
        "ambiguous_attempts": 0,
        "error": None,
        "request_id": "req-1",
        "finished_at": "2025-04-08T10:00:00.000Z",
        "source": "ids.txt",
        "line": 3,
    }


def test_a_minimal_line_still_has_every_key() -> None:
    """Fields without a value are written as null (or zero), never left out."""
    decoded = orjson.loads(RunResult(run_id=RUN, outcome=Outcome.INVALID).to_json_line())
    assert list(decoded) == SCHEMA_KEYS
    assert decoded["new_run_id"] is None
    assert decoded["prior_outcome"] is None
    assert decoded["attempts"] == 0


def test_a_skipped_line_carries_the_outcome_and_new_run_of_the_line_it_stands_for() -> None:
    """prior_outcome, new_run_id and etag of a skipped line say what became of its run."""
    result = RunResult(
        run_id=RUN,
        outcome=Outcome.SKIPPED,
        new_run_id=NEW_RUN,
        etag='"1a00"',
        prior_outcome="retriggered",
    )
    decoded = orjson.loads(result.to_json_line())
    assert (decoded["outcome"], decoded["prior_outcome"]) == ("skipped", "retriggered")
    assert (decoded["new_run_id"], decoded["etag"]) == (NEW_RUN, '"1a00"')


def test_error_object_has_kind_message_and_adobes_code_and_type() -> None:
    """An error keeps Adobe's code and type next to its kind and message, in that order."""
    error = ErrorInfo(
        kind="http",
        message="HTTP 404: Run not found",
        error_code="FLOW-1101-404",
        type="https://ns.adobe.com/aep/errors/FLOW-1101-404",
    )
    decoded = orjson.loads(
        RunResult(run_id=RUN, outcome=Outcome.FAILED, error=error).to_json_line()
    )
    assert list(decoded["error"]) == ["kind", "message", "error_code", "type"]
    assert decoded["error"]["error_code"] == "FLOW-1101-404"


def test_error_object_leaves_out_what_the_api_did_not_send() -> None:
    """Without an Adobe code or type, the error has only kind and message."""
    error = ErrorInfo(kind="network", message="cannot connect")
    assert error.as_dict() == {"kind": "network", "message": "cannot connect"}


def test_finished_at_defaults_to_now_in_iso_8601_utc_with_a_z() -> None:
    """Without a time given, finished_at is now, in UTC, with milliseconds and a Z."""
    before = time.time()
    decoded = orjson.loads(RunResult(run_id=RUN, outcome=Outcome.FAILED).to_json_line())
    after = time.time()
    stamp = decoded["finished_at"]
    assert ISO_UTC.fullmatch(stamp)
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert before - 0.001 <= moment <= after


def test_utc_now_iso_uses_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timestamp is UTC even when the process runs in another time zone."""
    monkeypatch.setenv("TZ", "IST-5:30")  # a POSIX zone string: needs no tzdata
    time.tzset()
    try:
        monkeypatch.setattr(time, "time", lambda: 1744106400.25)
        assert utc_now_iso() == "2025-04-08T10:00:00.250Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_line_is_one_line_ending_in_a_newline() -> None:
    """Newlines inside values are escaped, so one result is always exactly one line."""
    error = ErrorInfo(kind="http", message="HTTP 500: line one\nline two\r\n")
    line = RunResult(
        run_id=RUN, outcome=Outcome.FAILED, error=error, source="a\nb.txt"
    ).to_json_line()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_is_written_as_its_documented_name(outcome: Outcome) -> None:
    """The outcome field is the enum's value, a plain lower-case word."""
    decoded = orjson.loads(RunResult(run_id=RUN, outcome=outcome).to_json_line())
    assert decoded["outcome"] == outcome.value
    assert re.fullmatch(r"[a-z_]+", decoded["outcome"])


def test_answer_is_a_kernel_value_the_client_still_hands_out() -> None:
    """Answer lives in the kernel; importers of the client's name get the very same class."""
    from bulkretry._http import client

    assert client.Answer is Answer
    answer = Answer(status=429, retry_after="7")
    assert (answer.body, answer.body_problem, answer.request_id) == (None, None, None)
