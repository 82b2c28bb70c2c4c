"""When a results line's doubt arose: a verdict's and a sent in-doubt line's finished_at."""

from __future__ import annotations

from typing import Any

import pytest

from bulkretry._io.doubts import doubt_at, instant_ms, sent_by_its_pass

T = "2026-12-05T12:00:00.000Z"
T_MS = 1796472000000


def test_an_iso_time_is_read_in_epoch_milliseconds_utc_when_it_names_no_zone() -> None:
    assert instant_ms(T) == T_MS
    assert instant_ms("2026-12-05T12:00:00") == T_MS
    assert instant_ms("2026-12-05T13:00:00+01:00") == T_MS


@pytest.mark.parametrize("text", [None, 12, "", "yesterday", "2026-13-05T12:00:00Z"])
def test_what_is_not_an_iso_time_has_none(text: object) -> None:
    assert instant_ms(text) is None


@pytest.mark.parametrize(
    ("line", "sent"),
    [
        ({"attempts": 1, "ambiguous_attempts": 1}, True),
        ({"attempts": 2, "ambiguous_attempts": 0, "error": {"kind": "interrupted"}}, True),
        ({"attempts": 0, "ambiguous_attempts": 0}, False),  # held from an earlier pass
        ({"attempts": 1, "ambiguous_attempts": 0, "error": {"kind": "http"}}, False),
        ({"attempts": "1", "ambiguous_attempts": 1}, False),
        ({}, False),
    ],
)
def test_a_line_s_own_pass_sent_the_run_with_an_ambiguous_attempt_or_an_interrupt(
    line: dict[str, Any], sent: bool
) -> None:
    assert sent_by_its_pass(line) is sent


def test_a_verdict_settles_the_doubts_up_to_its_finished_at() -> None:
    verdict = {
        "outcome": "failed",
        "resolved_by": "lookup",
        "attempts": 1,
        "ambiguous_attempts": 1,
        "finished_at": T,
    }
    assert doubt_at(verdict, "failed") == T_MS


def test_a_verdict_written_into_a_held_line_has_no_time() -> None:
    """Its finished_at is when the run was held, later than any request the look-up saw: taken
    as the verdict's time, it beat a doubt raised after the look-up's window."""
    held = {"outcome": "failed", "resolved_by": "lookup", "attempts": 0, "finished_at": T}
    assert doubt_at(held, "failed") is None


@pytest.mark.parametrize("further", ["in_doubt", "retriggered", "already_retriggered"])
def test_a_follow_line_whose_further_round_may_have_landed_raises_a_doubt_then(
    further: str,
) -> None:
    line = {"outcome": "retriggered", "attempts": 1, "finished_at": T, "next_round": {}}
    line["next_round"] = {"outcome": further}
    assert doubt_at(line, "retriggered") == T_MS
    line["next_round"] = {"outcome": "failed"}
    assert doubt_at(line, "retriggered") is None


def test_an_in_doubt_line_its_pass_sent_raises_a_doubt_at_its_finished_at() -> None:
    line = {"outcome": "in_doubt", "attempts": 1, "ambiguous_attempts": 1, "finished_at": T}
    assert doubt_at(line, "in_doubt") == T_MS


@pytest.mark.parametrize(
    ("line", "outcome"),
    [
        ({"attempts": 1, "ambiguous_attempts": 1, "finished_at": T}, "failed"),
        ({"attempts": 1, "ambiguous_attempts": 1}, "in_doubt"),  # no finished_at
        ({"resolved_by": "lookup", "finished_at": "soon"}, "failed"),
    ],
)
def test_other_lines_have_no_time_of_doubt(line: dict[str, Any], outcome: str) -> None:
    assert doubt_at(line, outcome) is None


def test_a_verdict_on_an_interrupted_request_keeps_its_time() -> None:
    """check writes its verdict's error over the line's ('interrupted' is gone): the verdict
    still has the time of the pass that sent the run, its attempts say so."""
    verdict = {
        "outcome": "failed",
        "resolved_by": "lookup",
        "attempts": 1,
        "ambiguous_attempts": 0,
        "error": {"kind": "not_processed"},
        "finished_at": T,
    }
    assert doubt_at(verdict, "failed") == T_MS


def test_a_held_in_doubt_line_repeats_a_doubt_from_no_later_than_its_finished_at() -> None:
    """Held (attempts 0), or a skipped line standing for in_doubt: the doubt it repeats may be
    newer than a verdict fed with it, so the line is dated by its own time, an upper bound."""
    held = {"outcome": "in_doubt", "attempts": 0, "finished_at": T}
    assert doubt_at(held, "in_doubt") == T_MS
    skipped = {"outcome": "skipped", "prior_outcome": "in_doubt", "attempts": 0, "finished_at": T}
    assert doubt_at(skipped, "in_doubt") == T_MS
