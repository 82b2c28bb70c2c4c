"""Tests of bulkretry._pace.halt: reading --halt-on, and deciding that the service is down."""

from __future__ import annotations

import pytest

from bulkretry._exceptions import ConfigurationError
from bulkretry._pace.halt import (
    DEFAULT_HALT_ON,
    DEFAULT_HALT_WINDOW,
    HaltDetector,
    HaltPolicy,
    Outcome,
    parse_halt_on,
)

# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy", "canonical"),
    [
        ("never", HaltPolicy(), "never"),
        (" NEVER ", HaltPolicy(), "never"),
        (
            "5xx=90%/100,stall=600",
            HaltPolicy(errors=90, window=100, percent=90, stall=600),
            "5xx=90%/100,stall=600",
        ),
        ("5xx=50%/200", HaltPolicy(errors=100, window=200, percent=50), "5xx=50%/200"),
        ("5xx=33.3%/3", HaltPolicy(errors=1, window=3, percent=33.3), "5xx=33.3%/3"),
        ("5xx=100%/1", HaltPolicy(errors=1, window=1, percent=100), "5xx=100%/1"),
        ("5xx=75%", HaltPolicy(errors=75, window=100, percent=75), "5xx=75%/100"),
        ("5xx=30/200", HaltPolicy(errors=30, window=200), "5xx=30/200"),
        ("5xx=20", HaltPolicy(errors=20, window=20), "5xx=20/20"),
        ("stall=300", HaltPolicy(stall=300), "stall=300"),
        ("stall=90s", HaltPolicy(stall=90), "stall=90"),
        ("stall=10m", HaltPolicy(stall=600), "stall=600"),
        ("stall=1.5h", HaltPolicy(stall=5400), "stall=5400"),
        ("stall=.5", HaltPolicy(stall=0.5), "stall=0.5"),
        (
            "now,5xx=50%/200",
            HaltPolicy(when="now", errors=100, window=200, percent=50),
            "now,5xx=50%/200",
        ),
        ("soon,stall=60", HaltPolicy(stall=60), "stall=60"),
        (
            " Stall=60 , 5XX=5/10 ",
            HaltPolicy(errors=5, window=10, stall=60),
            "5xx=5/10,stall=60",
        ),
    ],
)
def test_good_specs_parse(text: str, policy: HaltPolicy, canonical: str) -> None:
    """Every form of the grammar parses, and str() gives the canonical spec back."""
    parsed = parse_halt_on(text)
    assert parsed == policy
    assert str(parsed) == canonical
    assert parse_halt_on(str(parsed)) == parsed


def test_default_spec() -> None:
    """The default halts at 90 failures of the last 100 answers or a 600-second stall."""
    assert parse_halt_on(DEFAULT_HALT_ON) == HaltPolicy(
        errors=90, window=100, percent=90, stall=600
    )
    assert DEFAULT_HALT_WINDOW == 100


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("always", "'always' is not a rule"),
        ("fail=5%", "'fail=5%' is not a rule"),
        ("5xx", "'5xx' is not a rule"),
        ("5xx=", "is not a share"),
        ("5xx=lots", "is not a share"),
        ("5xx=0%/100", "percentage above 0"),
        ("5xx=101%/100", "at most 100"),
        ("5xx=-5%", "is not a share"),
        ("5xx=50%/0", "at least one answer"),
        ("5xx=0/10", "count between 1 and the window"),
        ("5xx=11/10", "count between 1 and the window"),
        ("5xx=0", "count between 1 and the window"),
        ("stall=", "is not a duration"),
        ("stall=-5", "is not a duration"),
        ("stall=0", "longer than zero"),
        ("stall=5d", "is not a duration"),
        ("stall=1e3", "is not a duration"),
        ("stall=60,stall=70", "'stall' is given twice"),
        ("5xx=5,5xx=6", "'5xx' is given twice"),
        ("now", "'now' must be followed by at least one rule"),
        ("soon,", "a rule is empty"),
        ("5xx=5,,stall=6", "a rule is empty"),
        ("never,stall=60", "'never' can only stand alone or come first"),
        ("stall=60,now", "'now' can only stand alone or come first"),
        ("now,soon,stall=6", "'soon' can only stand alone or come first"),
    ],
)
def test_bad_specs_are_refused_in_one_clear_sentence(text: str, complaint: str) -> None:
    """A malformed spec raises ConfigurationError naming the spec, the problem and an example."""
    with pytest.raises(ConfigurationError) as caught:
        parse_halt_on(text)
    message = str(caught.value)
    assert message.startswith(f"--halt-on {text.strip()!r} is not valid: ")
    assert complaint in message
    assert "for example '5xx=90%/100,stall=600'" in message
    assert message.endswith(").")
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"errors": 5},
        {"window": 5},
        {"errors": 0, "window": 5},
        {"errors": 6, "window": 5},
        {"stall": 0},
        {"stall": float("inf")},
        {"when": "later"},
    ],
)
def test_inconsistent_policies_are_refused(kwargs: dict[str, object]) -> None:
    """A HaltPolicy built by hand must be consistent too."""
    with pytest.raises(ValueError):
        HaltPolicy(**kwargs)  # type: ignore[arg-type]


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
