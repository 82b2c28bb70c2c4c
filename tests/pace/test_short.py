"""Tests of bulkretry._pace.short: what makes a short window."""

from __future__ import annotations

import pytest

from bulkretry._pace.short import FEWEST, SHORT_WAIT, is_short_window


@pytest.mark.parametrize(
    ("successes", "wait", "took", "short"),
    [
        (200, 1.0, 0.25, True),  # N in a moment, then wait a second
        (200, 2.0, 1.0, True),
        (200, 1.0, 0.6, True),  # a window at 1.67 times its rate (went to fixed-window mode)
        (200, 1.0, 0.99, True),
        (200, 1.0, 1.0, False),  # no faster than the wait: a quota paced, rounded up to a second
        (200, 0.5, 0.1, False),  # under a second: no window's wait
        (200, SHORT_WAIT, 0.1, False),  # a long wait: window mode's, not a pace
        (200, 1.0, -0.1, False),  # the 429 was for a request sent before the pass began
        (FEWEST - 1, 1.0, 0.1, False),  # a handful: others share the quota
        (FEWEST, 1.0, 0.1, True),
    ],
)
def test_a_short_window_is_many_through_faster_than_a_wait_of_one_or_two_seconds(
    successes: int, wait: float, took: float, short: bool
) -> None:
    assert is_short_window(successes, wait, took) is short
