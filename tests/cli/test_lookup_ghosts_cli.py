"""Lost answers that end without a run of their own are other writers: nobody takes their runs.

A lost answer left in doubt (by the in-run look-up, on a record's last attempt, held from an
earlier pass), a lost answer retried (``--on-ambiguous retry``) and a further round in doubt
may each have made a new run that no clear answer names. Taken for another run's re-trigger,
it would make that run ``retriggered`` though it was never sent (lost), and then its own run
look ``not_processed`` (sent twice). Against the simulator's socket; repeats are accepted, so
a run sent twice shows in its counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_check_cli import FAST, HOLD, by_flow, check, env_for, lines_of
from test_list_cli import SimulatorThread

from bulkretry._cli.main import main
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(seed=11, flows=4, runs_per_flow=3, allow_repeat_retrigger=True)
    with SimulatorThread(config) as s:
        yield s


def counts(sim: Simulator) -> dict[str, int]:
    return dict(sim.retrigger_counts())


def by_run(path: Path) -> dict[str, dict[str, Any]]:
    return {line["run_id"]: line for line in lines_of(path)}


def write_ids(path: Path, *run_ids: str) -> Path:
    path.write_text("".join(f"{run_id}\n" for run_id in run_ids))
    return path


def test_a_run_of_a_lost_answer_left_in_doubt_is_never_another_check_s(
    sim: Simulator, tmp_path: Path
) -> None:
    """X's answer is lost after processing; P's 502 (same flow, sent later) was not processed.

    X's look-up finds one new run for two lost answers and leaves X in doubt; P's own look-up
    later finds X's run alone in its window: taken as P's, P would never be sent.
    """
    flows = by_flow(sim)
    x, p = flows[0][:2]
    sim.script(x, ["in-doubt-502"])
    sim.script(p, [502])
    ids = write_ids(tmp_path / "ids.txt", x, flows[1][0], flows[2][0], p)
    results = tmp_path / "r.jsonl"
    main(
        ["run", str(ids), "-o", str(results), "-q", "--rate", "20", "--burst", "1"],
        env=env_for(sim),
    )
    got = by_run(results)
    assert got[p]["outcome"] != "retriggered" or p in counts(sim)


def test_a_run_a_record_s_last_attempt_may_have_made_is_never_another_check_s(
    sim: Simulator, tmp_path: Path
) -> None:
    """X's answer is lost on its last attempt (no check of its own): its run is nobody else's."""
    x, p = by_flow(sim)[0][:2]
    sim.script(x, [503, "in-doubt-502"])
    sim.script(p, [502])
    ids = write_ids(tmp_path / "ids.txt", x, p)
    results = tmp_path / "r.jsonl"
    main(
        ["run", str(ids), "-o", str(results), "-q", *FAST, "--max-attempts", "2"], env=env_for(sim)
    )
    got = by_run(results)
    assert got[x]["outcome"] == "in_doubt"
    assert got[p]["outcome"] != "retriggered" or p in counts(sim)


@pytest.mark.parametrize(
    ("scripts", "extra"),
    [
        ({0: [503, "in-doubt-502"], 1: [502]}, ["--max-attempts", "2"]),
        ({0: ["in-doubt-502"], 1: [502]}, ["--rate", "20", "--burst", "1"]),
    ],
    ids=["last-attempt", "left-in-doubt"],
)
def test_check_state_after_such_a_batch_sends_nothing_twice(
    sim: Simulator, tmp_path: Path, scripts: dict[int, list[Any]], extra: list[str]
) -> None:
    """A false claim by the batch made X's own run look claimed: check --state then called X
    not processed, and the resume sent it a second time."""
    flows = by_flow(sim)
    x, p = flows[0][:2]
    sim.script(x, scripts[0])
    sim.script(p, scripts[1])
    ids = write_ids(tmp_path / "ids.txt", x, flows[1][0], flows[2][0], p)
    db, results = tmp_path / "s.db", tmp_path / "r.jsonl"
    args = ["run", str(ids), "--state", str(db), "-o", str(results), "-q", *FAST, *extra]
    main(args, env=env_for(sim))
    check(["--state", str(db), "-o", str(tmp_path / "checked.jsonl"), *FAST], env_for(sim))
    resume = ["run", "--state", str(db), "--resume", "-o", str(tmp_path / "r2.jsonl"), "-q"]
    main([*resume, *FAST], env=env_for(sim))
    made = counts(sim)
    assert made.get(x, 0) <= 1
    assert by_run(results)[p]["outcome"] != "retriggered" or p in made


def test_check_never_gives_a_retried_lost_answer_s_first_run_to_another(
    sim: Simulator, tmp_path: Path
) -> None:
    """--on-ambiguous retry: X's lost answer was processed, its retry made a second run (the
    one its line names). P's 502s were not processed: X's first run is not P's."""
    x, p = by_flow(sim)[0][:2]
    sim.script(x, ["in-doubt-502", 200])
    sim.script(p, [502, 502])
    ids = write_ids(tmp_path / "ids.txt", x, p)
    results = tmp_path / "r.jsonl"
    retry = ["--on-ambiguous", "retry", "--max-attempts", "2"]
    main(["run", str(ids), "-o", str(results), "-q", *FAST, *retry], env=env_for(sim))
    got = by_run(results)
    assert (got[x]["outcome"], got[p]["outcome"]) == ("retriggered", "in_doubt")
    out = tmp_path / "checked.jsonl"
    check([str(results), "-o", str(out), *FAST], env_for(sim))
    assert p not in counts(sim)
    assert by_run(out)[p]["outcome"] == "in_doubt"


def test_check_never_gives_a_further_round_s_run_in_doubt_to_another(tmp_path: Path) -> None:
    """--follow --rounds 2: the round re-triggering X's failed new run loses its answer after
    processing (its line is retriggered, next_round in_doubt). P's later 502 was not
    processed: the round's run is not P's."""
    failed: set[str] = set()

    def hook(request: RecordedRequest) -> str | None:
        # A re-trigger of a run that is not a seeded failed one: the further round.
        if request.method == "POST" and request.run_id and failed:
            return None if request.run_id in failed else "in-doubt-502"
        return None

    with SimulatorThread(SimulatorConfig(seed=11, flows=4, runs_per_flow=3)) as probe:
        x, p = by_flow(probe)[0][:2]
    config = SimulatorConfig(
        seed=11,
        flows=4,
        runs_per_flow=3,
        fates={x: "always-fails"},
        run_duration=0.3,
        on_request=hook,
    )
    with SimulatorThread(config) as sim:
        failed.update(sim.failed_run_ids())
        first = tmp_path / "r1.jsonl"
        follow = ["--follow", "--rounds", "2", "--round-delay", "0", "--poll", "0.2"]
        ids = write_ids(tmp_path / "x.txt", x)
        main(["run", str(ids), "-o", str(first), "-q", *HOLD, *follow], env=env_for(sim))
        assert lines_of(first)[0]["next_round"]["outcome"] == "in_doubt"
        sim.script(p, [502])
        second = tmp_path / "r2.jsonl"
        ids = write_ids(tmp_path / "p.txt", p)
        main(["run", str(ids), "-o", str(second), "-q", *HOLD], env=env_for(sim))
        both = tmp_path / "both.jsonl"
        both.write_bytes(first.read_bytes() + second.read_bytes())
        out = tmp_path / "checked.jsonl"
        check([str(both), "-o", str(out), *FAST], env_for(sim))
        assert p not in counts(sim)
        assert by_run(out)[p]["outcome"] == "in_doubt"


def test_check_state_never_calls_a_run_fed_back_in_doubt_and_sent_again_not_processed(
    tmp_path: Path,
) -> None:
    """Batch A's answer for X was lost after processing; batch B (--retry-in-doubt, --state)
    sent X again and its 502 was not processed. The state file's window for X is batch B's
    only: X's run, made by A, lies before it. (The service's clock runs 10 s behind, so A's
    run is outside B's window without waiting.)"""
    config = SimulatorConfig(
        seed=11,
        flows=4,
        runs_per_flow=3,
        allow_repeat_retrigger=True,
        wall_clock=lambda: time.time() - 10,
    )
    with SimulatorThread(config) as sim:
        x = by_flow(sim)[0][0]
        sim.script(x, ["in-doubt-502"])
        first = tmp_path / "rA.jsonl"
        main(
            ["run", str(write_ids(tmp_path / "x.txt", x)), "-o", str(first), "-q", *HOLD],
            env=env_for(sim),
        )
        sim.script(x, [502])
        db, second = tmp_path / "sB.db", tmp_path / "rB.jsonl"
        again = ["--retry-in-doubt", "--state", str(db), "-o", str(second), "-q", *HOLD]
        main(["run", str(first), *again], env=env_for(sim))
        assert lines_of(second)[0]["outcome"] == "in_doubt"
        out = tmp_path / "checked.jsonl"
        check(["--state", str(db), "-o", str(out), *FAST], env_for(sim))
        assert lines_of(out)[0]["outcome"] == "in_doubt"
        resume = ["run", "--state", str(db), "--resume", "-o", str(tmp_path / "rC.jsonl")]
        main([*resume, "-q", *HOLD], env=env_for(sim))
        assert counts(sim)[x] == 1
