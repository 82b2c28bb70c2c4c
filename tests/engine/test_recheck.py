"""bulkretry check's resolver: runs in doubt resolved after the fact by look-ups, never a guess.

The client is a fake Flow Service holding runs (``GET /runs/{id}``) and answering listings
filtered by ``flowId`` and ``createdAt``; the wall clock follows the loop's virtual clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import flow_fake
import pytest
from conftest import virtual_time

from bulkretry import Credentials, Outcome, Settings
from bulkretry._engine.attribution import Window, attribute
from bulkretry._engine.governor import Governor
from bulkretry._engine.recheck import Doubt, Rechecker
from bulkretry._engine.steps import Done
from bulkretry._exceptions import AuthenticationError
from bulkretry._http.auth import StaticToken
from bulkretry._http.lookups import RunView

BASE = "https://platform.example.test/data/foundation/flowservice"
FLOW, OTHER_FLOW = "f1000000-1804-45d6-8d56-dd51f05c0baf", "f2000000-1804-45d6-8d56-dd51f05c0baf"
#: Epoch ms of the lost answer in most tests: an hour before the check's clock starts.
LOST = 1_800_000_000_000
NOW = LOST + 3_600_000
SETTINGS = Settings(
    base_url=BASE,
    credentials=Credentials(access_token="t", api_key="k", org_id="ORG@AdobeOrg", sandbox="dev"),
    rate=1e6,
    burst=1000,
    backoff_base=0.0,
    max_attempts=2,
    check_skew=0.5,
    check_delay=3.0,
    timeout=10.0,
)
SETTLE = 10_000  # the longer of check_delay and timeout, in ms


class Service(flow_fake.Service):
    default_flow = FLOW


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def rechecker(service: Service, **overrides: Any) -> Rechecker:
    settings = dataclasses.replace(SETTINGS, **overrides)
    loop = asyncio.get_running_loop()
    return Rechecker(
        client=service,  # type: ignore[arg-type]
        tokens=StaticToken("tok"),
        governor=Governor(settings),
        settings=settings,
        wall=lambda: NOW / 1000 + loop.time(),
    )


def doubt(run_id: str, *, sent: int = LOST - 2_000, lost: int = LOST) -> Doubt:
    return Doubt(run_id, sent, lost)


def nothing_claimed(ids: set[str]) -> tuple[set[str], set[str]]:
    return set(), set()


def found(service: Service, run_id: str) -> Done:
    etag = service.runs[run_id]["etag"]
    return Done(Outcome.RETRIGGERED, None, run_id, etag, resolved_by="lookup")


@virtual_time
async def test_the_one_new_run_of_its_flow_in_its_window_is_its_re_trigger() -> None:
    """Its flow from GET /runs/{id}, one listing of that flow in its time: the run is found."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_000)
    checker = rechecker(service)
    verdicts = await checker.check([doubt(uuid(1))], nothing_claimed)
    assert verdicts == {uuid(1): found(service, uuid(100))}
    assert checker.stats.requests == 2
    (listing,) = service.listings()
    assert listing.query.getall("property") == [
        f"flowId=={FLOW}",
        f"createdAt>{LOST - 2_000 - 500 - 1}",
        f"createdAt<{LOST + 500 + SETTLE + 1}",
    ]


@virtual_time
async def test_no_new_run_in_its_window_nor_just_after_means_not_processed() -> None:
    """Nothing created from when the request may have left until settle after: safe to resend."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST - 60_000)  # an older run of the flow
    service.add(uuid(101), LOST + 500 + SETTLE + 5_000)  # long after: not this request's
    verdicts = await rechecker(service).check([doubt(uuid(1))], nothing_claimed)
    verdict = verdicts[uuid(1)]
    assert verdict.outcome is Outcome.FAILED
    assert verdict.error is not None
    assert verdict.error.kind == "not_processed"
    assert verdict.resolved_by == "lookup"


@virtual_time
async def test_a_run_created_just_after_the_answer_was_lost_keeps_it_in_doubt() -> None:
    """A 504 may come while the service still works: a run soon after the window is no proof."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST + 4_000)
    verdict = (await rechecker(service).check([doubt(uuid(1))], nothing_claimed))[uuid(1)]
    assert verdict.outcome is Outcome.IN_DOUBT
    assert verdict.error is not None
    assert uuid(100) in verdict.error.message


@virtual_time
async def test_a_run_a_clear_answer_claimed_is_never_a_candidate() -> None:
    """Of two new runs, the one another record's answer named is not this one's."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_500)
    service.add(uuid(101), LOST - 1_000)

    def claimed(ids: set[str]) -> tuple[set[str], set[str]]:
        assert ids == {uuid(100), uuid(101)}
        return {uuid(100)}, set()

    verdicts = await rechecker(service).check([doubt(uuid(1))], claimed)
    assert verdicts == {uuid(1): found(service, uuid(101))}


@virtual_time
async def test_the_only_run_claimed_by_a_clear_answer_means_not_processed() -> None:
    """The one new run of its time is another record's: none was created for this one."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_000)
    verdicts = await rechecker(service).check(
        [doubt(uuid(1))], lambda ids: (ids & {uuid(100)}, set())
    )
    assert verdicts[uuid(1)].outcome is Outcome.FAILED


@virtual_time
async def test_a_run_named_only_as_a_candidate_is_never_attributed_nor_proof_of_nothing() -> None:
    """A candidate of another record may be anybody's: it keeps the run in doubt."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_000)
    verdicts = await rechecker(service).check([doubt(uuid(1))], lambda ids: (set(), set(ids)))
    assert verdicts[uuid(1)].outcome is Outcome.IN_DOUBT


@virtual_time
async def test_two_runs_in_doubt_sharing_two_new_runs_are_both_retriggered_with_candidates() -> (
    None
):
    """As many new runs as records: each was re-triggered; which run is whose is not said."""
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_500)
    service.add(uuid(101), LOST - 1_000)
    verdicts = await rechecker(service).check([doubt(uuid(1)), doubt(uuid(2))], nothing_claimed)
    for i in (1, 2):
        verdict = verdicts[uuid(i)]
        assert verdict.outcome is Outcome.RETRIGGERED
        assert verdict.new_run_id is None
        assert verdict.candidates == (uuid(100), uuid(101))
        assert verdict.error is not None
        assert verdict.error.kind == "ambiguous_match"
    assert len(service.listings()) == 1  # one listing serves both windows


@virtual_time
async def test_two_runs_in_doubt_sharing_one_new_run_both_stay_in_doubt() -> None:
    """Fewer new runs than records: one was not processed, which one cannot be told."""
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_000)
    verdicts = await rechecker(service).check([doubt(uuid(1)), doubt(uuid(2))], nothing_claimed)
    assert {v.outcome for v in verdicts.values()} == {Outcome.IN_DOUBT}


@virtual_time
async def test_a_run_only_its_window_holds_is_its_own_and_the_rest_follows() -> None:
    """Run 101 lies in the second window only: it is that one's, and 100 the first one's."""
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_000)
    service.add(uuid(101), LOST + 9_000)
    wide = doubt(uuid(2), lost=LOST + 10_000)
    verdicts = await rechecker(service).check([doubt(uuid(1)), wide], nothing_claimed)
    assert verdicts == {
        uuid(1): found(service, uuid(100)),
        uuid(2): found(service, uuid(101)),
    }


@virtual_time
async def test_a_window_never_starts_before_the_run_itself_was_created() -> None:
    """A run of the flow created before the run in doubt cannot be its re-trigger."""
    service = Service()
    service.add(uuid(1), LOST - 1_500)
    service.add(uuid(100), LOST - 1_800)
    verdict = (await rechecker(service).check([doubt(uuid(1))], nothing_claimed))[uuid(1)]
    assert verdict.outcome is Outcome.FAILED


@virtual_time
async def test_a_run_with_no_known_window_stays_in_doubt_and_only_its_flow_is_looked_up() -> None:
    """A line that does not say when its request left: its run is read, no listing is made."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    verdicts = await rechecker(service).check([Doubt(uuid(1), None, None, "why")], nothing_claimed)
    assert verdicts[uuid(1)].outcome is Outcome.IN_DOUBT
    assert service.listings() == []


@virtual_time
async def test_a_new_run_a_run_of_unknown_window_may_have_made_is_nobody_s() -> None:
    """Run 2 was sent at a time not known (a resumed batch's held run): 100 may be its re-trigger.

    The only new run in run 1's window must not make run 1 re-triggered: if it was run 2's,
    run 1 was never sent and would be lost.
    """
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_000)
    unplaced = Doubt(uuid(2), None, None, "why")
    verdicts = await rechecker(service).check([doubt(uuid(1)), unplaced], nothing_claimed)
    assert verdicts[uuid(1)].outcome is Outcome.IN_DOUBT
    assert verdicts[uuid(2)].outcome is Outcome.IN_DOUBT


@virtual_time
async def test_as_many_new_runs_as_placed_doubts_prove_nothing_beside_a_run_of_unknown_window() -> (
    None
):
    """Two windows, two new runs, and a third run in doubt of the flow sent at a time not known."""
    service = Service()
    for i in (1, 2, 3):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST - 1_500)
    service.add(uuid(101), LOST - 1_000)
    doubts = [doubt(uuid(1)), doubt(uuid(2)), Doubt(uuid(3), None, None, "why")]
    verdicts = await rechecker(service).check(doubts, nothing_claimed)
    assert {v.outcome for v in verdicts.values()} == {Outcome.IN_DOUBT}


@virtual_time
async def test_a_run_of_unknown_window_in_another_flow_changes_nothing() -> None:
    """Run 2 belongs to another flow: run 1's one new run is still its own."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(2), LOST - 86_400_000, OTHER_FLOW)
    service.add(uuid(100), LOST - 1_000)
    unplaced = Doubt(uuid(2), None, None, "why")
    verdicts = await rechecker(service).check([doubt(uuid(1)), unplaced], nothing_claimed)
    assert verdicts[uuid(1)] == found(service, uuid(100))


@virtual_time
async def test_a_vanished_run_of_unknown_window_keeps_every_flow_from_being_attributed() -> None:
    """Run 2 has no window and no flow any more: its re-trigger may be any new run."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000, OTHER_FLOW)
    service.add(uuid(100), LOST - 1_000, OTHER_FLOW)
    unplaced = Doubt(uuid(2), None, None, "why")
    verdicts = await rechecker(service).check([doubt(uuid(1)), unplaced], nothing_claimed)
    assert verdicts[uuid(1)].outcome is Outcome.IN_DOUBT


@virtual_time
async def test_no_new_run_in_its_window_is_not_processed_even_beside_a_run_of_unknown_window() -> (
    None
):
    """An empty window proves nothing was made for it, whoever else may have made runs."""
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST - 600_000)  # run 2's re-trigger, long before run 1's window
    unplaced = Doubt(uuid(2), None, None, "why")
    verdicts = await rechecker(service).check([doubt(uuid(1)), unplaced], nothing_claimed)
    verdict = verdicts[uuid(1)]
    assert verdict.outcome is Outcome.FAILED
    assert verdict.error is not None
    assert verdict.error.kind == "not_processed"


@virtual_time
async def test_a_vanished_run_stays_in_doubt_and_its_time_attributes_nothing() -> None:
    """Its flow is unknown, so a run in another window of its time may be its re-trigger."""
    service = Service()
    service.add(uuid(2), LOST - 86_400_000, OTHER_FLOW)
    service.add(uuid(100), LOST - 1_000, OTHER_FLOW)
    verdicts = await rechecker(service).check([doubt(uuid(1)), doubt(uuid(2))], nothing_claimed)
    assert verdicts[uuid(1)].outcome is Outcome.IN_DOUBT
    assert verdicts[uuid(2)].outcome is Outcome.IN_DOUBT


@virtual_time
async def test_a_look_up_that_keeps_failing_leaves_the_run_in_doubt() -> None:
    """5xx on GET /runs/{id} until the retries are spent: in doubt, not a guess."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.status[f"/{uuid(1)}"] = 502
    verdict = (await rechecker(service).check([doubt(uuid(1))], nothing_claimed))[uuid(1)]
    assert verdict.outcome is Outcome.IN_DOUBT
    assert verdict.error is not None
    assert "look-up of the run failed" in verdict.error.message


@virtual_time
async def test_a_listing_that_keeps_failing_leaves_the_run_in_doubt() -> None:
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.status["/"] = 503
    verdict = (await rechecker(service).check([doubt(uuid(1))], nothing_claimed))[uuid(1)]
    assert verdict.outcome is Outcome.IN_DOUBT


@virtual_time
async def test_refused_look_ups_raise_rather_than_decide() -> None:
    """A 401 is no answer about the run: the check stops (the command exits 3)."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.status[f"/{uuid(1)}"] = 401
    with pytest.raises(AuthenticationError):
        await rechecker(service).check([doubt(uuid(1))], nothing_claimed)


@virtual_time
async def test_a_fresh_window_is_listed_only_once_it_has_settled() -> None:
    """An answer lost a moment ago: the check waits out the settle time, then decides."""
    service = Service()
    service.add(uuid(1), NOW - 86_400_000)
    checker = rechecker(service)
    loop = asyncio.get_running_loop()
    verdict = (await checker.check([doubt(uuid(1), sent=NOW - 1_000, lost=NOW)], nothing_claimed))[
        uuid(1)
    ]
    assert verdict.outcome is Outcome.FAILED
    assert loop.time() * 1000 >= 500 + SETTLE


@virtual_time
async def test_a_request_left_on_the_wire_is_listed_once_its_timeout_and_settle_are_over() -> None:
    """A request unanswered at a stop a moment ago may land until its timeout: its window ends
    then. The check waits past that and the settle time, and decides; it never lists too early
    and says 'check again later' for a wait it could have made."""
    service = Service()
    service.add(uuid(1), NOW - 86_400_000)
    checker = rechecker(service)
    loop = asyncio.get_running_loop()
    timeout = int(SETTINGS.timeout * 1000)
    left_on_the_wire = doubt(uuid(1), sent=NOW - 1_000, lost=NOW - 1_000 + timeout)
    verdict = (await checker.check([left_on_the_wire], nothing_claimed))[uuid(1)]
    assert verdict.outcome is Outcome.FAILED
    assert loop.time() * 1000 >= timeout - 1_000 + SETTLE


@virtual_time
async def test_a_window_ending_far_ahead_is_waited_for_no_longer_than_it_can_be_true() -> None:
    """A window that ends an hour from now (the clock was set back since) is waited for no
    longer than a window can last past now: a timeout, the clocks' margin and the settle time.
    The listing is then too early, and the run stays in doubt rather than being guessed."""
    service = Service()
    service.add(uuid(1), NOW - 86_400_000)
    checker = rechecker(service)
    loop = asyncio.get_running_loop()
    verdict = (
        await checker.check([doubt(uuid(1), sent=NOW, lost=NOW + 3_600_000)], nothing_claimed)
    )[uuid(1)]
    waited = loop.time() * 1000
    longest = SETTINGS.timeout * 1000 + SETTINGS.check_skew * 1000 + SETTLE
    assert longest - 100 <= waited <= longest + 100
    assert verdict.outcome is Outcome.IN_DOUBT


@virtual_time
async def test_windows_far_apart_are_listed_apart() -> None:
    """Two runs of one flow in doubt a day apart: two short listings, not a day of runs."""
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 7 * 86_400_000)
    day = 86_400_000
    await rechecker(service).check(
        [doubt(uuid(1)), doubt(uuid(2), sent=LOST - day - 2_000, lost=LOST - day)],
        nothing_claimed,
    )
    assert len(service.listings()) == 2


def view(i: int, created: int | None) -> RunView:
    return RunView(id=uuid(i), flow_id=FLOW, created_at=created)


def test_a_run_of_unknown_creation_time_is_inside_every_window() -> None:
    """No createdAt: it may be anybody's, so it is never proof that nothing was processed."""
    verdicts = attribute(
        [Window(uuid(1), 0, 10)],
        [view(100, None)],
        hard=set(),
        soft=set(),
        listed_at=10**9,
        settle=SETTLE,
    )
    assert verdicts[uuid(1)].new_run_id == uuid(100)


def test_its_own_run_is_never_its_re_trigger() -> None:
    verdicts = attribute(
        [Window(uuid(1), 0, 10)],
        [view(1, 5)],
        hard=set(),
        soft=set(),
        listed_at=10**9,
        settle=SETTLE,
    )
    assert verdicts[uuid(1)].outcome is Outcome.FAILED


def test_a_listing_made_before_the_window_settled_decides_nothing_was_processed_never() -> None:
    verdicts = attribute(
        [Window(uuid(1), 0, 10)], [], hard=set(), soft=set(), listed_at=11, settle=SETTLE
    )
    assert verdicts[uuid(1)].outcome is Outcome.IN_DOUBT


# --- the clocks' offset, from the claimed runs' times (a state file's) -------------------------


def clear_answers(
    service: Service, count: int, *, offset: int = 0
) -> dict[str, tuple[float, float]]:
    """``count`` claimed new runs of the flow, created ``offset`` ms off our clock, 20 ms into
    requests answered 40 ms after they left; return their times as a state file keeps them."""
    times = {}
    for i in range(count):
        sent = LOST - 400 + 40 * i  # inside the listing of the windows, as in a batch
        service.add(uuid(200 + i), sent + 20 + offset)
        times[uuid(200 + i)] = (sent / 1000, (sent + 40) / 1000)
    return times


def claiming(times: dict[str, tuple[float, float]]) -> tuple[Any, Any]:
    def claimed(ids: set[str]) -> tuple[set[str], set[str]]:
        return ids & set(times), set()

    def timed(ids: set[str]) -> dict[str, tuple[float, float]]:
        return {i: times[i] for i in ids if i in times}

    return claimed, timed


def close_pair(service: Service) -> list[Doubt]:
    """Two runs of one flow lost 200 ms apart, each with a new run in its own 10 ms window:
    within check_skew (500 ms) of each other."""
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST + 5)
    service.add(uuid(101), LOST + 205)
    return [
        doubt(uuid(1), sent=LOST, lost=LOST + 10),
        doubt(uuid(2), sent=LOST + 200, lost=LOST + 210),
    ]


@virtual_time
async def test_clear_answers_showing_the_clocks_agree_tell_close_windows_apart() -> None:
    service = Service()
    doubts = close_pair(service)
    claimed, timed = claiming(clear_answers(service, 5))
    verdicts = await rechecker(service).check(doubts, claimed, timed)
    assert verdicts == {uuid(1): found(service, uuid(100)), uuid(2): found(service, uuid(101))}


@virtual_time
async def test_without_their_times_or_with_too_few_the_full_skew_keeps_close_windows_in_doubt() -> (
    None
):
    """Four samples are not enough to trust; no times at all (results files) neither."""
    for count, with_times in ((5, False), (4, True)):
        service = Service()
        doubts = close_pair(service)
        claimed, timed = claiming(clear_answers(service, count))
        verdicts = await rechecker(service).check(doubts, claimed, timed if with_times else None)
        assert verdicts[uuid(1)].outcome is not Outcome.FAILED
        assert verdicts[uuid(1)].new_run_id is None, (count, with_times)
        assert verdicts[uuid(2)].new_run_id is None, (count, with_times)


@virtual_time
async def test_a_clock_offset_the_clear_answers_show_keeps_the_windows_wide_enough() -> None:
    """The service's clock 150 ms behind ours: each new run falls outside its window as our
    clock has it, and inside once widened by the offset seen (the two windows then overlap)."""
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST + 5 - 150)
    service.add(uuid(101), LOST + 405 - 150)
    doubts = [
        doubt(uuid(1), sent=LOST, lost=LOST + 10),
        doubt(uuid(2), sent=LOST + 400, lost=LOST + 410),
    ]
    claimed, timed = claiming(clear_answers(service, 5, offset=-150))
    verdicts = await rechecker(service).check(doubts, claimed, timed)
    assert verdicts == {uuid(1): found(service, uuid(100)), uuid(2): found(service, uuid(101))}


@virtual_time
async def test_only_a_window_empty_by_the_full_skew_proves_not_processed() -> None:
    """A new run 30 ms before its request left as our clock has it, and clear answers saying
    the clocks agree: outside the measured margin, inside check_skew. Not proof enough to send
    the run again: a measurement may miss part of the offset."""
    service = Service()
    service.add(uuid(1), LOST - 86_400_000)
    service.add(uuid(100), LOST - 30)
    claimed, timed = claiming(clear_answers(service, 5))
    verdicts = await rechecker(service).check(
        [doubt(uuid(1), sent=LOST, lost=LOST + 10)], claimed, timed
    )
    verdict = verdicts[uuid(1)]
    assert verdict.outcome is Outcome.IN_DOUBT
    assert verdict.error is not None
    assert uuid(100) in verdict.error.message


@virtual_time
async def test_a_second_check_of_a_state_file_never_sends_what_the_first_kept_in_doubt(
    tmp_path: Any,
) -> None:
    """One new run X, within the full check_skew of both A and B, inside A's narrowed window
    only. The first check gives X to A and keeps B in doubt; it records A -> X. The second must
    not take X as a clear answer's run, which would leave B's window empty: not_processed."""
    from bulkretry._cli.check_lines import doubt_of, resolution
    from bulkretry._ledger.ledger import BatchIdentity, Ledger
    from bulkretry._ledger.resolutions import CheckLedger

    ident = BatchIdentity(base_url=BASE, org_id="ORG@AdobeOrg", sandbox="dev", op="re-trigger")
    service = Service()
    for i in (1, 2):
        service.add(uuid(i), LOST - 86_400_000)
    service.add(uuid(100), LOST + 5)
    times = clear_answers(service, 5)
    path = str(tmp_path / "b.db")
    with Ledger.open(path, ident) as ledger:
        ledger.admit_many((run, "in.txt", n) for n, run in enumerate([uuid(1), uuid(2), *times]))
    conn = __import__("sqlite3").connect(path, isolation_level=None)
    for run_id, sent in ((uuid(1), LOST), (uuid(2), LOST + 200)):
        conn.execute(
            "UPDATE runs SET state = 'in_doubt', doubt = 1, attempts = 1, ambiguous = 1, "
            "sent_at = ?1, doubt_from = ?1, doubt_to = ?2, updated_at = ?2 WHERE run_id = ?3",
            (sent / 1000, (sent + 10) / 1000, run_id),
        )
    for run_id, (sent, answered) in times.items():  # a clear answer named each (itself, here)
        conn.execute(
            "UPDATE runs SET state = 'retriggered', attempts = 1, http_status = 200, "
            "new_run_id = ?1, sent_at = ?2, updated_at = ?3 WHERE run_id = ?1",
            (run_id, sent, answered),
        )
    conn.close()
    verdicts = []
    for _ in range(2):
        with CheckLedger.open(path, ident) as ledger:
            doubts = [doubt_of(row) for row in ledger.doubts(in_flight_grace=10.0)]
            found = await rechecker(service).check(doubts, ledger.claimed, ledger.timed)
            ledger.record(r for r in (resolution(k, v) for k, v in found.items()) if r)
            verdicts.append({k: v.outcome for k, v in found.items()})
    assert verdicts[0] == {uuid(1): Outcome.RETRIGGERED, uuid(2): Outcome.IN_DOUBT}
    assert verdicts[1] == {uuid(2): Outcome.IN_DOUBT}
