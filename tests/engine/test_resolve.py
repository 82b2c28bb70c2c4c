"""--on-ambiguous check: a lost answer is resolved by looking the run up, never by a guess.

The client is a fake Flow Service holding runs (``GET /runs/{id}``) and answering flow
listings filtered by ``flowId`` and ``createdAt``; the wall clock is a number the test sets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import flow_fake
from conftest import virtual_time
from yarl import URL

from bulkretry import Credentials, Outcome, Settings
from bulkretry._engine.governor import Governor
from bulkretry._engine.resolve import Resolver
from bulkretry._engine.steps import AT_ONCE, Done, Flight, Step
from bulkretry._http.auth import StaticToken
from bulkretry._io.source import InputRecord
from bulkretry._model import Answer
from bulkretry._stats import Stats

BASE = "https://platform.example.test/data/foundation/flowservice"
FLOW = "11111111-1804-45d6-8d56-dd51f05c0baf"
T0 = 1_800_000_000.0  # epoch seconds of the first lost answer


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


SETTINGS = Settings(
    base_url=BASE,
    credentials=Credentials(access_token="t", api_key="k", org_id="ORG@AdobeOrg", sandbox="dev"),
    rate=1e6,
    burst=1000,
    backoff_base=0.0,
    on_ambiguous="check",
    check_skew=0.5,
)


class FlowService(flow_fake.Service):
    """Runs by ID, and a flow listing that filters as Flow Service does; times in seconds."""

    def add(self, run_id: str, created: float, flow: str | None = None) -> None:  # type: ignore[override]
        super().add(run_id, int(created * 1000), flow)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def resolver(service: FlowService, clock: Clock, **overrides: Any) -> tuple[Resolver, Stats]:
    settings = dataclasses.replace(SETTINGS, **overrides)
    stats = Stats()
    made = Resolver(
        client=service,  # type: ignore[arg-type]
        tokens=StaticToken("tok"),
        governor=Governor(settings),
        settings=settings,
        stats=stats,
        rng=random.Random(1),
        wall=clock,
    )
    return made, stats


def answered_clearly(
    res: Resolver,
    service: FlowService,
    clock: Clock,
    key: int,
    new_run: str,
    *,
    sent: float,
    flow: str | None = None,
) -> None:
    """A re-trigger sent at ``sent`` whose run is made 10 ms later, answered 20 ms later."""
    clock.now = sent
    res.sending(key)
    service.add(new_run, sent + 0.01, flow)
    clock.now = sent + 0.02
    res.answered(key, new_run)


def lost(res: Resolver, clock: Clock, run_id: str, *, sent: float, lasted: float) -> Flight:
    """An attempt of ``run_id`` that left at ``sent`` and whose answer was lost after ``lasted``."""
    flight = Flight(InputRecord("in.txt", 1, run_id, run_id), attempts=1, ambiguous=1)
    clock.now = sent + lasted
    res.open(flight, sent)
    return flight


async def check(res: Resolver, clock: Clock, flight: Flight, after: float = 3.0) -> Step:
    clock.now += after
    return await res.resolve(flight)


@virtual_time
async def test_one_new_run_of_its_flow_in_the_window_is_the_re_trigger() -> None:
    """The run's flow from GET /runs/{id}, then one listing: two look-ups, the run found."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(100), T0 + 0.2)
    res, stats = resolver(service, clock)
    flight = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    step = await check(res, clock, flight)
    assert step == Done(
        Outcome.RETRIGGERED, None, uuid(100), f'"e-{uuid(100)[:4]}"', resolved_by="lookup"
    )
    assert stats.lookups == 2


@virtual_time
async def test_no_new_run_in_the_window_means_not_processed_so_it_is_sent_again() -> None:
    """Nothing created since the attempt left: the doubt is cleared and the run sent again."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(100), T0 - 60)  # an older run of the flow: not this attempt's
    res, _ = resolver(service, clock)
    flight = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    assert await check(res, clock, flight) is AT_ONCE
    assert flight.ambiguous == 0
    assert not flight.checking


@virtual_time
async def test_a_run_a_clear_answer_claimed_is_never_a_candidate() -> None:
    """Another record's clear answer named one of the two new runs: the other is this one."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(100), T0 + 0.1)
    service.add(uuid(101), T0 + 0.2)
    res, _ = resolver(service, clock)
    res.sending(7)
    flight = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    res.answered(7, uuid(101))
    step = await check(res, clock, flight)
    assert isinstance(step, Done)
    assert step.new_run_id == uuid(100)


@virtual_time
async def test_two_unclaimed_new_runs_are_reported_as_candidates_not_guessed() -> None:
    """Two runs that could be the re-trigger (one may be a scheduled run): retriggered, with
    no new run ID and both candidates."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(100), T0 + 0.1)
    service.add(uuid(101), T0 + 0.3)
    res, _ = resolver(service, clock)
    step = await check(res, clock, lost(res, clock, uuid(1), sent=T0, lasted=0.5))
    assert isinstance(step, Done)
    assert step.outcome is Outcome.RETRIGGERED
    assert step.new_run_id is None
    assert step.candidates == (uuid(100), uuid(101))
    assert step.error is not None
    assert step.error.kind == "ambiguous_match"


@virtual_time
async def test_lost_answers_of_one_flow_are_told_apart_by_their_windows() -> None:
    """Two lost answers of the same flow whose windows overlap: the run only the first window
    holds is the first's, so the one left is the second's; one listing decides both."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3500)
    service.add(uuid(100), T0 + 0.2)  # only in the first window
    service.add(uuid(101), T0 + 1.5)  # in both
    res, stats = resolver(service, clock)
    first = lost(res, clock, uuid(1), sent=T0, lasted=3.0)
    second = lost(res, clock, uuid(2), sent=T0 + 1, lasted=0.5)
    clock.now += 3
    steps = await asyncio.gather(res.resolve(first), res.resolve(second))
    assert [s.new_run_id for s in steps if isinstance(s, Done)] == [uuid(100), uuid(101)]
    # Each run's flow, one listing, and once a batch one page of the sandbox's runs for the
    # clocks' offset (no clear answer to go by here).
    assert stats.lookups == 4


@virtual_time
async def test_fewer_new_runs_than_lost_answers_of_one_time_leaves_both_in_doubt() -> None:
    """Two lost answers at the same moment, one new run: it is one of theirs, nobody can say
    whose, and the other was not processed: both stay in doubt (nothing sent again)."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3500)
    service.add(uuid(100), T0 + 0.2)
    res, _ = resolver(service, clock)
    first = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    second = lost(res, clock, uuid(2), sent=T0, lasted=0.5)
    clock.now += 3
    steps = await asyncio.gather(res.resolve(first), res.resolve(second))
    for step in steps:
        assert isinstance(step, Done)
        assert step.outcome is Outcome.IN_DOUBT
        assert step.candidates == (uuid(100),)


@virtual_time
async def test_a_run_whose_flow_cannot_be_found_stays_in_doubt() -> None:
    """GET /runs/{id} answers 404: no listing can be asked, so nothing is sent on a guess."""
    service, clock = FlowService(), Clock()
    res, _ = resolver(service, clock)
    step = await check(res, clock, lost(res, clock, uuid(1), sent=T0, lasted=0.5))
    assert isinstance(step, Done)
    assert step.outcome is Outcome.IN_DOUBT
    assert step.error is not None
    assert "flow could not be found" in step.error.message


@virtual_time
async def test_the_look_up_waits_for_answers_to_requests_sent_before_its_window_ends() -> None:
    """A request still unanswered may claim a run the listing shows: the check waits for it."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(100), T0 + 0.1)
    res, _ = resolver(service, clock)
    res.sending(9)  # left before the lost answer's window ended, answered later
    flight = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    clock.now += 3
    task = asyncio.create_task(res.resolve(flight))
    await asyncio.sleep(1)
    assert not task.done()
    res.answered(9, uuid(100))  # that request re-triggered uuid(100): not this one's
    step = await task
    assert step is AT_ONCE


@virtual_time
async def test_once_clear_answers_show_the_clocks_agree_runs_are_told_apart_closer() -> None:
    """Five claimed runs listed inside their own requests' times: the service's clock is ours,
    so two lost answers whose widened windows overlap are told apart by their own times."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3500)
    res, _ = resolver(service, clock, check_skew=1.0)
    for i in range(5):  # clear answers just before, of the same flow
        answered_clearly(res, service, clock, 100 + i, uuid(200 + i), sent=T0 - 0.9 + i * 0.1)
    service.add(uuid(100), T0 + 0.1)
    service.add(uuid(101), T0 + 0.9)
    first = lost(res, clock, uuid(1), sent=T0, lasted=0.3)
    second = lost(res, clock, uuid(2), sent=T0 + 0.8, lasted=0.2)
    clock.now += 3
    steps = await asyncio.gather(res.resolve(first), res.resolve(second))
    assert [s.new_run_id for s in steps if isinstance(s, Done)] == [uuid(100), uuid(101)]


@virtual_time
async def test_without_clear_answers_to_go_by_the_same_two_stay_unattributed() -> None:
    """The same two lost answers with no clock offset measured: the full 1 s widening makes
    both runs possible for both, so neither is guessed."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3500)
    service.add(uuid(100), T0 + 0.1)
    service.add(uuid(101), T0 + 0.9)
    res, _ = resolver(service, clock, check_skew=1.0)
    first = lost(res, clock, uuid(1), sent=T0, lasted=0.3)
    second = lost(res, clock, uuid(2), sent=T0 + 0.8, lasted=0.2)
    clock.now += 3
    steps = await asyncio.gather(res.resolve(first), res.resolve(second))
    for step in steps:
        assert isinstance(step, Done)
        assert step.new_run_id is None
        assert step.candidates == (uuid(100), uuid(101))


@virtual_time
async def test_a_run_created_after_the_answer_was_lost_is_never_sent_again() -> None:
    """A 504 while the service still works: the new run shows 1.5 s after the loss, outside the
    window. Nothing says it is not this run's, so the run stays in doubt, not sent again."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    res, _ = resolver(service, clock)
    flight = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    service.add(uuid(100), T0 + 2.0)
    step = await check(res, clock, flight)
    assert isinstance(step, Done)
    assert step.outcome is Outcome.IN_DOUBT
    assert step.candidates == (uuid(100),)


class Lagging(FlowService):
    """A listing shows a run only from its ``visible_at`` (what check_delay waits for)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.visible_at: dict[str, float] = {}

    async def get(self, url: URL | str, token: str) -> Answer:
        hidden = {k: v for k, v in self.runs.items() if self.visible_at.get(k, 0) > self.clock.now}
        for run_id in hidden:
            del self.runs[run_id]
        try:
            return await super().get(url, token)
        finally:
            self.runs.update(hidden)


@virtual_time
async def test_a_check_is_not_decided_by_a_listing_taken_before_its_own_delay_was_over() -> None:
    """M's listing comes 0.1 s after O's loss, before O's run shows: M is sent again (nothing of
    it was processed), but O is left to its own look-up, which finds its run."""
    clock = Clock()
    service = Lagging(clock)
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3600)
    res, _ = resolver(service, clock)
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    o = lost(res, clock, uuid(2), sent=T0 + 0.3, lasted=3.1)
    service.add(uuid(200), T0 + 3.0)
    service.visible_at[uuid(200)] = T0 + 4.5
    clock.now = T0 + 3.5
    assert await res.resolve(m) is AT_ONCE
    clock.now = T0 + 6.4
    step = await res.resolve(o)
    assert isinstance(step, Done)
    assert step.new_run_id == uuid(200)


@virtual_time
async def test_a_run_attributed_to_a_check_not_yet_due_stays_unclaimed_for_its_own_look() -> None:
    """M's listing also shows O's run (only O's window holds it), but O's delay is not over:
    M must not claim it for O, or O's own look finds nothing and sends its run a second time."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3600)
    service.add(uuid(100), T0 + 0.1)  # only in M's window
    service.add(uuid(200), T0 + 1.2)  # only in O's window
    res, _ = resolver(service, clock)
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    o = lost(res, clock, uuid(2), sent=T0 + 0.8, lasted=0.2)
    clock.now = T0 + 3.5  # M's delay is over, O's (lost at T0 + 1.0) is not
    step = await res.resolve(m)
    assert isinstance(step, Done)
    assert step.new_run_id == uuid(100)
    clock.now = T0 + 4.1
    step = await res.resolve(o)
    assert isinstance(step, Done), "O's run was processed: never send it again"
    assert step.new_run_id == uuid(200)


class Slow(FlowService):
    """A service whose every answer takes a second: look-ups of several checks overlap."""

    async def get(self, url: URL | str, token: str) -> Answer:
        await asyncio.sleep(1.0)
        return await super().get(url, token)


@virtual_time
async def test_look_ups_that_overlap_are_each_counted_once() -> None:
    """stats.lookups is the number of requests made, however the checks' look-ups interleave."""
    service, clock = Slow(), Clock()
    flights = []
    res, stats = resolver(service, clock)
    for i in range(4):
        flow = uuid(500 + i)
        service.add(uuid(i), T0 - 3600, flow=flow)
        service.add(uuid(100 + i), T0 + 0.1, flow=flow)
        flights.append(lost(res, clock, uuid(i), sent=T0, lasted=0.5))
    clock.now += 3
    steps = await asyncio.gather(*(res.resolve(f) for f in flights))
    assert [s.new_run_id for s in steps if isinstance(s, Done)] == [uuid(100 + i) for i in range(4)]
    assert stats.lookups == len(service.urls) == 8


@virtual_time
async def test_a_page_of_the_sandbox_measures_the_clocks_and_tells_close_answers_apart() -> None:
    """Two lost answers of one flow 30 ms apart, and no clear answer of that flow: one page of
    the sandbox's runs shows the new runs clear answers claimed (the clocks agree), so each
    lost answer gets its own run instead of both getting both as candidates."""
    service, clock = FlowService(), Clock()
    res, stats = resolver(service, clock)
    for i in range(6):  # clear answers of other flows: their runs made inside their windows
        sent = T0 - 1 + i * 0.1
        answered_clearly(res, service, clock, i, uuid(300 + i), sent=sent, flow=uuid(900 + i))
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3600)
    service.add(uuid(100), T0 + 0.001)
    service.add(uuid(101), T0 + 0.031)
    first = lost(res, clock, uuid(1), sent=T0, lasted=0.003)
    second = lost(res, clock, uuid(2), sent=T0 + 0.03, lasted=0.002)
    clock.now += 3
    steps = await asyncio.gather(res.resolve(first), res.resolve(second))
    assert [s.new_run_id for s in steps if isinstance(s, Done)] == [uuid(100), uuid(101)]
    assert stats.lookups == 4  # each run's flow, one listing, one page of the sandbox


@virtual_time
async def test_a_run_outside_every_narrowed_window_is_no_lost_answers_re_trigger() -> None:
    """Clear answers showed the clocks agree; the one unclaimed run of the flow lies inside the
    lost answer's 1 s widening but outside its own time (another writer's run, or one another
    look-up gave away unclaimed). Called re-triggered on it, the run would never be sent: it
    stays in doubt (the run was not sent again either: something may have been processed)."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    res, _ = resolver(service, clock, check_skew=1.0)
    for i in range(5):  # clear answers of the same flow, inside the listing's reach
        answered_clearly(res, service, clock, 100 + i, uuid(200 + i), sent=T0 - 0.15 + i * 0.02)
    service.add(uuid(100), T0 + 0.1)  # not this one's: it left at T0 + 0.8
    flight = lost(res, clock, uuid(1), sent=T0 + 0.8, lasted=0.2)
    step = await check(res, clock, flight)
    assert isinstance(step, Done)
    assert step.outcome is Outcome.IN_DOUBT
    assert step.candidates == (uuid(100),)


@virtual_time
async def test_windows_linked_one_after_another_are_decided_as_one_group() -> None:
    """D, C and E lost answers one after another; D's window meets C's, C's meets E's, D's
    not E's. Runs 101 (C's) and 102 (E's). Deciding from D's window alone took 102 for C,
    then 101 for D (never processed: lost), and left E's window empty (sent twice)."""
    service, clock = FlowService(), Clock()
    for i in (1, 2, 3):
        service.add(uuid(i), T0 - 3600)
    service.add(uuid(101), T0 + 1.3)
    service.add(uuid(102), T0 + 3.3)
    res, _ = resolver(service, clock, check_delay=0.0)
    d = lost(res, clock, uuid(1), sent=T0, lasted=1.0)
    c = lost(res, clock, uuid(2), sent=T0 + 1.2, lasted=1.8)
    e = lost(res, clock, uuid(3), sent=T0 + 3.2, lasted=1.8)
    clock.now = T0 + 8
    steps = {"d": await res.resolve(d), "e": await res.resolve(e), "c": await res.resolve(c)}
    for name, step in steps.items():
        assert step is not AT_ONCE, name  # every window holds a run: none is sent again
    step = steps["d"]
    assert not (isinstance(step, Done) and step.outcome is Outcome.RETRIGGERED), step


OTHER = "22222222-1804-45d6-8d56-dd51f05c0baf"


class Busy(FlowService):
    """Calls ``meanwhile`` during each listing (answers lost while the listing is under way)."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: list[Any] = []

    async def get(self, url: URL | str, token: str) -> Answer:
        if URL(str(url)).path.endswith("/runs") and self.meanwhile:
            self.meanwhile.pop(0)()
        return await super().get(url, token)


@virtual_time
async def test_answers_lost_during_every_listing_of_other_flows_leave_the_check_decided() -> None:
    """A steady stream of lost answers: one of another flow opens during every listing. Once
    placed it leaves the chain, so the listing decides: nothing new, sent again. (Listing
    again for each left the run in doubt after three listings.)"""
    service, clock = Busy(), Clock()
    service.add(uuid(1), T0 - 3600)
    res, _ = resolver(service, clock)
    flight = lost(res, clock, uuid(1), sent=T0, lasted=0.5)

    def lose(i: int) -> None:
        service.add(uuid(i), T0 - 3600, OTHER)
        lost(res, clock, uuid(i), sent=T0 + 0.4, lasted=clock.now - T0 - 0.4)

    service.meanwhile = [lambda i=i: lose(i) for i in range(2, 12)]  # type: ignore[misc]
    assert await check(res, clock, flight) is AT_ONCE
    assert len(service.listings()) == 1


@virtual_time
async def test_a_check_of_the_flow_opened_during_the_listing_waits_for_its_own_look() -> None:
    """L, of the same flow, opens during M's listing, its window meeting M's. M's run is the
    only one in M's window alone: M is decided at once; L, not due, is left to its own look,
    which finds nothing of its own (M's run is claimed) and sends L again."""
    service, clock = Busy(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(2), T0 - 3600)
    service.add(uuid(100), T0 + 0.1)  # M's, before L's window
    res, _ = resolver(service, clock)
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    late: list[Flight] = []
    service.meanwhile = [lambda: late.append(lost(res, clock, uuid(2), sent=T0 + 0.8, lasted=2.7))]
    step = await check(res, clock, m)
    assert isinstance(step, Done)
    assert step.new_run_id == uuid(100)
    assert len(service.listings()) == 1
    (ell,) = late
    assert ell.checking  # still open: M's listing did not decide for it
    assert await check(res, clock, ell) is AT_ONCE


@virtual_time
async def test_a_window_linked_during_the_listing_that_began_before_it_is_listed_again() -> None:
    """P (due, its run 150 before M's window) is linked to M only by L, an answer lost during
    M's listing whose request left long before. The listing began after P's window: deciding
    from it would find P's window empty and send P a second time. It lists again from P's."""
    service, clock = Busy(), Clock()
    for i in (1, 2, 3):
        service.add(uuid(i), T0 - 3600)
    service.add(uuid(150), T0 - 2.2)  # only in P's window
    res, _ = resolver(service, clock)
    p = lost(res, clock, uuid(2), sent=T0 - 3.0, lasted=1.0)  # [T0-3.5, T0-1.5]
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)  # [T0-0.5, T0+1.0]
    service.meanwhile = [lambda: lost(res, clock, uuid(3), sent=T0 - 1.4, lasted=4.9)]
    assert await check(res, clock, m) is AT_ONCE
    assert sum("flowId" in str(u) for u in service.listings()) == 2  # (and the clocks' page)
    step = await res.resolve(p)
    assert isinstance(step, Done)
    assert step.new_run_id == uuid(150)


def in_doubt(step: Step) -> bool:
    return isinstance(step, Done) and step.outcome is Outcome.IN_DOUBT


@virtual_time
async def test_a_run_made_after_the_listing_began_is_nobodys_while_its_answer_may_come() -> None:
    """M (never processed) and L (processed: run 200, in both windows) are of one flow. During
    M's listing, R leaves and its run 300 is listed before R's clear answer names it; then L's
    answer is lost, its window reaching past M's ``seen``. Were 300 L's, 200 would be M's: M
    called re-triggered, and L, finding its window empty, sent twice. Both stay in doubt."""
    service, clock = Busy(), Clock()
    for i in (1, 2):
        service.add(uuid(i), T0 - 3600)
    service.add(uuid(200), T0 + 0.9)
    res, _ = resolver(service, clock)
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)  # [T0-0.5, T0+1.0]
    late: list[Flight] = []

    def r_leaves_then_l_is_lost() -> None:
        clock.now = T0 + 3.51
        res.sending(77)
        service.add(uuid(300), T0 + 3.52)
        asyncio.get_running_loop().call_later(0.05, res.answered, 77, uuid(300))
        late.append(lost(res, clock, uuid(2), sent=T0 + 0.8, lasted=2.8))

    service.meanwhile = [r_leaves_then_l_is_lost]
    clock.now = T0 + 3.5
    assert in_doubt(await res.resolve(m))
    await asyncio.sleep(0.1)  # R's clear answer
    assert in_doubt(await check(res, clock, late[0]))


@virtual_time
async def test_a_run_made_after_the_listing_began_is_nobodys_for_a_check_lost_before_it() -> None:
    """The same with L lost just before M's ``seen`` (its window still reaching past it)."""
    service, clock = Busy(), Clock()
    for i in (1, 2):
        service.add(uuid(i), T0 - 3600)
    service.add(uuid(200), T0 + 0.9)
    res, _ = resolver(service, clock)
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)
    ell = lost(res, clock, uuid(2), sent=T0 + 0.8, lasted=2.6)

    def r_leaves() -> None:
        clock.now = T0 + 3.51
        res.sending(77)
        service.add(uuid(300), T0 + 3.52)
        asyncio.get_running_loop().call_later(0.05, res.answered, 77, uuid(300))

    service.meanwhile = [r_leaves]
    clock.now = T0 + 3.5
    assert in_doubt(await res.resolve(m))
    await asyncio.sleep(0.1)
    assert in_doubt(await check(res, clock, ell))


class Undated(Busy):
    """Lists the runs in ``undated`` without their ``createdAt`` (filters on it all the same)."""

    def __init__(self) -> None:
        super().__init__()
        self.undated: set[str] = set()

    async def get(self, url: URL | str, token: str) -> Answer:
        answer = await super().get(url, token)
        if URL(str(url)).path.endswith("/runs") and isinstance(answer.body, dict):
            items = [
                {k: v for k, v in run.items() if k != "createdAt" or run["id"] not in self.undated}
                for run in answer.body["items"]
            ]
            return Answer(status=answer.status, body={"items": items})
        return answer


@virtual_time
async def test_a_run_listed_without_a_time_is_nobodys_while_a_request_is_unanswered() -> None:
    """M was never processed. During its listing R leaves, and R's run is listed without a
    time before R's answer names it: it may be R's, so M is not called re-triggered with it."""
    service, clock = Undated(), Clock()
    service.add(uuid(1), T0 - 3600)
    res, _ = resolver(service, clock)
    m = lost(res, clock, uuid(1), sent=T0, lasted=0.5)

    def r_leaves() -> None:
        clock.now = T0 + 3.51
        res.sending(77)
        service.add(uuid(300), T0 + 3.52)
        service.undated.add(uuid(300))
        asyncio.get_running_loop().call_later(0.05, res.answered, 77, uuid(300))

    service.meanwhile = [r_leaves]
    clock.now = T0 + 3.5
    assert in_doubt(await res.resolve(m))


@virtual_time
async def test_with_no_request_unanswered_a_run_made_just_before_the_look_is_its_own() -> None:
    """``check_delay`` 0: the look comes as the answer is lost, its run made 0.3 s before. No
    request is unanswered, so nothing else can name that run: it is this one's."""
    service, clock = FlowService(), Clock()
    service.add(uuid(1), T0 - 3600)
    service.add(uuid(100), T0 + 0.2)
    res, _ = resolver(service, clock, check_delay=0.0)
    step = await check(res, clock, lost(res, clock, uuid(1), sent=T0, lasted=0.5), after=0.0)
    assert isinstance(step, Done)
    assert step.new_run_id == uuid(100)


def test_a_verdict_in_doubt_with_no_new_run_does_not_say_it_found_some() -> None:
    """Fewer new runs (none) than unclear answers: in doubt, saying what it could not tell,
    not 'found new runs ... candidates: ' with an empty list."""
    from bulkretry._engine.attribution import _unsure
    from bulkretry._engine.verdicts import unsure

    for done in (unsure((), "fewer new runs (0) than unclear answers (2)"), _unsure((), "x")):
        assert done.outcome is Outcome.IN_DOUBT
        assert done.error is not None
        assert "found new runs" not in done.error.message
        assert "candidates" not in done.error.message
        assert not done.candidates
    named = unsure(("r1",), "why").error
    assert named is not None
    assert named.message.endswith("candidates: r1")
