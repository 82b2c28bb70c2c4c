"""Tests of bulkretry._pace.passes: solid 429s (a spent quota) against scattered ones."""

from __future__ import annotations

import math

from bulkretry._pace.passes import Pass


def test_429s_in_a_row_count_until_a_success() -> None:
    """``run`` is the 429s since the last success."""
    p = Pass()
    for sent in (1.0, 2.0, 3.0):
        p.throttled(sent, 100.0)
    assert p.run == 3
    p.succeeded(0.5)
    assert p.run == 0


def test_a_success_sent_after_a_429_makes_the_pass_scattered() -> None:
    """A spent quota lets nothing through after its first 429: a success sent later is news."""
    p = Pass()
    p.throttled(2.0, 100.0)
    p.succeeded(1.0)  # sent before the 429: an answer overtaken, not evidence
    assert not p.scattered
    p.succeeded(3.0)
    assert p.scattered


def test_a_pause_starts_a_new_pass_and_ignores_429s_sent_before_it() -> None:
    """Late 429s for requests sent before the pause say nothing of the pass after it."""
    p = Pass()
    p.throttled(1.0, 100.0)
    p.succeeded(2.0)
    p.restart(5.0)
    assert not p.scattered
    p.throttled(4.0, 100.0)  # sent before the pass began (when the pause ended)
    p.succeeded(6.0)
    assert not p.scattered
    p.throttled(7.0, 100.0)
    p.succeeded(8.0)
    assert p.scattered


def test_the_rate_a_pass_went_at_is_the_one_its_first_429_found() -> None:
    """The rate kept is the one when the pass's first 429 came, before its 429s cut it."""
    p = Pass()
    assert p.rate == math.inf
    p.throttled(1.0, 200.0)
    p.throttled(1.1, 140.0)
    assert p.rate == 200.0
    p.restart(2.0)
    assert p.rate == math.inf
    p.throttled(1.5, 90.0)  # sent before the pass began: not this pass's
    assert p.rate == math.inf
    p.throttled(2.5, 120.0)
    assert p.rate == 120.0


def test_repr_shows_the_state() -> None:
    """repr names the run and whether the pass is scattered."""
    assert repr(Pass()) == "<Pass run=0, scattered=False>"


def test_the_first_success_ever_sent_is_remembered_across_passes() -> None:
    """The first pass starts with the first request that got through, whatever came after."""
    passes = Pass()
    assert passes.first_sent == math.inf
    passes.succeeded(2.0)
    passes.succeeded(1.5)  # answered late, sent earlier
    passes.restart(3.0)
    passes.succeeded(4.0)
    assert passes.first_sent == 1.5


def test_a_cut_judges_afresh_whether_429s_come_scattered() -> None:
    """A success sent after a 429 marks the pass scattered only until the next cut: from then
    on, it is the 429s after the cut that are judged (the pass and its first 429 stay)."""
    passes = Pass()
    passes.throttled(1.0, 100.0)
    passes.succeeded(1.1)
    assert passes.scattered
    passes.cut()
    assert not passes.scattered
    passes.succeeded(1.2)  # no 429 since the cut yet
    assert not passes.scattered
    passes.throttled(2.0, 70.0)
    passes.throttled(2.1, 70.0)
    passes.throttled(2.2, 70.0)
    assert passes.solid
    passes.succeeded(1.9)  # sent before the cut's first 429: overtaken, not evidence
    assert not passes.scattered
    passes.succeeded(2.3)
    assert passes.scattered
    assert passes.first_429 == 1.0
