"""Tests of bulkretry._pace.curve: the climb back after a cut, and which 429s a cut answers for."""

from __future__ import annotations

import pytest

from bulkretry._pace.curve import BETA, Curve


def test_a_cut_returns_the_rate_cut_to() -> None:
    """The rate after a cut is beta times the rate cut from; the curve remembers both."""
    curve = Curve(100.0, recovery=600)
    assert curve.cut_at is None
    assert curve.cut(5.0, 80.0, beta=BETA, start=5.0) == pytest.approx(80 * BETA)
    assert (curve.cut_at, curve.top, curve.epoch) == (5.0, 80.0, 5.0)


def test_the_climb_is_back_at_the_top_after_cubics_k_then_probes_above() -> None:
    """From beta times the top, the curve reaches a top of 200/s in 3 seconds, then rises."""
    curve = Curve(100.0, recovery=1)
    curve.cut(0.0, 200.0, beta=BETA, start=0.0)
    assert curve.target(0.0) == pytest.approx(200 * BETA)
    assert 200 * BETA < curve.target(1.0) < curve.target(2.0) < 200
    assert curve.target(3.0) == pytest.approx(200)
    assert curve.shortfall(3.0) == pytest.approx(0)
    assert curve.target(4.0) > 200


@pytest.mark.parametrize(("rate", "seconds"), [(200.0, 3.0), (1600.0, 12.0), (5400.0, 27.0)])
def test_the_climb_lasts_longer_at_a_higher_rate_by_the_power_two_thirds(
    rate: float, seconds: float
) -> None:
    """Of clients cut on one quota, the slower is back at its top sooner (8 times the rate,
    4 times as long; CUBIC's cube root, twice as long, let shares converge too slowly)."""
    curve = Curve(rate, recovery=1)
    curve.cut(0.0, rate, beta=BETA, start=0.0)
    assert curve.shortfall(seconds) == pytest.approx(0)


def test_a_climb_is_never_shorter_than_recovery_requests_and_those_in_flight() -> None:
    """At a slow quota the climb spans *recovery* times (1/4 + the requests in flight) requests."""
    curve = Curve(10.0, recovery=200)
    curve.cut(0.0, 10.0, beta=BETA, start=0.0)
    assert curve.shortfall(5.0) == pytest.approx(0)  # 50 requests at 10/s, none in flight
    curve = Curve(10.0, recovery=50)
    curve.cut(0.0, 10.0, beta=BETA, start=0.0, latency=0.25)
    assert curve.shortfall(13.75) == pytest.approx(0)  # 2.5 in flight: 137.5 requests


def test_the_requests_in_flight_lengthen_a_climb_up_to_four() -> None:
    """A timeout's latency does not stretch a climb to minutes, nor one at a fast rate."""
    curve = Curve(200.0, recovery=50)
    curve.cut(0.0, 10.0, beta=BETA, start=0.0, latency=30.0)
    assert curve.shortfall(21.25) == pytest.approx(0)  # 4 counted: 212.5 requests at 10/s
    curve.cut(0.0, 200.0, beta=BETA, start=0.0, latency=0.25)
    assert curve.shortfall(3.0) == pytest.approx(0)  # 1.25 s of requests: K decides


def test_a_climb_back_to_a_learned_window_spans_600_requests() -> None:
    """A window's N per W is a ceiling known already: no need to hurry back to it."""
    curve = Curve(160.0, recovery=1)
    curve.learn(40, 1.0)
    curve.cut(0.0, 40.0, beta=0.97, start=0.0)
    assert curve.shortfall(15.0) == pytest.approx(0)


@pytest.mark.parametrize(("rate", "recovery", "seconds"), [(2.0, 1, 1.0), (0.5, 2400, 600.0)])
def test_the_climb_lasts_between_one_second_and_ten_minutes(
    rate: float, recovery: int, seconds: float
) -> None:
    """However fast or slow the rate cut from, the climb back takes 1 to 600 seconds."""
    curve = Curve(rate, recovery=recovery)
    curve.cut(0.0, rate, beta=BETA, start=0.0)
    assert curve.target(seconds) == pytest.approx(rate)


def test_past_the_top_a_shave_probes_as_fast_as_a_full_cut() -> None:
    """A shave's depth says how near the edge was, not how slowly to look beyond it."""
    shaved, cut = Curve(100.0, recovery=1), Curve(100.0, recovery=1)
    shaved.cut(0.0, 200.0, beta=0.95, start=0.0)
    cut.cut(0.0, 200.0, beta=BETA, start=0.0)
    assert shaved.target(1.5) > cut.target(1.5)  # the shallower cut climbs from higher
    assert shaved.target(6.0) == pytest.approx(cut.target(6.0)) == pytest.approx(200 * 1.3)


def test_past_a_learned_window_the_probe_is_as_slow_as_the_cut_was_shallow() -> None:
    """A window's N per W is a known ceiling: beyond it the curve rises only slowly."""
    curve = Curve(100.0, recovery=1)
    curve.learn(200, 1.0)
    curve.cut(0.0, 200.0, beta=0.97, start=0.0)
    assert curve.target(6.0) == pytest.approx(200 * 1.03)


def test_cuts_with_no_success_after_a_proven_rates_shave_climb_back_to_that_rate() -> None:
    """A window that counts refusals, grazed at a rate held for a second, refuses a few in a
    row: the cuts for them climb back to the rate held, in the time a climb to it takes."""
    curve = Curve(200.0, recovery=1)
    rate = curve.cut(0.0, 200.0, beta=0.95, start=0.0, proven=True)
    for beta in (BETA, BETA):
        rate = curve.cut(0.0, rate, beta=beta, start=0.0, chained=True)
    assert rate == pytest.approx(200 * 0.95 * BETA**2)
    assert (curve.top, curve.proven) == (200.0, 200.0)
    assert curve.target(0.0) == pytest.approx(rate)
    assert curve.target(3.0) == pytest.approx(200)  # K at 200/s


def test_a_chain_not_begun_by_a_proven_rate_climbs_back_to_its_last_cut() -> None:
    """Without a rate held first, or once a success broke the chain, the top is the last cut's."""
    curve = Curve(200.0, recovery=1)
    curve.cut(0.0, 200.0, beta=0.95, start=0.0)
    curve.cut(0.0, 190.0, beta=BETA, start=0.0, chained=True)
    assert (curve.top, curve.proven) == (190.0, None)
    curve.cut(0.0, 200.0, beta=0.95, start=0.0, proven=True)
    curve.cut(1.0, 150.0, beta=BETA, start=1.0)  # a success came between
    assert (curve.top, curve.proven) == (150.0, None)
    curve.cut(2.0, 200.0, beta=0.95, start=2.0, proven=True)
    curve.forget(200.0)
    curve.cut(3.0, 120.0, beta=BETA, start=3.0, chained=True)
    assert curve.top == 120.0


def test_a_proven_rate_is_no_aim_above_a_declared_quota_nor_past_a_learned_window() -> None:
    """A quota the server declares caps the rate a chain climbs back to; a learned window's N
    per W stays the ceiling, and a chain climbs back to its last cut, not past it."""
    curve = Curve(200.0, recovery=1)
    curve.cut(0.0, 200.0, beta=0.95, start=0.0, proven=True)
    curve.lower(97.0)
    curve.cut(0.0, 92.0, beta=BETA, start=0.0, chained=True)
    assert curve.top == 97.0
    curve.cut(0.0, 200.0, beta=0.95, start=0.0, proven=True)
    curve.cut(0.0, 190.0, beta=BETA, start=0.0, chained=True)  # 133 aiming at 200
    curve.lower(150.0)
    assert curve.top == 150.0
    assert curve.target(0.0) == pytest.approx(133.0)  # not 150 times the chain's depth: 70
    curve.lower(100.0)
    assert curve.target(0.0) == pytest.approx(100.0)  # a quota below the rate: at it
    curve.learn(200, 1.0)
    curve.cut(1.0, 200.0, beta=0.95, start=1.0, proven=True)
    curve.cut(1.0, 190.0, beta=BETA, start=1.0, chained=True)
    assert curve.top == 190.0
    climb = 1 / (1 - curve.shortfall(2.0))  # seconds
    assert curve.target(1 + 2 * climb) == pytest.approx(190 * (2 - BETA))  # as after a full cut


def test_a_pause_delays_the_climb_and_never_hastens_it() -> None:
    """The climb starts when the pause that came with the cut ends."""
    curve = Curve(100.0, recovery=600)
    curve.cut(0.0, 100.0, beta=BETA, start=0.0)
    curve.delay(4.0)
    curve.delay(2.0)
    assert curve.epoch == 4.0
    assert curve.target(4.0) == pytest.approx(100 * BETA)


def test_a_429_sent_before_the_cut_answers_for_it_and_one_sent_after_is_news() -> None:
    """Without a learned window, the cut's time alone parts the episode from the news."""
    curve = Curve(100.0, recovery=600)
    assert not curve.answered_by_cut(0.0)  # nothing was cut yet
    curve.cut(10.0, 100.0, beta=0.95, start=10.0)
    assert curve.answered_by_cut(9.9)
    assert not curve.answered_by_cut(10.1)


def test_once_a_window_is_learned_a_cut_answers_for_429s_sent_within_one_window() -> None:
    """A window quota remembers the requests that overran it for one window after a cut."""
    curve = Curve(100.0, recovery=600)
    curve.learn(100, 1.0)
    for beta in (0.95, BETA):  # a shave or a full cut: the window still holds the overrun
        curve.cut(10.0, 100.0, beta=beta, start=10.0)
        assert curve.answered_by_cut(10.9)
        assert not curve.answered_by_cut(11.0)


def test_forget_drops_the_cut_the_window_and_sets_the_top() -> None:
    """After forget, no 429 answers for an old cut, no window is known, the top is as given."""
    curve = Curve(100.0, recovery=600)
    curve.learn(100, 1.0)
    curve.cut(1.0, 100.0, beta=BETA, start=1.0)
    curve.forget(50.0)
    assert curve.cut_at is None
    assert curve.learned is None
    assert curve.top == 50.0
    assert not curve.answered_by_cut(0.5)
    assert repr(curve) == "<Curve at 50>"
