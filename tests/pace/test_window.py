"""Tests of bulkretry._pace.window: passes of a fixed-window quota and the N learned from them.

FixedWindow is bookkeeping on send times: these tests feed it recorded patterns, with no clock
and no event loop.
"""

from __future__ import annotations

from bulkretry._pace.window import FixedWindow


def run_pass(window: FixedWindow, start: float, successes: int, *, spent_at: float) -> None:
    """One pass from *start*: *successes* answered 200, then a 429 sent at *spent_at*."""
    for i in range(successes):
        assert window.count_success(start + i * 0.01) == "this pass"
    window.spent(spent_at)


def test_the_pass_that_revealed_the_window_gives_the_first_n() -> None:
    """N starts as the successes of the pass that ended in the second pause."""
    window = FixedWindow(100, start=8.0, first_429=10.0)
    assert window.requests == 100
    assert window.pass_start == 8.0
    assert window.in_this_pass(8.0)
    assert not window.in_this_pass(7.9)


def test_a_new_pass_starts_when_the_pause_ends() -> None:
    """next_pass closes the pass under way; requests sent from its start belong to the new one."""
    window = FixedWindow(100, start=0.0, first_429=2.0)
    window.next_pass(10.0)
    assert window.pass_start == 10.0
    assert window.in_this_pass(10.0)
    assert not window.in_this_pass(9.0)


def test_late_successes_of_the_last_pass_count_towards_it() -> None:
    """Successes still in flight when a pass ended are added to it before N is learned from it."""
    window = FixedWindow(100, start=0.0, first_429=2.0)
    window.next_pass(10.0)
    assert window.count_success(1.5) == "an earlier pass"
    assert window.count_success(1.9) == "an earlier pass"
    run_pass(window, 10.0, 50, spent_at=11.0)
    assert window.requests == 102


def test_n_is_the_smaller_of_the_last_two_complete_passes() -> None:
    """A pass that ran into a second window counts more: N follows the smaller of the last two."""
    window = FixedWindow(100, start=0.0, first_429=2.0)
    learned = []
    for start, successes in [(10.0, 60), (20.0, 80), (30.0, 90), (40.0, 95)]:
        window.next_pass(start)
        run_pass(window, start, successes, spent_at=start + 5)
        learned.append(window.requests)
    # Each 429 learns from the pass before the one it ends: 100, then 60, 80 and 90 complete.
    assert learned == [100, 60, 60, 80]


def test_n_never_falls_below_one() -> None:
    """A pass without a single success still leaves N at one."""
    window = FixedWindow(3, start=0.0, first_429=1.0)
    window.next_pass(5.0)
    window.spent(5.0)
    window.next_pass(10.0)
    window.spent(10.0)
    assert window.requests == 1


def test_a_success_sent_after_a_429_of_the_same_pass_means_no_fixed_window() -> None:
    """In a fixed window nothing sent after the window's first 429 succeeds before it ends."""
    window = FixedWindow(100, start=0.0, first_429=2.0)
    window.next_pass(10.0)
    run_pass(window, 10.0, 5, spent_at=11.0)
    window.next_pass(20.0)
    assert window.count_success(10.5) == "an earlier pass"
    assert window.count_success(11.5) == "not a window"


def test_the_earliest_429_of_a_pass_is_the_one_kept() -> None:
    """A 429 answered late for an earlier request moves the pass's first 429 back in time."""
    window = FixedWindow(100, start=0.0, first_429=2.0)
    window.next_pass(10.0)
    window.spent(12.0)
    window.spent(11.0)
    window.next_pass(20.0)
    assert window.count_success(11.5) == "not a window"


def test_a_success_from_before_the_last_pass_is_not_counted() -> None:
    """An answer older than the pass before this one belongs to a window long gone."""
    window = FixedWindow(100, start=5.0, first_429=6.0)
    window.next_pass(10.0)
    assert window.count_success(1.0) == "an earlier pass"
    window.spent(10.5)
    assert window.requests == 100


def test_repr_shows_the_state() -> None:
    """repr shows N and the successes of this pass and the last one."""
    window = FixedWindow(100, start=0.0, first_429=2.0)
    window.next_pass(10.0)
    window.count_success(10.5)
    assert repr(window) == (
        "<FixedWindow N=100, this pass from t=10.000: 1 ok, last pass from t=0.000: 100 ok>"
    )


def test_two_passes_in_a_row_that_ran_on_mean_no_fixed_window() -> None:
    """One pass past N + 1 is a short N; the next one too means passes of random length."""
    window = FixedWindow(4, start=0.0, first_429=1.0)
    window.next_pass(3.0)
    assert window.ran_on() is False
    window.next_pass(6.0)
    assert window.ran_on() is True


def test_a_pass_that_ended_at_n_plus_one_breaks_the_run() -> None:
    """A pass that ran on, then one that ended at its hold: the next to run on is a first."""
    window = FixedWindow(4, start=0.0, first_429=1.0)
    window.next_pass(3.0)
    window.ran_on()
    window.next_pass(6.0)
    window.next_pass(9.0)
    assert window.ran_on() is False
