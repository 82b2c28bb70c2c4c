"""An answer's RateLimit-* and X-RateLimit-* headers, in each dialect: numbers, or nothing."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from bulkretry._http.quota_headers import read_quota_headers
from bulkretry._model import QuotaHeaders

NOW = 1_800_000_000.0


def read(**headers: str) -> QuotaHeaders | None:
    return read_quota_headers(CIMultiDict(headers), lambda: NOW)


def test_an_answer_without_quota_headers_says_nothing() -> None:
    assert read(**{"Retry-After": "3"}) is None


def test_the_ietf_draft_headers_with_a_policy_declare_the_window() -> None:
    told = read(
        **{
            "RateLimit-Limit": "200",
            "RateLimit-Remaining": "17",
            "RateLimit-Reset": "1",
            "RateLimit-Policy": "200;w=1",
        }
    )
    assert told == QuotaHeaders(limit=200, remaining=17, reset=1.0, window=1.0)


def test_a_policy_carried_in_the_limit_header_declares_the_window() -> None:
    told = read(**{"RateLimit-Limit": "100, 100;w=60, 1000;w=3600", "RateLimit-Remaining": "0"})
    assert told == QuotaHeaders(limit=100, remaining=0, reset=None, window=60.0)


def test_a_policy_for_another_limit_declares_nothing() -> None:
    """Limit 20 (a burst) with a policy of 1000 an hour: the window is not the Limit's."""
    told = read(
        **{"RateLimit-Limit": "20", "RateLimit-Remaining": "3", "RateLimit-Policy": "1000;w=3600"}
    )
    assert told is not None
    assert told.window is None


def test_the_structured_field_of_later_drafts_is_read_in_both_spellings() -> None:
    assert read(RateLimit="limit=100, remaining=5, reset=30") == QuotaHeaders(100, 5, 30.0, None)
    told = read(**{"RateLimit": '"default";r=5;t=30', "RateLimit-Policy": '"default";q=100;w=60'})
    assert told == QuotaHeaders(limit=100, remaining=5, reset=30.0, window=60.0)


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("7", 7.0),
        (str(int(NOW) + 42), 42.0),
        (str(int(NOW * 1000) + 1500), 1.5),
        (str(int(NOW) - 5), 0.0),
    ],
)
def test_an_x_reset_is_a_delay_or_an_epoch_time(reset: str, seconds: float) -> None:
    """GitHub writes epoch seconds; others a delay, or epoch milliseconds; a past one is now."""
    told = read(
        **{"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    )
    assert told is not None
    assert told.reset == pytest.approx(seconds)


@pytest.mark.parametrize("junk", ["", "-1", "ten", "1e400", "9" * 40, "3;drop", "nan"])
def test_unreadable_values_are_left_out_not_guessed(junk: str) -> None:
    told = read(**{"RateLimit-Limit": junk, "RateLimit-Remaining": junk, "RateLimit-Reset": junk})
    assert told is None or told == QuotaHeaders()


def test_a_remaining_with_decimals_is_no_count_not_zero() -> None:
    told = read(**{"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0.5"})
    assert told is not None
    assert told.remaining is None


def test_of_several_policies_the_one_of_the_limit_declares_the_window() -> None:
    told = read(
        **{
            "RateLimit-Limit": "10",
            "RateLimit-Remaining": "9",
            "RateLimit-Policy": "1000;w=3600, 10;w=1",
        }
    )
    assert told == QuotaHeaders(limit=10, remaining=9, reset=None, window=1.0)


def test_a_structured_remaining_with_decimals_is_no_count_either() -> None:
    told = read(RateLimit="limit=100, remaining=0.5, reset=30")
    assert told == QuotaHeaders(limit=100, remaining=None, reset=30.0, window=None)
