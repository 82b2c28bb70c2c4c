"""Tests of bulkretry._config: Settings refuse every value that cannot work, and name it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from bulkretry._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_ON_AMBIGUOUS,
    DEFAULT_OP,
    DEFAULT_RUN_ID_PATTERN,
    Credentials,
    Settings,
)
from bulkretry._exceptions import BulkRetryError, ConfigurationError

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


def test_an_ambiguous_answer_is_held_by_default_never_sent_again() -> None:
    """The default never re-sends a request that may have re-triggered the run."""
    assert DEFAULT_ON_AMBIGUOUS == "hold"
    assert Settings().on_ambiguous == "hold"


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
