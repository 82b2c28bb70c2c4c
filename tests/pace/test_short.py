"""Tests of bulkretry._pace.short: what makes a short window, and the count of recent successes."""

from __future__ import annotations

import pytest

from bulkretry._pace.short import SHORT_WAIT, SentCount, is_short_window


@pytest.mark.parametrize(
    ("wait", "took", "short"),
    [
        (1.0, 0.25, True),  # N in a moment, then wait a second
        (2.0, 1.0, True),
        (1.0, 0.6, False),  # over half the wait: a quota shared, rounded up to whole seconds
        (0.5, 0.1, False),  # under a second: no window's wait
        (SHORT_WAIT, 0.1, False),  # a long wait: window mode's, not a pace
        (1.0, -0.1, False),  # the 429 was for a request sent before the pass began
    ],
)
def test_a_short_window_is_a_pass_in_under_half_a_wait_of_one_or_two_seconds(
    wait: float, took: float, short: bool
) -> None:
    assert is_short_window(wait, took) is short


def test_the_count_since_a_time_holds_the_successes_sent_after_it() -> None:
    """At 100 a second for 3 s, the last second holds 100 (a step's worth fewer at most)."""
    sent = SentCount()
    for i in range(300):
        sent.add(i / 100)
    assert sent.total == 300
    assert 98 <= sent.since(1.995) <= 100
    assert sent.since(3.0) == 0  # nothing sent after the last


def test_the_count_is_never_more_than_was_sent_after_the_time() -> None:
    """A mark per step: a count read between marks leaves the step's first ones out, never
    counts ones sent before the time (a window paced at it would overrun)."""
    sent = SentCount()
    times = [i * 0.003 for i in range(1000)]
    for at in times:
        sent.add(at)
    for start in (0.5, 1.0001, 2.2, 2.9):
        assert sent.since(start) <= sum(at > start for at in times)
        assert sent.since(start) >= sum(at > start + 0.02 for at in times)


def test_an_empty_count_is_zero_and_a_count_beyond_its_memory_is_short() -> None:
    """Nothing counted: 0. Asked about a time older than the marks kept: what they cover."""
    sent = SentCount()
    assert sent.since(0.0) == 0
    for i in range(10_000):
        sent.add(i / 1000)
    assert 3_000 <= sent.since(-1.0) < 10_000  # the last 3 s or so
    assert "total=10000" in repr(sent)
