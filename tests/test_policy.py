"""Tests of bulkretry._policy: every row of the three decision tables, Retry-After, jitter, give-up.

The re-trigger (POST) first, then a GET (a listing page, a look-up), then an IMS token request.
"""

from __future__ import annotations

import email.utils
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkretry._config import Settings
from bulkretry._exceptions import TransportError
from bulkretry._model import Answer
from bulkretry._policy import (
    Action,
    Decision,
    adobe_error,
    backoff_delay,
    decide,
    decide_read,
    decide_token,
    parse_retry_after,
)
from bulkretry._retry import Limits

NEW_RUN = "3fb0418e-1804-45d6-8d56-dd51f05c0baf"
ETAG = '"0b00c1a4-0000-0200-0000-5ebc4c8b0000"'
#: 2015-10-21T07:28:00Z, the wall clock every test sees unless it says otherwise.
WALL_NOW = 1445412480.0

THROTTLED_BODY = {"error_code": "429050", "message": "Too many requests"}
TOKEN_EXPIRED_BODY = {"error_code": "401013", "message": "Oauth token is not valid"}
HTML_BODY_PROBLEM = "the body is HTML, not JSON"
#: What a hostile server writes to clear the screen and ring the bell.
HOSTILE = "\x1b[2J\x07"


def assert_safe(text: str | None) -> None:
    """Server text that reached a message is one printable line: no ESC, no BEL, no newline."""
    assert text is not None
    assert "\x1b" not in text
    assert "\x07" not in text
    assert text.isprintable(), repr(text)


def flow_error(code: str, status: int, message: str = "boom") -> dict[str, Any]:
    """Return a body in Flow Service's error format (see reference/README.md)."""
    return {
        "type": f"https://ns.adobe.com/aep/errors/FLOW-{code}-{status}",
        "title": "Flow Service error",
        "status": status,
        "report": {"detailed-message": message, "request-id": "req-7f3a"},
    }


def run(
    outcome: Answer | TransportError,
    *,
    attempt: int = 1,
    ambiguous_before: int = 0,
    elapsed: float = 0.0,
    seed: int = 0,
    wall_now: float = WALL_NOW,
    **overrides: Any,
) -> Decision:
    """Call decide with defaults a test only overrides where it matters."""
    return decide(
        outcome,
        attempt=attempt,
        ambiguous_before=ambiguous_before,
        elapsed=elapsed,
        settings=Settings(**overrides),
        rng=random.Random(seed),
        wall_now=wall_now,
    )


def http_date(timestamp: float) -> str:
    """Format ``timestamp`` as an RFC 9110 IMF-fixdate."""
    return email.utils.formatdate(timestamp, usegmt=True)


# --- 2xx ------------------------------------------------------------------------------------


def test_2xx_with_id_and_etag_succeeds_with_both() -> None:
    """The re-trigger page's {"id","etag"} body gives the new run ID and its etag."""
    decision = run(Answer(status=200, body={"id": NEW_RUN, "etag": ETAG}))
    assert decision.action is Action.SUCCEED
    assert decision.new_run_id == NEW_RUN
    assert decision.etag == ETAG
    assert decision.error is None


def test_2xx_with_a_whole_run_object_reads_its_camel_case_etag() -> None:
    """The spec's full run object, whose etag is spelt eTag, is a success."""
    body = {
        "id": NEW_RUN,
        "flowId": "2edc08ac-4df5-4fe6-936f-81a19ce92f5c",
        "eTag": ETAG,
        "metrics": {"statusSummary": {"status": "pending"}},
        "createdAt": 1589463982357,
    }
    decision = run(Answer(status=201, body=body))
    assert decision.action is Action.SUCCEED
    assert (decision.new_run_id, decision.etag) == (NEW_RUN, ETAG)


def test_2xx_with_an_items_list_takes_the_first_item() -> None:
    """The on-demand shape {"items":[{"id","etag"}]} is a success."""
    decision = run(Answer(status=202, body={"items": [{"id": NEW_RUN, "etag": ETAG}]}))
    assert decision.action is Action.SUCCEED
    assert (decision.new_run_id, decision.etag) == (NEW_RUN, ETAG)


def test_2xx_without_etag_in_the_body_falls_back_to_the_etag_header() -> None:
    """An ETag header stands in for an etag the body does not carry."""
    decision = run(Answer(status=200, body={"id": NEW_RUN}, etag_header=ETAG))
    assert decision.action is Action.SUCCEED
    assert decision.etag == ETAG


def test_2xx_with_a_null_etag_still_succeeds() -> None:
    """A null etag is not a reason to doubt the new run ID."""
    decision = run(Answer(status=200, body={"id": NEW_RUN, "etag": None}))
    assert decision.action is Action.SUCCEED
    assert decision.new_run_id == NEW_RUN
    assert decision.etag is None


def test_2xx_with_a_null_etag_uses_the_etag_header() -> None:
    """A null etag in the body gives way to the ETag header."""
    decision = run(Answer(status=200, body={"id": NEW_RUN, "etag": None}, etag_header=ETAG))
    assert decision.etag == ETAG


@pytest.mark.parametrize(
    "body",
    [
        {"etag": ETAG},
        {"id": ""},
        {"id": 12345},
        {"id": None},
        {"items": []},
        {"items": [{"etag": ETAG}]},
        {"items": ["not an object"]},
        [{"id": NEW_RUN}],
        "ok",
    ],
)
def test_2xx_without_a_new_run_id_is_in_doubt_as_bad_response(body: Any) -> None:
    """A 2xx naming no new run may have re-triggered it: ``in_doubt``, ``bad_response``."""
    decision = run(Answer(status=200, body=body), on_ambiguous="retry")
    assert decision.action is Action.IN_DOUBT
    assert decision.ambiguous
    assert decision.error is not None
    assert decision.error.kind == "bad_response"
    assert "HTTP 200 without a new run ID" in decision.error.message


@pytest.mark.parametrize("on_ambiguous", ["retry", "hold"])
@pytest.mark.parametrize("attempt", [1, 2, 6])
def test_2xx_without_a_new_run_id_is_never_retried(on_ambiguous: str, attempt: int) -> None:
    """Whatever the setting and attempt, a 2xx without an ID is never sent again."""
    decision = run(
        Answer(status=204, body_problem="the body is empty"),
        attempt=attempt,
        on_ambiguous=on_ambiguous,
    )
    assert decision.action is Action.IN_DOUBT
    assert decision.delay == 0.0


@pytest.mark.parametrize(
    "problem", [HTML_BODY_PROBLEM, "the body is empty", "the body is not valid JSON"]
)
def test_2xx_with_an_unreadable_body_is_in_doubt_naming_the_problem(problem: str) -> None:
    """HTML, empty or non-JSON 2xx bodies are ``in_doubt``, ``bad_response``, saying why."""
    decision = run(Answer(status=200, body=None, body_problem=problem))
    assert decision.action is Action.IN_DOUBT
    assert decision.error is not None
    assert decision.error.kind == "bad_response"
    assert problem in decision.error.message


# --- 3xx ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_3xx_fails_without_following_the_redirect(status: int) -> None:
    """A redirect to a POST is reported, never followed and never retried."""
    location = "https://elsewhere.example/runs"
    decision = run(Answer(status=status, location=location, body_problem="the body is empty"))
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.kind == "http"
    assert location in decision.error.message


# --- 429 and 503 ----------------------------------------------------------------------------


def test_429_with_delay_seconds_retry_after_waits_at_least_that_long() -> None:
    """Retry-After: 7 makes the next attempt wait 7 s or more, and slows the throttle."""
    decision = run(Answer(status=429, body=THROTTLED_BODY, retry_after="7"))
    assert decision.action is Action.RETRY
    assert decision.retry_after == 7.0
    assert decision.delay >= 7.0
    assert decision.throttled
    assert not decision.ambiguous
    assert decision.error is not None
    assert decision.error.error_code == "429050"
    assert decision.error.message == "HTTP 429: Too many requests"


def test_429_with_http_date_retry_after_waits_until_that_date() -> None:
    """An HTTP-date Retry-After is measured against the injected wall clock."""
    decision = run(Answer(status=429, body=THROTTLED_BODY, retry_after=http_date(WALL_NOW + 30)))
    assert decision.action is Action.RETRY
    assert decision.retry_after == pytest.approx(30.0)
    assert decision.delay >= 30.0


def test_429_without_retry_after_backs_off_and_slows_the_throttle() -> None:
    """Without Retry-After a 429 still retries after a jittered backoff and throttles."""
    decision = run(Answer(status=429, body=THROTTLED_BODY), attempt=3, backoff_base=2.0)
    assert decision.action is Action.RETRY
    assert decision.retry_after is None
    assert decision.throttled
    assert 0.0 <= decision.delay <= 8.0


@pytest.mark.parametrize(
    "value", ["soon", "1.5", "-3", "", "  ", "+5", "0x10", "\u00b2", "\u0661\u0662"]
)
def test_429_with_an_invalid_retry_after_backs_off_as_if_absent(value: str) -> None:
    """A Retry-After that is neither delay-seconds nor an HTTP-date is ignored."""
    decision = run(Answer(status=429, body=THROTTLED_BODY, retry_after=value), backoff_base=0.5)
    assert decision.action is Action.RETRY
    assert decision.retry_after is None
    assert 0.0 <= decision.delay <= 0.5


def test_429_with_retry_after_beyond_the_cap_halts_the_batch() -> None:
    """Asked to wait past retry_after_cap, the batch stops instead of retrying early."""
    decision = run(
        Answer(status=429, body=THROTTLED_BODY, retry_after="3600"), retry_after_cap=900.0
    )
    assert decision.action is Action.HALT
    assert decision.halt_reason is not None
    assert "3600 s" in decision.halt_reason
    assert "900 s cap" in decision.halt_reason


def test_429_with_an_http_date_beyond_the_cap_halts_the_batch() -> None:
    """A far-off HTTP-date halts just as a large delay-seconds does."""
    retry_after = http_date(WALL_NOW + 7200)
    decision = run(Answer(status=429, body=THROTTLED_BODY, retry_after=retry_after))
    assert decision.action is Action.HALT


def test_429_with_retry_after_equal_to_the_cap_still_retries() -> None:
    """The cap itself is allowed; only a longer wait halts."""
    decision = run(Answer(status=429, retry_after="60"), retry_after_cap=60.0)
    assert decision.action is Action.RETRY
    assert decision.delay >= 60.0


def test_503_with_retry_after_retries_after_it_and_throttles() -> None:
    """A 503 that names a wait is treated as throttling."""
    body = flow_error("1103", 503, "Service unavailable, try again")
    decision = run(Answer(status=503, body=body, retry_after="12"))
    assert decision.action is Action.RETRY
    assert decision.delay >= 12.0
    assert decision.throttled
    assert not decision.ambiguous
    assert decision.error is not None
    assert decision.error.error_code == "FLOW-1103-503"


def test_503_without_retry_after_retries_without_throttling() -> None:
    """A bare 503 backs off but does not slow the shared throttle."""
    decision = run(Answer(status=503, body=flow_error("1103", 503)), backoff_base=1.0)
    assert decision.action is Action.RETRY
    assert not decision.throttled
    assert not decision.ambiguous
    assert 0.0 <= decision.delay <= 1.0


def test_503_is_retried_even_when_ambiguous_answers_are_held() -> None:
    """503 means not processed, so ``--on-ambiguous hold`` does not hold it."""
    decision = run(Answer(status=503), on_ambiguous="hold")
    assert decision.action is Action.RETRY


# --- 5xx that may have been processed -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, flow_error("1102", 500, "Internal error, try again")),
        (502, None),
        (504, flow_error("1104", 504, "Gateway timeout, try again")),
        (507, None),
        (599, None),
    ],
)
def test_ambiguous_5xx_is_retried_and_counted_as_ambiguous(status: int, body: Any) -> None:
    """500, 502, 504 and other 5xx may have re-triggered the run: retried, marked ambiguous."""
    decision = run(Answer(status=status, body=body), on_ambiguous="retry")
    assert decision.action is Action.RETRY
    assert decision.ambiguous
    assert not decision.throttled


@pytest.mark.parametrize("status", [500, 502, 504, 507])
def test_ambiguous_5xx_is_held_in_doubt_by_default(status: int) -> None:
    """With no setting given, an ambiguous answer is held ``in_doubt``, never sent again."""
    decision = run(Answer(status=status))
    assert decision.action is Action.IN_DOUBT
    assert decision.ambiguous
    assert decision.delay == 0.0


def test_timeout_after_sending_is_held_in_doubt_by_default() -> None:
    """With no setting given, a timeout after sending is held ``in_doubt``."""
    decision = run(TransportError("timed out", kind="timeout", sent=True))
    assert decision.action is Action.IN_DOUBT
    assert decision.ambiguous


@pytest.mark.parametrize("status", [500, 502, 504])
def test_ambiguous_5xx_is_held_in_doubt_under_hold(status: int) -> None:
    """With ``--on-ambiguous hold`` an ambiguous answer ends the record ``in_doubt`` at once."""
    decision = run(Answer(status=status, body=flow_error("1102", 500)), on_ambiguous="hold")
    assert decision.action is Action.IN_DOUBT
    assert decision.ambiguous
    assert decision.error is not None
    assert decision.error.kind == "http"


def test_500_message_quotes_flow_services_detailed_message() -> None:
    """The error message carries Flow Service's detailed-message and its code."""
    body = flow_error("1102", 500, "Internal error, try again")
    decision = run(Answer(status=500, body=body))
    assert decision.error is not None
    assert decision.error.message == "HTTP 500: Internal error, try again"
    assert decision.error.error_code == "FLOW-1102-500"
    assert decision.error.type == "https://ns.adobe.com/aep/errors/FLOW-1102-500"


@pytest.mark.parametrize("status", [501, 505])
def test_501_and_505_fail_without_retry(status: int) -> None:
    """The server cannot do this at all: failing is the only honest outcome."""
    decision = run(Answer(status=status))
    assert decision.action is Action.FAIL
    assert not decision.ambiguous


# --- below HTTP -----------------------------------------------------------------------------


def test_connect_failure_is_retried_as_not_ambiguous() -> None:
    """A request that never left (sent=False) is safe to retry."""
    error = TransportError("cannot connect", kind="network", sent=False)
    decision = run(error, on_ambiguous="hold")
    assert decision.action is Action.RETRY
    assert not decision.ambiguous
    assert decision.error is not None
    assert decision.error.kind == "network"
    assert decision.error.message == "cannot connect"


@pytest.mark.parametrize("kind", ["timeout", "network"])
def test_timeout_or_reset_after_sending_is_retried_as_ambiguous(kind: str) -> None:
    """A request that may have arrived (sent=True) counts as ambiguous, like a 500."""
    decision = run(TransportError("lost", kind=kind, sent=True), on_ambiguous="retry")
    assert decision.action is Action.RETRY
    assert decision.ambiguous
    assert decision.error is not None
    assert decision.error.kind == kind


def test_timeout_after_sending_is_held_in_doubt_under_hold() -> None:
    """Under ``hold``, a timeout after sending ends the record ``in_doubt``."""
    decision = run(TransportError("timed out", kind="timeout", sent=True), on_ambiguous="hold")
    assert decision.action is Action.IN_DOUBT
    assert decision.ambiguous


# --- 4xx ------------------------------------------------------------------------------------

STATE_CONFLICTS = [
    (409, None),
    (400, flow_error("1409", 400, "Operation not allowed in the current state")),
    (400, flow_error("1422", 400, "Run is not in a failed state")),
    (400, flow_error("1444", 400, "Operation not allowed")),
]


@pytest.mark.parametrize(("status", "body"), STATE_CONFLICTS)
def test_state_conflict_without_an_earlier_ambiguous_attempt_fails(status: int, body: Any) -> None:
    """409 or 400 1409/1422/1444 on a clean history: the run cannot be re-triggered."""
    decision = run(Answer(status=status, body=body), ambiguous_before=0)
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.kind == "http"
    if body is not None:
        assert decision.error.error_code == body["type"].rsplit("/", 1)[1]


@pytest.mark.parametrize(("status", "body"), STATE_CONFLICTS)
def test_state_conflict_after_an_ambiguous_attempt_is_in_doubt(status: int, body: Any) -> None:
    """The same answer after an ambiguous attempt is evidence that attempt went through."""
    decision = run(Answer(status=status, body=body), attempt=2, ambiguous_before=1)
    assert decision.action is Action.IN_DOUBT
    assert decision.error is not None
    assert "earlier ambiguous attempt" in decision.error.message


# --- after an ambiguous attempt: never failed -------------------------------------------------

#: Every answer that fails a record on a clean history, with the ``error_code`` it keeps.
REFUSALS = [
    (Answer(status=302, location="https://elsewhere.example/runs"), None),
    (Answer(status=400, body=flow_error("1000", 400, "Bad request")), "FLOW-1000-400"),
    (Answer(status=400, body={"error_code": "400003", "message": "org missing"}), "400003"),
    (Answer(status=404, body=flow_error("1101", 404, "Run not found")), "FLOW-1101-404"),
    (Answer(status=409), None),
    (Answer(status=400, body=flow_error("1422", 400, "Not failed")), "FLOW-1422-400"),
    (Answer(status=422, body=flow_error("1422", 422, "Unprocessable")), "FLOW-1422-422"),
    (Answer(status=410), None),
    (Answer(status=501), None),
    (Answer(status=505), None),
]


@pytest.mark.parametrize(("answer", "code"), REFUSALS, ids=lambda v: getattr(v, "status", v))
def test_a_refusal_fails_a_record_that_was_never_ambiguous(
    answer: Answer, code: str | None
) -> None:
    """3xx, 4xx, 501 and 505 on a clean history: known not processed, so ``failed``."""
    decision = run(answer, ambiguous_before=0)
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.error_code == code
    assert "earlier" not in decision.error.message


@pytest.mark.parametrize(("answer", "code"), REFUSALS, ids=lambda v: getattr(v, "status", v))
def test_a_refusal_after_an_ambiguous_attempt_is_in_doubt_never_failed(
    answer: Answer, code: str | None
) -> None:
    """Once an attempt may have re-triggered the run, a refusal cannot prove it was not."""
    clean = run(answer, ambiguous_before=0)
    decision = run(answer, attempt=2, ambiguous_before=1)
    assert decision.action is Action.IN_DOUBT
    assert decision.error is not None
    assert clean.error is not None
    assert (decision.error.kind, decision.error.error_code) == ("http", code)
    assert decision.error.type == clean.error.type
    assert decision.error.message.startswith(clean.error.message)
    assert "an earlier ambiguous attempt" in decision.error.message
    assert "re-triggered the run" in decision.error.message


def test_a_2xx_without_an_id_after_an_ambiguous_attempt_says_so() -> None:
    """The bad_response message also names the earlier ambiguous attempt."""
    decision = run(Answer(status=200, body={}), attempt=2, ambiguous_before=1)
    assert decision.action is Action.IN_DOUBT
    assert decision.error is not None
    assert decision.error.kind == "bad_response"
    assert "may have re-triggered the run" in decision.error.message


@pytest.mark.parametrize(
    "outcome",
    [
        Answer(status=503),
        Answer(status=429, body=THROTTLED_BODY),
        TransportError("cannot connect", kind="network", sent=False),
    ],
    ids=["503", "429", "not sent"],
)
def test_giving_up_after_an_ambiguous_attempt_is_in_doubt_and_says_why(
    outcome: Answer | TransportError,
) -> None:
    """A safe failure at max attempts or the deadline, after an ambiguous one, is in doubt."""
    at_max = run(outcome, attempt=3, max_attempts=3, ambiguous_before=1)
    at_deadline = run(outcome, elapsed=900.0, deadline=900.0, ambiguous_before=1)
    for decision, why in [(at_max, "gave up after 3 attempts"), (at_deadline, "deadline")]:
        assert decision.action is Action.IN_DOUBT
        assert decision.error is not None
        assert why in decision.error.message
        assert "an earlier ambiguous attempt may have re-triggered the run" in (
            decision.error.message
        )


@pytest.mark.parametrize(
    "outcome",
    [
        Answer(status=401, body=TOKEN_EXPIRED_BODY),
        Answer(status=403),
        Answer(status=400, body=flow_error("1434", 400)),
        Answer(status=404, body=None, body_problem="the body is empty"),
        Answer(status=429, retry_after="86400"),
        TransportError("bad certificate", kind="tls", sent=False),
    ],
    ids=["401", "403", "1434", "404 foreign", "Retry-After", "tls"],
)
def test_a_halt_stays_a_halt_after_an_ambiguous_attempt(outcome: Answer | TransportError) -> None:
    """What stops the whole batch still stops it; the engine reports the record in_doubt."""
    decision = run(outcome, attempt=2, ambiguous_before=1)
    assert decision.action is Action.HALT


@given(
    status=st.integers(100, 999),
    body=st.none() | st.sampled_from([{}, {"id": NEW_RUN}, flow_error("1422", 400)]),
    attempt=st.integers(min_value=1, max_value=8),
    ambiguous_before=st.integers(min_value=1, max_value=3),
    on_ambiguous=st.sampled_from(["retry", "hold"]),
    transport=st.none() | st.sampled_from(["timeout", "network"]),
    sent=st.booleans(),
)
def test_nothing_after_an_ambiguous_attempt_ends_failed(
    status: int,
    body: Any,
    attempt: int,
    ambiguous_before: int,
    on_ambiguous: str,
    transport: str | None,
    sent: bool,
) -> None:
    """Once an attempt was ambiguous, no answer or error ends the record ``failed``."""
    outcome: Answer | TransportError = (
        Answer(status=status, body=body)
        if transport is None
        else TransportError("lost", kind=transport, sent=sent)
    )
    decision = run(
        outcome,
        attempt=attempt,
        ambiguous_before=ambiguous_before,
        on_ambiguous=on_ambiguous,
        max_attempts=4,
    )
    assert decision.action is not Action.FAIL


def test_400_1434_halts_and_suggests_the_other_op_spelling() -> None:
    """Unsupported operation: every record would fail, so the batch stops and says why."""
    body = flow_error("1434", 400, "Unsupported operation")
    decision = run(Answer(status=400, body=body), op="re-trigger")
    assert decision.action is Action.HALT
    assert decision.halt_reason is not None
    assert "try --op RE_TRIGGER" in decision.halt_reason
    assert decision.error is not None
    assert decision.error.error_code == "FLOW-1434-400"


def test_400_1434_with_the_enum_op_suggests_the_documented_spelling() -> None:
    """Already using RE_TRIGGER, the suggestion is the docs' re-trigger."""
    decision = run(Answer(status=400, body=flow_error("1434", 400)), op="RE_TRIGGER")
    assert decision.action is Action.HALT
    assert decision.halt_reason is not None
    assert "try --op re-trigger" in decision.halt_reason


def test_401_401013_halts_and_asks_for_a_new_token() -> None:
    """An expired token halts (unless renewed) and is flagged ``token_expired``."""
    decision = run(Answer(status=401, body=TOKEN_EXPIRED_BODY))
    assert decision.action is Action.HALT
    assert decision.token_expired
    assert decision.error is not None
    assert decision.error.error_code == "401013"
    assert decision.halt_reason is not None
    assert "Oauth token is not valid" in decision.halt_reason


def test_401_with_another_code_halts_without_token_renewal() -> None:
    """Only 401013 says the token expired; other 401s halt outright."""
    decision = run(Answer(status=401, body={"error_code": "401000", "message": "Unauthorized"}))
    assert decision.action is Action.HALT
    assert not decision.token_expired


@pytest.mark.parametrize(
    "body",
    [
        {"error_code": "403010", "message": "Oauth token is missing"},
        {"error_code": "403000", "message": "Api Key is required"},
        {"error_code": "403003", "message": "Api Key is invalid"},
        None,
    ],
)
def test_403_halts_the_batch(body: Any) -> None:
    """Refused access will refuse every record alike: the batch stops."""
    decision = run(Answer(status=403, body=body))
    assert decision.action is Action.HALT
    assert not decision.token_expired
    assert decision.halt_reason is not None
    assert "check the token, API key, org and sandbox" in decision.halt_reason


def test_404_in_flow_service_format_fails_the_record() -> None:
    """Flow Service saying the run does not exist fails only that record."""
    body = flow_error("1101", 404, "Run not found")
    decision = run(Answer(status=404, body=body))
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.error_code == "FLOW-1101-404"
    assert decision.error.message == "HTTP 404: Run not found"


@pytest.mark.parametrize(
    ("body", "problem"),
    [(None, HTML_BODY_PROBLEM), (None, "the body is empty"), ({"detail": "Not Found"}, None)],
)
def test_404_in_any_other_format_halts_naming_the_base_url(body: Any, problem: str | None) -> None:
    """A 404 that is not Flow Service's means the base URL is wrong, for every record."""
    base_url = "https://platform.adobe.io/wrong/prefix"
    decision = run(Answer(status=404, body=body, body_problem=problem), base_url=base_url)
    assert decision.action is Action.HALT
    assert decision.halt_reason is not None
    assert base_url in decision.halt_reason


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, {"error_code": "400003", "message": "x-gw-ims-org-id is missing"}, "400003"),
        (400, flow_error("1000", 400, "Bad request"), "FLOW-1000-400"),
        (422, flow_error("1422", 422, "Unprocessable"), "FLOW-1422-422"),
        (410, None, None),
    ],
)
def test_other_4xx_fails_with_adobes_error_code(status: int, body: Any, code: str | None) -> None:
    """Any other client error fails the record and keeps Adobe's code in ``error``."""
    decision = run(Answer(status=status, body=body))
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.kind == "http"
    assert decision.error.error_code == code
    assert decision.error.message.startswith(f"HTTP {status}: ")


def test_other_4xx_is_never_retried_even_on_the_first_attempt() -> None:
    """A 400 is the request's fault: no delay, no retry."""
    decision = run(Answer(status=400, body=flow_error("1000", 400)), attempt=1)
    assert decision.action is Action.FAIL
    assert decision.delay == 0.0


# --- giving up ------------------------------------------------------------------------------


def test_max_attempts_reached_on_a_safe_failure_fails() -> None:
    """The last allowed attempt of a never-ambiguous record ends ``failed``."""
    decision = run(Answer(status=429, body=THROTTLED_BODY), attempt=6, max_attempts=6)
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert "gave up after 6 attempts" in decision.error.message
    assert decision.error.error_code == "429050"


def test_max_attempts_reached_after_an_earlier_ambiguous_attempt_is_in_doubt() -> None:
    """If any earlier attempt was ambiguous, giving up ends ``in_doubt``."""
    decision = run(Answer(status=503), attempt=3, max_attempts=3, ambiguous_before=1)
    assert decision.action is Action.IN_DOUBT


def test_max_attempts_reached_on_an_ambiguous_answer_is_in_doubt() -> None:
    """Giving up on an ambiguous last attempt ends ``in_doubt``."""
    decision = run(Answer(status=502), attempt=4, max_attempts=4, on_ambiguous="retry")
    assert decision.action is Action.IN_DOUBT
    assert decision.ambiguous


def test_connect_failure_at_max_attempts_fails() -> None:
    """A request that never left, on the last attempt, ends ``failed``."""
    error = TransportError("refused", kind="network", sent=False)
    decision = run(error, attempt=2, max_attempts=2)
    assert decision.action is Action.FAIL


def test_single_attempt_setting_never_retries() -> None:
    """max_attempts=1 gives up after the first retryable answer."""
    decision = run(Answer(status=503), attempt=1, max_attempts=1)
    assert decision.action is Action.FAIL


def test_wait_that_would_pass_the_deadline_gives_up() -> None:
    """elapsed + delay beyond the record's deadline gives up instead of waiting."""
    answer = Answer(status=429, body=THROTTLED_BODY, retry_after="100")
    decision = run(answer, elapsed=850.0, deadline=900.0)
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert "900 s deadline" in decision.error.message


def test_wait_that_would_pass_the_deadline_after_ambiguity_is_in_doubt() -> None:
    """Giving up at the deadline after an ambiguous attempt ends ``in_doubt``."""
    answer = Answer(status=503, retry_after="100")
    decision = run(answer, elapsed=850.0, deadline=900.0, ambiguous_before=2)
    assert decision.action is Action.IN_DOUBT


def test_wait_that_ends_exactly_at_the_deadline_is_allowed() -> None:
    """The deadline itself may be reached; only passing it gives up."""
    answer = Answer(status=429, retry_after="100")
    decision = run(answer, elapsed=800.0, deadline=900.0, backoff_base=0.0)
    assert decision.action is Action.RETRY
    assert decision.delay == 100.0


# --- backoff and Retry-After ----------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=3600.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_delay_is_always_within_full_jitter_bounds(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    """backoff_delay(n) lies in [0, min(cap, base·2^(n-1))], however large n grows."""
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 1000))
    assert 0.0 <= delay <= ceiling


def test_backoff_delay_is_reproducible_with_a_seeded_random() -> None:
    """The same seed gives the same waits, so a batch can be replayed."""
    first = [backoff_delay(n, base=1.0, cap=60.0, rng=random.Random(42)) for n in range(1, 9)]
    again = [backoff_delay(n, base=1.0, cap=60.0, rng=random.Random(42)) for n in range(1, 9)]
    assert first == again


def test_backoff_delay_uses_full_jitter_across_the_whole_range() -> None:
    """Full jitter spreads waits from near zero to near the ceiling, not around a midpoint."""
    rng = random.Random(7)
    delays = [backoff_delay(4, base=1.0, cap=60.0, rng=rng) for _ in range(2000)]
    assert max(delays) <= 8.0
    assert min(delays) < 0.1
    assert max(delays) > 7.9


def test_backoff_delay_stops_growing_at_the_cap() -> None:
    """Past the cap, the ceiling is the cap itself."""
    rng = random.Random(3)
    delays = [backoff_delay(30, base=1.0, cap=5.0, rng=rng) for _ in range(500)]
    assert max(delays) <= 5.0
    assert max(delays) > 4.9


@given(
    retry_after=st.integers(min_value=0, max_value=900),
    attempt=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_retry_after_is_the_delay_whatever_the_attempt(
    retry_after: int, attempt: int, seed: int
) -> None:
    """The wait is the server's Retry-After: never shorter, nor grown by earlier attempts; a
    Retry-After of 0 names no time, so the backoff it is (not a resend in a loop)."""
    answer = Answer(status=429, retry_after=str(retry_after))
    decision = run(answer, attempt=attempt, seed=seed, deadline=10_000.0, max_attempts=10)
    jitter = backoff_delay(attempt, base=1.0, cap=60.0, rng=random.Random(seed))
    assert decision.action is Action.RETRY
    assert decision.delay == (float(retry_after) if retry_after else jitter)


@given(
    status=st.sampled_from([200, 401, 404, 409, 429, 500, 503]) | st.integers(100, 999),
    retry_after=st.none() | st.text(max_size=40) | st.sampled_from(["\u00b2", "12"]),
    body=st.none()
    | st.dictionaries(
        st.sampled_from(["id", "etag", "eTag", "items", "error_code", "type", "message"]),
        st.none() | st.integers() | st.text(max_size=20),
        max_size=4,
    ),
    attempt=st.integers(min_value=1, max_value=8),
    ambiguous_before=st.integers(min_value=0, max_value=3),
)
def test_decide_returns_a_decision_for_any_answer(
    status: int, retry_after: str | None, body: Any, attempt: int, ambiguous_before: int
) -> None:
    """No status, header or body makes decide raise; a retry always has a finite wait."""
    decision = run(
        Answer(status=status, body=body, retry_after=retry_after),
        attempt=attempt,
        ambiguous_before=ambiguous_before,
    )
    assert isinstance(decision.action, Action)
    if decision.action is Action.RETRY:
        assert 0.0 <= decision.delay < float("inf")
    if decision.action is Action.HALT:
        assert decision.halt_reason
    if decision.action is not Action.SUCCEED:
        assert decision.error is not None


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("120", 120.0), (" 5 ", 5.0), ("007", 7.0)],
)
def test_parse_retry_after_reads_delay_seconds(value: str, seconds: float) -> None:
    """Delay-seconds are read as a number of seconds, surrounding blanks tolerated."""
    assert parse_retry_after(value, wall_now=WALL_NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 21 Oct 2015 07:28:45 GMT",  # IMF-fixdate
        "Wednesday, 21-Oct-15 07:28:45 GMT",  # obsolete RFC 850 form
        "Wed Oct 21 07:28:45 2015",  # obsolete asctime form, which carries no zone
    ],
)
def test_parse_retry_after_reads_all_three_http_date_forms(value: str) -> None:
    """RFC 9110 asks recipients to accept every HTTP-date form; all are GMT."""
    assert parse_retry_after(value, wall_now=WALL_NOW) == pytest.approx(45.0)


def test_parse_retry_after_with_a_past_date_means_now() -> None:
    """A date already passed asks for no wait, never a negative one."""
    assert parse_retry_after(http_date(WALL_NOW - 600), wall_now=WALL_NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "soon",
        "1.5",
        "-1",
        "1e3",
        "\u00b2",
        "\u0661\u0662",
        "\uff11\uff12",
        "Mon, 32 Jan 2025 00:00:00 GMT",
        "Fri, 01 Jan 99999 00:00:00 GMT",
    ],
)
def test_parse_retry_after_refuses_anything_else(value: str | None) -> None:
    """Invalid values, including non-ASCII digits and impossible dates, give None."""
    assert parse_retry_after(value, wall_now=WALL_NOW) is None


#: Header text, with a bias towards what looks like digits in any script.
RETRY_AFTER_TEXT = st.text(
    st.characters(categories=("Nd", "No")), min_size=1, max_size=4
) | st.text(max_size=60)


@given(RETRY_AFTER_TEXT)
def test_parse_retry_after_never_raises(value: str) -> None:
    """Any header text yields a non-negative wait or None, never an exception."""
    seconds = parse_retry_after(value, wall_now=WALL_NOW)
    assert seconds is None or seconds >= 0.0


# --- adobe_error ----------------------------------------------------------------------------


def test_adobe_error_reads_a_gateway_body() -> None:
    """Gateway errors carry error_code and message."""
    assert adobe_error(THROTTLED_BODY) == ("429050", None, "Too many requests")


def test_adobe_error_reads_a_flow_service_body() -> None:
    """Flow Service errors give their code from ``type`` and message from the report."""
    body = flow_error("1101", 404, "Run not found")
    assert adobe_error(body) == (
        "FLOW-1101-404",
        "https://ns.adobe.com/aep/errors/FLOW-1101-404",
        "Run not found",
    )


def test_adobe_error_falls_back_to_the_title() -> None:
    """Without a detailed-message, the title is the message."""
    body = {"type": "https://ns.adobe.com/aep/errors/FLOW-1102-500", "title": "Oops"}
    assert adobe_error(body)[2] == "Oops"


def test_adobe_error_turns_a_numeric_code_into_text() -> None:
    """A gateway that sends its code as a number still yields a string code."""
    assert adobe_error({"error_code": 429050})[0] == "429050"


@pytest.mark.parametrize("body", [None, "text", [1, 2], 5, {}])
def test_adobe_error_of_a_non_error_body_is_empty(body: Any) -> None:
    """Bodies that are not error objects give no code, type or message."""
    assert adobe_error(body) == (None, None, None)


def test_an_id_too_long_or_with_control_characters_is_not_a_new_run() -> None:
    """A 1 MB or escape-laden "id" is a broken answer, not a success to write out whole."""
    for bad in ["x" * 257, "abc\x1b[2Jdef", "line\nbreak"]:
        decision = decide(
            Answer(status=200, body={"id": bad, "etag": "e"}),
            attempt=1,
            ambiguous_before=0,
            elapsed=0.0,
            settings=Settings(),
            rng=random.Random(0),
            wall_now=0.0,
        )
        assert decision.action is Action.IN_DOUBT
        assert decision.error is not None
        assert decision.error.kind == "bad_response"


# --- server text in messages and halt reasons ----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"error_code": f"400{HOSTILE}", "message": f"bad{HOSTILE}\nrequest"},
        {
            "type": f"https://ns.adobe.com/aep/errors/FLOW-1101-400{HOSTILE}",
            "report": {"detailed-message": f"no{HOSTILE}such run"},
        },
        {"title": f"{HOSTILE}" * 500},
    ],
)
def test_a_refusal_quotes_the_server_without_escape_or_bell(body: dict[str, Any]) -> None:
    """A 4xx's message, code and type reach the result as one safe, bounded line each."""
    decision = run(Answer(status=400, body=body))
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert_safe(decision.error.message)
    assert len(decision.error.message) <= 320
    for field in (decision.error.error_code, decision.error.type):
        if field is not None:
            assert_safe(field)


@pytest.mark.parametrize("status", [401, 403])
def test_a_halt_reason_quotes_the_server_without_escape_or_bell(status: int) -> None:
    """The reason a refused credential halts the batch (printed on stderr) is one safe line."""
    decision = run(Answer(status=status, body={"error_code": "401013", "message": HOSTILE * 3}))
    assert decision.action is Action.HALT
    assert_safe(decision.halt_reason)


def test_a_redirect_location_is_quoted_without_escape_or_bell() -> None:
    """A Location header a server wrote is quoted safely in the refusal."""
    decision = run(Answer(status=302, location=f"http://x/{HOSTILE}"))
    assert decision.error is not None
    assert_safe(decision.error.message)


# --- a GET: a listing page, a look-up --------------------------------------------------------


def read(
    outcome: Answer | TransportError,
    *,
    attempt: int = 1,
    elapsed: float = 0.0,
    seed: int = 0,
    **overrides: Any,
) -> Decision:
    """Call decide_read with defaults a test only overrides where it matters."""
    return decide_read(
        outcome,
        attempt=attempt,
        elapsed=elapsed,
        settings=Settings(**overrides),
        rng=random.Random(seed),
        wall_now=WALL_NOW,
        wanted="a page of runs",
    )


PAGE = {"items": [], "_links": {}}


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (Answer(status=200, body=PAGE), Action.SUCCEED),
        (Answer(status=200, body=None, body_problem=HTML_BODY_PROBLEM), Action.RETRY),
        (Answer(status=201, body=PAGE), Action.HALT),
        (Answer(status=204), Action.HALT),
        (Answer(status=301, location="https://elsewhere.example/"), Action.HALT),
        (Answer(status=302), Action.HALT),
        (Answer(status=401, body=TOKEN_EXPIRED_BODY), Action.HALT),
        (Answer(status=401, body={"error_code": "401000"}), Action.HALT),
        (Answer(status=403, body={"error_code": "403003"}), Action.HALT),
        (Answer(status=404, body=flow_error("1101", 404)), Action.HALT),
        (Answer(status=404), Action.HALT),
        (Answer(status=400, body=flow_error("1434", 400)), Action.HALT),
        (Answer(status=409), Action.HALT),
        (Answer(status=429, body=THROTTLED_BODY), Action.RETRY),
        (Answer(status=500), Action.RETRY),
        (Answer(status=502), Action.RETRY),
        (Answer(status=503), Action.RETRY),
        (Answer(status=504), Action.RETRY),
        (Answer(status=599), Action.RETRY),
        (Answer(status=501), Action.HALT),
        (Answer(status=505), Action.HALT),
        (TransportError("refused", kind="network", sent=False), Action.RETRY),
        (TransportError("reset", kind="network", sent=True), Action.RETRY),
        (TransportError("slow", kind="timeout", sent=True), Action.RETRY),
        (TransportError("bad cert", kind="tls", sent=False), Action.HALT),
    ],
)
def test_get_decision_for_each_row_of_its_table(
    outcome: Answer | TransportError, action: Action
) -> None:
    """A GET changes nothing: every failure but a refusal is retried, a refusal halts."""
    decision = read(outcome)
    assert decision.action is action
    assert not decision.ambiguous
    if action is Action.HALT:
        assert decision.halt_reason
    if action is not Action.SUCCEED:
        assert decision.error is not None


def test_get_401013_halts_asking_for_a_token_renewal() -> None:
    """Only an expired token (401013) asks the lister to renew it and ask again."""
    assert read(Answer(status=401, body=TOKEN_EXPIRED_BODY)).token_expired
    assert not read(Answer(status=401, body={"error_code": "401000"})).token_expired
    assert not read(Answer(status=403, body=TOKEN_EXPIRED_BODY)).token_expired


def test_get_200_without_the_body_asked_for_is_retried_naming_the_problem() -> None:
    """An HTML login page with status 200 is retried like a 5xx; the message says what came."""
    decision = read(Answer(status=200, body_problem=HTML_BODY_PROBLEM), backoff_base=0.5)
    assert decision.action is Action.RETRY
    assert decision.error is not None
    assert decision.error.message == f"HTTP 200 without a page of runs ({HTML_BODY_PROBLEM})"


def test_get_redirect_halts_since_it_could_carry_the_token_elsewhere() -> None:
    """A GET's redirect is never followed: the token would go with it."""
    decision = read(Answer(status=302, location="https://evil.example/"))
    assert decision.halt_reason is not None
    assert "redirects are not followed" in decision.halt_reason
    assert "--base-url" in decision.halt_reason


def test_get_429_waits_at_least_retry_after_and_slows_the_throttle() -> None:
    """Retry-After is a floor on a GET's wait; a 429 is a throttling signal."""
    decision = read(Answer(status=429, body=THROTTLED_BODY, retry_after="7"))
    assert decision.action is Action.RETRY
    assert decision.delay >= 7.0
    assert (decision.throttled, decision.retry_after) == (True, 7.0)


def test_get_503_throttles_only_with_a_retry_after() -> None:
    """A bare 503 is retried after backoff; with a Retry-After it also slows the throttle."""
    assert not read(Answer(status=503)).throttled
    assert read(Answer(status=503, retry_after="3")).throttled


def test_get_retry_after_beyond_the_cap_halts_naming_the_wait() -> None:
    """An hour's Retry-After on a page is not waited out blindly."""
    decision = read(Answer(status=429, retry_after="3600"), retry_after_cap=900.0)
    assert decision.action is Action.HALT
    assert decision.halt_reason is not None
    assert "3600 s" in decision.halt_reason
    assert "900 s cap" in decision.halt_reason


def test_get_gives_up_at_max_attempts_and_at_the_deadline() -> None:
    """A GET is given up like a re-trigger: at max_attempts, or past the deadline."""
    at_max = read(Answer(status=500), attempt=3, max_attempts=3)
    at_deadline = read(Answer(status=429, retry_after="30"), deadline=10.0)
    for decision, why in [(at_max, "gave up after 3 attempts"), (at_deadline, "deadline")]:
        assert decision.action is Action.HALT
        assert decision.halt_reason is not None
        assert why in decision.halt_reason


@given(
    attempt=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_get_waits_the_same_full_jitter_as_a_retrigger(attempt: int, seed: int) -> None:
    """One backoff for every request: a GET's wait is the re-trigger's for the same draw."""
    settings: dict[str, Any] = {"backoff_base": 1.0, "backoff_cap": 60.0, "max_attempts": 10}
    get = read(Answer(status=503), attempt=attempt, seed=seed, **settings)
    post = run(Answer(status=503), attempt=attempt, seed=seed, **settings)
    assert get.action is post.action is Action.RETRY
    assert get.delay == post.delay


def test_get_error_text_is_quoted_without_escape_or_bell() -> None:
    """A listing's error code and message reach logs and halt reasons as one safe line."""
    body = {"error_code": f"400{HOSTILE}", "message": f"bad{HOSTILE}\nfilter"}
    decision = read(Answer(status=400, body=body))
    assert decision.error is not None
    assert_safe(decision.error.message)
    assert_safe(decision.error.error_code)
    assert_safe(decision.halt_reason)
    retried = read(Answer(status=500, body=body))
    assert retried.error is not None
    assert_safe(retried.error.message)


@given(
    status=st.integers(100, 999),
    retry_after=st.none() | st.text(max_size=40),
    body=st.none() | st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=4),
    attempt=st.integers(min_value=1, max_value=8),
)
def test_decide_read_returns_a_decision_for_any_answer(
    status: int, retry_after: str | None, body: Any, attempt: int
) -> None:
    """No status, header or body makes decide_read raise; a retry has a finite wait."""
    decision = read(Answer(status=status, body=body, retry_after=retry_after), attempt=attempt)
    assert decision.action in (Action.SUCCEED, Action.RETRY, Action.HALT)
    if decision.action is Action.RETRY:
        assert 0.0 <= decision.delay < float("inf")
    if decision.action is Action.HALT:
        assert decision.halt_reason


# --- an IMS token request --------------------------------------------------------------------

IMS_LIMITS = Limits(max_attempts=3, backoff_base=0.5, backoff_cap=8.0, retry_after_cap=60.0)


def token(outcome: Answer | TransportError, *, attempt: int = 1, seed: int = 0) -> Decision:
    """Call decide_token with IMS's default limits."""
    return decide_token(
        outcome,
        attempt=attempt,
        elapsed=0.0,
        limits=IMS_LIMITS,
        rng=random.Random(seed),
        wall_now=WALL_NOW,
    )


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (Answer(status=200, body={"access_token": "t"}), Action.SUCCEED),
        (Answer(status=200, body_problem=HTML_BODY_PROBLEM), Action.SUCCEED),
        (Answer(status=400, body={"error": "invalid_scope"}), Action.FAIL),
        (Answer(status=401, body={"error": "invalid_client"}), Action.FAIL),
        (Answer(status=302), Action.FAIL),
        (Answer(status=429), Action.RETRY),
        (Answer(status=500), Action.RETRY),
        (Answer(status=501), Action.RETRY),
        (Answer(status=503), Action.RETRY),
        (TransportError("reset", kind="network", sent=True), Action.RETRY),
        (TransportError("slow", kind="timeout", sent=True), Action.RETRY),
        (TransportError("bad cert", kind="tls", sent=False), Action.FAIL),
    ],
)
def test_ims_decision_for_each_kind_of_answer(
    outcome: Answer | TransportError, action: Action
) -> None:
    """5xx, 429 and failures below HTTP but TLS are retried; any other answer is final."""
    assert token(outcome).action is action


def test_ims_final_answer_carries_no_error_for_the_caller_to_read() -> None:
    """A final answer (a token, a refusal) is read by the provider, not judged here."""
    assert token(Answer(status=400)).error is None
    assert token(Answer(status=200)).error is None


def test_ims_tls_failure_gives_up_at_once_with_its_message() -> None:
    """A certificate problem does not go away on a second try."""
    decision = token(TransportError("TLS failed (bad cert)", kind="tls", sent=False))
    assert decision.error is not None
    assert decision.error.message == "TLS failed (bad cert)"


@given(attempt=st.integers(min_value=1, max_value=2), seed=st.integers(0, 2**32 - 1))
def test_ims_backoff_is_full_jitter_below_a_doubling_ceiling(attempt: int, seed: int) -> None:
    """IMS waits are jittered like every other wait: uniform in [0, 0.5·2ⁿ⁻¹]."""
    decision = token(Answer(status=503), attempt=attempt, seed=seed)
    assert decision.action is Action.RETRY
    expected = backoff_delay(attempt, base=0.5, cap=8.0, rng=random.Random(seed))
    assert decision.delay == expected
    assert 0.0 <= decision.delay <= 0.5 * 2 ** (attempt - 1)


def test_ims_retry_after_is_a_floor_on_the_wait() -> None:
    """IMS's Retry-After is honoured as a floor on the jittered wait."""
    decision = token(Answer(status=429, retry_after="5"))
    assert decision.action is Action.RETRY
    assert decision.delay == 5.0


def test_ims_retry_after_beyond_the_cap_gives_up_saying_so() -> None:
    """A Retry-After past IMS's cap gives up at once rather than block every worker."""
    decision = token(Answer(status=429, retry_after="3600"))
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.message.startswith("HTTP 429; the server asked to wait 3600 s")


def test_ims_gives_up_after_its_attempts_naming_what_failed() -> None:
    """The last attempt's failure and the number of attempts make the message."""
    decision = token(Answer(status=503), attempt=3)
    assert decision.action is Action.FAIL
    assert decision.error is not None
    assert decision.error.message == "HTTP 503 after 3 attempts"
    single = decide_token(
        TransportError("network error (reset)", kind="network", sent=True),
        attempt=1,
        elapsed=0.0,
        limits=Limits(max_attempts=1, backoff_base=0.5, backoff_cap=8.0),
        rng=random.Random(0),
        wall_now=WALL_NOW,
    )
    assert single.error is not None
    assert single.error.message == "network error (reset)"
