"""Tests of bulkretry._pace.halt: deciding, by a --halt-on policy, that the service is down.

Reading the policy itself is tested with the settings, in tests/test_config.py.
"""

from __future__ import annotations

import pytest

from bulkretry._config import HaltPolicy, parse_halt_on
from bulkretry._pace.halt import HaltDetector, Outcome

# --- detection --------------------------------------------------------------------------------


def feed(detector: HaltDetector, kinds: list[Outcome], start: float = 0.0) -> list[str | None]:
    return [detector.observe(kind, start + i) for i, kind in enumerate(kinds)]


def test_share_rule_halts_on_the_answer_that_reaches_the_threshold() -> None:
    """5xx=90%/100 halts on the 90th failure among the last 100 answers, not the 89th."""
    detector = HaltDetector(parse_halt_on("5xx=90%/100"))
    successes: list[Outcome] = ["success"] * 10
    failures: list[Outcome] = ["server_error"] * 89
    kinds = successes + failures
    assert feed(detector, kinds) == [None] * 99
    reason = detector.observe("network", 100)
    assert reason == (
        "the service looks down: 90 of the last 100 answers were server errors, network "
        "failures or timeouts (halt-on 5xx=90%/100)."
    )
    assert detector.reason == reason


def test_share_rule_forgets_answers_that_left_the_window() -> None:
    """Failures older than the last N answers no longer count."""
    detector = HaltDetector(parse_halt_on("5xx=3/5"))
    kinds: list[Outcome] = ["server_error", "server_error", "success", "success", "success"]
    kinds += ["success", "network", "success", "success", "network"]
    assert feed(detector, kinds) == [None] * 10
    assert detector.observe("server_error", 10) is not None


def test_share_rule_needs_no_full_window_for_a_count() -> None:
    """5xx=K halts after K failures in a row, from the very start."""
    detector = HaltDetector(parse_halt_on("5xx=3"))
    assert feed(detector, ["network", "network"]) == [None, None]
    assert detector.observe("network", 2) is not None


def test_throttled_answers_never_count_as_down() -> None:
    """429s neither fill the window nor count as failures, however many there are."""
    detector = HaltDetector(parse_halt_on("5xx=2/2,stall=10"))
    assert feed(detector, ["throttled"] * 1000) == [None] * 1000
    throttled: list[Outcome] = ["throttled"] * 20
    kinds: list[Outcome] = ["server_error", *throttled, "success", "throttled"]
    assert feed(detector, kinds, start=1000) == [None] * len(kinds)
    assert detector.observe("network", 2000) is None
    assert detector.observe("network", 2001) is not None


def test_client_errors_are_answers_that_show_the_service_is_up() -> None:
    """A 4xx dilutes the window like a success."""
    detector = HaltDetector(parse_halt_on("5xx=2/2"))
    assert feed(detector, ["server_error", "client_error", "server_error"]) == [None] * 3


def test_stall_rule_halts_when_failures_span_the_stall_time() -> None:
    """stall=600 halts on a failure 600 s after the first of an unbroken run of failures."""
    detector = HaltDetector(parse_halt_on("stall=600"))
    assert detector.observe("network", 100.0) is None
    assert detector.observe("server_error", 400.0) is None
    assert detector.observe("throttled", 800.0) is None
    assert detector.observe("server_error", 699.9) is None
    reason = detector.observe("network", 700.0)
    assert reason == (
        "the service looks down: 4 attempts failed over 600 s without a single success "
        "(halt-on stall=600)."
    )


@pytest.mark.parametrize("progress", ["success", "client_error"])
def test_stall_clock_restarts_after_an_answer(progress: Outcome) -> None:
    """A success or a 4xx between failures ends the stall; the next failure starts a new one."""
    detector = HaltDetector(parse_halt_on("stall=60"))
    assert detector.observe("network", 0) is None
    assert detector.observe(progress, 59) is None
    assert detector.observe("network", 100) is None
    assert detector.observe("network", 159) is None
    assert detector.observe("network", 160) is not None


def test_never_never_halts() -> None:
    """'never' ignores any number of failures over any time."""
    detector = HaltDetector(parse_halt_on("never"))
    assert all(detector.observe("network", t * 1000.0) is None for t in range(10_000))


def test_the_reason_sticks_once_given() -> None:
    """After halting, every observation returns the same reason, even a success."""
    detector = HaltDetector(parse_halt_on("5xx=1"))
    reason = detector.observe("server_error", 0)
    assert reason is not None
    assert detector.observe("success", 1) == reason
    assert detector.observe("throttled", 2) == reason


def test_unknown_outcome_is_a_programming_error() -> None:
    """An outcome outside the Literal raises ValueError."""
    with pytest.raises(ValueError):
        HaltDetector(HaltPolicy()).observe("teapot", 0)  # type: ignore[arg-type]


def test_repr_shows_the_state() -> None:
    """repr shows the policy, the failures in the window, a run of failures, and halting."""
    detector = HaltDetector(parse_halt_on("now,5xx=2/4,stall=60"))
    detector.observe("success", 0)
    detector.observe("network", 1.5)
    assert repr(detector) == (
        "<HaltDetector now,5xx=2/4,stall=60 [1/2 recent answers failed, "
        "1 failures in a row since t=1.500]>"
    )
    detector.observe("network", 2)
    assert repr(detector).endswith(", halted]>")
    assert detector.policy.when == "now"
