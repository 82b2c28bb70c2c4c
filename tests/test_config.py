"""Tests of bulkretry._config: Settings refuse every value that cannot work, and name it.

Also: reading a --halt-on spec into a HaltPolicy, and the defaults defined once, here.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any

import pytest

import bulkretry._config as config
from bulkretry._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP,
    DEFAULT_HALT_ON,
    DEFAULT_HALT_WINDOW,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_ON_AMBIGUOUS,
    DEFAULT_OP,
    DEFAULT_PAUSE_AFTER,
    DEFAULT_RETRY_BUDGET,
    DEFAULT_RUN_ID_PATTERN,
    Credentials,
    HaltPolicy,
    Settings,
    parse_halt_on,
)
from bulkretry._exceptions import BulkRetryError, ConfigurationError
from bulkretry._pace.budget import RetryBudget
from bulkretry._pace.controller import RateController
from bulkretry._pace.throttle import Throttle

NAN = math.nan

INVALID: list[tuple[str, Any, str]] = [
    ("concurrency", 0, "concurrency"),
    ("concurrency", -4, "concurrency"),
    ("rate", 0.0, "rate"),
    ("rate", -1.0, "rate"),
    ("rate", NAN, "rate"),
    ("burst", 0, "burst"),
    ("max_attempts", 0, "max-attempts"),
    ("timeout", 0.0, "timeout"),
    ("timeout", -5.0, "timeout"),
    ("timeout", NAN, "timeout"),
    ("deadline", 0.0, "deadline"),
    ("deadline", NAN, "deadline"),
    ("backoff_base", -0.5, "backoff-base"),
    ("backoff_base", NAN, "backoff-base"),
    ("backoff_base", math.inf, "backoff-base"),
    ("backoff_cap", -1.0, "backoff-cap"),
    ("backoff_cap", NAN, "backoff-cap"),
    ("pause_after", -1.0, "pause-after"),
    ("pause_after", NAN, "pause-after"),
    ("retry_after_cap", -1.0, "retry-after-cap"),
    ("retry_after_cap", NAN, "retry-after-cap"),
    ("on_ambiguous", "ignore", "on-ambiguous"),
    ("op", "", "op"),
    ("op", "re-trigger&force=true", "op 're-trigger&force=true'"),
    ("op", "re-trigger#x", "op"),
    ("op", "re trigger", "op"),
    ("op", "a/b", "op"),
    ("op", "re-trigger?x", "op"),
    ("run_id_pattern", "[0-9a-f", "run-id-pattern"),
    ("run_id_pattern", "(?P<x", "run-id-pattern"),
]


@pytest.mark.parametrize(
    ("field", "value", "named"), INVALID, ids=[f"{f}={v!r}" for f, v, _ in INVALID]
)
def test_each_invalid_value_raises_configuration_error_naming_it(
    field: str, value: Any, named: str
) -> None:
    """A value that cannot work is refused at construction, in words that name the setting."""
    with pytest.raises(ConfigurationError) as info:
        Settings(**{field: value})
    assert named in str(info.value)


def test_several_invalid_values_are_all_named_at_once() -> None:
    """Every problem is reported together, so a user fixes them in one go."""
    with pytest.raises(ConfigurationError) as info:
        Settings(concurrency=0, rate=0.0, on_ambiguous="maybe")  # type: ignore[arg-type]
    message = str(info.value)
    for named in ("concurrency", "rate", "on-ambiguous"):
        assert named in message


def test_configuration_error_is_a_bulkretry_error() -> None:
    """Callers can catch every deliberate error through the root class."""
    with pytest.raises(BulkRetryError):
        Settings(burst=0)


def test_defaults_are_valid_and_documented() -> None:
    """Settings() with no argument is a safe, valid configuration."""
    settings = Settings()
    assert settings.op == DEFAULT_OP
    assert settings.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert settings.backoff_base == DEFAULT_BACKOFF_BASE
    assert settings.backoff_cap == DEFAULT_BACKOFF_CAP
    assert settings.run_id_pattern == DEFAULT_RUN_ID_PATTERN
    assert settings.on_ambiguous == DEFAULT_ON_AMBIGUOUS


def test_an_ambiguous_answer_is_looked_up_by_default_never_sent_again_on_a_guess() -> None:
    """The default re-sends a request that may have re-triggered the run only if a look-up
    showed it was not processed (``check``), never on a guess (``retry``)."""
    assert DEFAULT_ON_AMBIGUOUS == "check"
    assert Settings().on_ambiguous == "check"


@pytest.mark.parametrize(
    "overrides",
    [
        {"op": "RE_TRIGGER"},
        {"backoff_base": 0.0, "backoff_cap": 0.0},
        {"pause_after": 0.0, "retry_after_cap": 0.0},
        {"max_attempts": 1, "concurrency": 1, "burst": 1},
        {"rate": 0.001, "deadline": 0.5, "timeout": 0.1},
        {"on_ambiguous": "retry"},
        {"run_id_pattern": r"[A-Z]{3}-\d{4}"},
    ],
)
def test_edge_values_that_can_work_are_accepted(overrides: dict[str, Any]) -> None:
    """Zero backoff (used by tests), a single attempt and the enum op spelling are valid."""
    Settings(**overrides)


def test_settings_are_frozen() -> None:
    """Settings cannot change under a running batch."""
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rate = 100.0  # type: ignore[misc]


def test_settings_take_keywords_only() -> None:
    """Positional arguments would make call sites unreadable; they are refused."""
    with pytest.raises(TypeError):
        Settings("https://example.test")  # type: ignore[call-arg]


def test_credentials_repr_never_shows_a_secret() -> None:
    """A Credentials object can be logged: token and client secret stay out of its repr."""
    credentials = Credentials(
        api_key="key-1",
        org_id="ORG@AdobeOrg",
        access_token="tok-secret-123",
        client_secret="p8e-secret-456",
    )
    text = repr(credentials)
    assert "tok-secret-123" not in text
    assert "p8e-secret-456" not in text
    assert "ORG@AdobeOrg" in text


def test_all_names_every_default_and_every_public_name() -> None:
    """Each DEFAULT_* (and every other public name defined here) is listed in __all__."""
    defined = {
        name
        for name, value in vars(config).items()
        if not name.startswith("_")
        and (name.isupper() or getattr(value, "__module__", None) == config.__name__)
    }
    assert defined == set(config.__all__)


def test_the_pacing_wing_takes_its_defaults_from_here() -> None:
    """Defaults are defined once: the throttle's pause and the budget's share are the settings'."""
    assert Settings().retry_budget == DEFAULT_RETRY_BUDGET == 0.5  # as README documents
    assert RetryBudget().ratio == DEFAULT_RETRY_BUDGET
    for pacer in (Throttle, RateController):
        assert inspect.signature(pacer).parameters["pause_after"].default is DEFAULT_PAUSE_AFTER
    assert Settings().pause_after == DEFAULT_PAUSE_AFTER


# --- --halt-on: the policy and its syntax ----------------------------------------------------


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
