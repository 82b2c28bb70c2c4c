"""Flow control shared by workers: the re-trigger cap, halting, the retry budget, end to end."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import bulkretry
from bulkretry import ConfigurationError, Credentials, Outcome, RunResult, Settings
from bulkretry._config import DEFAULT_RETRY_BUDGET
from bulkretry._engine.engine import Engine
from bulkretry._engine.governor import Governor
from bulkretry._exceptions import TransportError
from bulkretry._http.client import Answer
from bulkretry._io.source import InputRecord
from bulkretry._pace.throttle import Throttle
from bulkretry._policy import Action, Decision
from bulkretry._simulator import Simulator, SimulatorConfig


def settings_for(sim: Simulator, **overrides: Any) -> Settings:
    config = sim.config
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "credentials": Credentials(
            access_token=config.access_token, api_key=config.api_key, org_id=config.org_id
        ),
        "rate": 5000.0,
        "burst": 50,
        "concurrency": 8,
        "backoff_base": 0.001,
        "backoff_cap": 0.002,
    }
    values.update(overrides)
    return Settings(**values)


async def run_engine(ids: list[str], settings: Settings) -> tuple[Engine, list[RunResult]]:
    engine = Engine(settings)
    results: list[RunResult] = []

    async def emit(result: RunResult) -> None:
        results.append(result)

    async def records() -> Any:
        yield [InputRecord("ids", n, i, "") for n, i in enumerate(ids, 1)]

    await engine.run(records(), emit)
    return engine, results


async def test_max_retriggers_is_never_passed_even_with_requests_in_flight() -> None:
    """With 8 workers and latency, exactly N runs are re-triggered, the rest not_attempted."""
    config = SimulatorConfig(flows=2, runs_per_flow=40, latency=0.01)
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        engine, results = await run_engine(ids, settings_for(sim, max_retriggers=25))
        performed = sum(sim.retrigger_counts().values())
    outcomes = Counter(r.outcome for r in results)
    assert performed == 25
    assert outcomes == {Outcome.RETRIGGERED: 25, Outcome.NOT_ATTEMPTED: 55}
    assert engine.halt_reason == "reached --max-retriggers 25"


async def test_service_that_is_down_halts_the_batch_cleanly() -> None:
    """Sustained 5xx trips --halt-on: the batch stops, unsent records are not_attempted."""
    config = SimulatorConfig(flows=1, runs_per_flow=300, error_rate=1.0, error_statuses=(503,))
    async with Simulator(config) as sim:
        ids = sim.failed_run_ids()
        engine, results = await run_engine(
            ids, settings_for(sim, halt_on="5xx=20/20", concurrency=4, max_attempts=100)
        )
        requests = sim.request_count
    assert engine.halt_reason is not None
    assert "20" in engine.halt_reason
    assert len(results) == 300
    assert requests < 40
    outcomes = Counter(r.outcome for r in results)
    assert outcomes[Outcome.NOT_ATTEMPTED] >= 290
    assert outcomes[Outcome.IN_DOUBT] == 0


async def test_halt_on_never_lets_records_run_out_their_attempts() -> None:
    """--halt-on never: a failing service fails each record after its attempts instead."""
    config = SimulatorConfig(flows=1, runs_per_flow=5, error_rate=1.0, error_statuses=(503,))
    async with Simulator(config) as sim:
        engine, results = await run_engine(
            sim.failed_run_ids(), settings_for(sim, halt_on="never", max_attempts=3)
        )
    assert engine.halt_reason is None
    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert {r.attempts for r in results} == {3}


async def test_retry_budget_makes_retries_wait_rather_than_fail() -> None:
    """An empty budget delays retries; the records still succeed once it refills."""
    config = SimulatorConfig(
        flows=1, runs_per_flow=40, error_rate=0.5, error_statuses=(503,), seed=3
    )
    async with Simulator(config) as sim:
        engine, results = await run_engine(
            sim.failed_run_ids(),
            settings_for(sim, retry_budget=0.05, max_attempts=30, halt_on="never"),
        )
    assert {r.outcome for r in results} == {Outcome.RETRIGGERED}
    assert engine.stats.budget_waits > 0
    assert engine.governor.budget.retries <= 40 * 0.05 + engine.governor.budget.capacity + 40


def test_bad_halt_on_spec_is_a_configuration_error() -> None:
    """A --halt-on that does not parse is refused before anything starts."""
    with pytest.raises(ConfigurationError, match="halt"):
        Settings(halt_on="5xx=lots")


async def test_governor_counts_a_success_against_the_cap() -> None:
    """A reserved request holds its place under the cap; its success reaches the cap."""
    governor = Governor(Settings(max_retriggers=1, rate=10))
    assert governor.may_send()
    assert await governor.room()
    await governor.cap.acquire()
    assert not governor.may_send()
    reason = governor.answered(
        Answer(status=200, body={"id": "x"}),
        Decision(action=Action.SUCCEED, new_run_id="x"),
        sent_at=0.0,
        now=0.1,
    )
    assert reason == "reached --max-retriggers 1"


async def test_a_503_with_retry_after_pauses_the_throttle_without_cutting_its_rate() -> None:
    """A 503 storm's Retry-After is the service's: everyone waits, the rate stays where it was."""
    governor = Governor(Settings(rate=10))
    assert await governor.room()
    await governor.cap.acquire()
    governor.answered(
        Answer(status=503, body={}),
        Decision(action=Action.RETRY, delay=3.0, throttled=True, retry_after=3.0),
        sent_at=0.0,
        now=0.1,
    )
    assert governor.throttle.rate == 10
    assert governor.throttle.throttled_count == 0
    assert governor.throttle.paused_until > 0


async def test_a_lost_answer_is_told_to_the_throttle_with_its_send_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timeout reaches the throttle as a lost answer (a fixed window's hold may wait for it)."""
    lost: list[float] = []
    monkeypatch.setattr(Throttle, "on_lost", lambda self, sent_at: lost.append(sent_at))
    governor = Governor(Settings(rate=10))
    assert await governor.room()
    await governor.cap.acquire()
    governor.answered(
        TransportError("timed out", kind="timeout", sent=True),
        Decision(action=Action.RETRY, delay=1.0),
        sent_at=4.5,
        now=5.5,
    )
    assert lost == [4.5]
    assert governor.throttle.throttled_count == 0


def test_governor_builds_its_pieces_from_the_settings() -> None:
    """Rate, burst, pause, concurrency, retry budget and halt policy all come from Settings."""
    settings = Settings(rate=12, burst=3, concurrency=4, halt_on="now,5xx=20", max_retriggers=9)
    governor = Governor(settings)
    assert (governor.throttle.max_rate, governor.throttle.burst) == (12, 3)
    assert governor.cap.max_concurrency == 4
    assert governor.budget.ratio == settings.retry_budget == DEFAULT_RETRY_BUDGET
    assert governor.halt_now
    assert (governor.max_retriggers, governor.retriggered) == (9, 0)


def test_governor_repr_shows_every_piece_and_the_counts() -> None:
    """repr shows the throttle, the cap, the budget, the halt detector and the re-trigger counts."""
    text = repr(Governor(Settings(max_retriggers=5, rate=10)))
    for part in (
        "<Governor <Throttle rate=10/10,",
        "<ConcurrencyCap in_flight=0,",
        "<RetryBudget tokens=",
        "<HaltDetector 5xx=90%/100,stall=600 ",
        "retriggered=0 max=5 reserved=0 waiting_for_room=0>",
    ):
        assert part in text


async def test_library_results_show_halts_as_not_attempted() -> None:
    """The library API reports a halted batch's unsent records too."""
    config = SimulatorConfig(flows=1, runs_per_flow=10)
    results: list[bulkretry.RunResult] = []

    async def collect(ids: list[str]) -> None:
        async for result in bulkretry.retrigger(
            ids, settings_for(sim, max_retriggers=3, concurrency=1)
        ):
            results.append(result)

    async with Simulator(config) as sim:
        with pytest.raises(bulkretry.BatchHalted, match="max-retriggers"):
            await collect(sim.failed_run_ids())
    assert Counter(r.outcome for r in results) == {
        Outcome.RETRIGGERED: 3,
        Outcome.NOT_ATTEMPTED: 7,
    }
