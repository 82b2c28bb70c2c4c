"""Tests of bulkretry._engine.claims: how long claimed runs are kept, and the clocks' offset."""

from __future__ import annotations

from bulkretry._config import Settings
from bulkretry._engine.claims import Claims, horizon

SETTINGS = Settings(timeout=30.0, check_delay=3.0, check_skew=1.0)


def test_claims_are_kept_seconds_behind_the_oldest_request_still_unanswered() -> None:
    """A window still to come opens when an unanswered request left, less the skew: a fast
    batch keeps seconds of claims, not the timeout's ninety."""
    assert horizon(1000.0, SETTINGS, 999.5, None) == 999.5 - 2 * 1.0 - 1.0


def test_a_request_unanswered_for_long_keeps_claims_back_to_the_timeout_bound() -> None:
    """However old the oldest request in flight, claims beyond the timeout's bound go."""
    assert horizon(1000.0, SETTINGS, 800.0, None) == 1000.0 - 30.0 - 3.0 - 60.0


def test_an_open_window_keeps_every_claim_it_reaches_back_to() -> None:
    """A check still open keeps the claims of its window, and a minute before it."""
    assert horizon(1000.0, SETTINGS, 999.9, 950_000) == 950.0 - 60.0


def test_forget_before_drops_old_claims_and_their_windows() -> None:
    """Forgotten claims are no longer claimed; recent ones are."""
    claims = Claims()
    claims.add("old", 10.0, (9.0, 9.5))
    claims.add("new", 20.0, (19.0, 19.5))
    claims.forget_before(15.0)
    assert "old" not in claims
    assert "new" in claims
