"""kill -9 during `run --follow --rounds 3 --state`, then resume: nothing sent twice, follow on.

The batch is killed at the k-th re-trigger the simulator receives, beyond the input's own (so
in the further rounds), and resumed with ``--resume``. The simulator accepts repeats and counts
every re-trigger of every run: one sent twice, across rounds or invocations, shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_resume import (
    Tripwire,
    bulkretry,
    id_lines,
    kill_at,
    records,
    run_ids_once,
    sent_twice,
    uuid,
)

from bulkretry._simulator import Simulator, SimulatorConfig

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

IDS = 60
ROUNDS = 3
#: Runs end at once; look every 50 ms; further rounds without delay.
FOLLOW = ("--follow", "--rounds", str(ROUNDS), "--poll", "0.05", "--round-delay", "0")
FAST = ("--rate", "500", "--concurrency", "4", "--timeout", "5")


def simulator(ids: list[str], trip: Tripwire) -> Simulator:
    return Simulator(
        SimulatorConfig(
            run_ids=tuple(ids),
            allow_repeat_retrigger=True,
            run_duration=0.0,
            fate_shares={"fails-once": 0.3, "always-fails": 0.3},
            latency=0.002,
            seed=2,
            on_request=trip,
        )
    )


@pytest.mark.parametrize("beyond", [1, 9, 25])
async def test_kill_9_in_a_further_round_then_resume_sends_no_run_twice_and_follows_on(
    tmp_path: Path, beyond: int
) -> None:
    """Each input run gets one line; each chain goes on where the kill left it."""
    ids = [uuid(i) for i in range(IDS)]
    trip = Tripwire()
    state, out = tmp_path / "s.db", tmp_path / "out.jsonl"
    async with simulator(ids, trip) as sim:
        first = ("run", "--state", str(state), "-o", str(out), "--base-url", sim.base_url)
        killed = await kill_at(
            IDS + beyond, trip, *first, *FOLLOW, *FAST, base_url=None, stdin=id_lines(ids)
        )
        assert killed.killed, killed.err
        await trip.served()
        before = sim.retrigger_counts()
        trip.at = None
        again = ("run", "--state", str(state), "--resume", "-o", str(out), "--append")
        resumed = await bulkretry(*again, base_url=None)
        counts = sim.retrigger_counts()
        fates = {run_id: sim.fate(run_id) for run_id in ids}
    # The resume writes every input run's line (the killed one may have written some too).
    last = {row["run_id"]: row for row in records(out)}
    assert run_ids_once(list(last.values()), ids) is None
    assert sent_twice(counts) == [], f"re-triggered twice: {sent_twice(counts)}\n{resumed.err}"
    unknown = 0
    for run_id, row in last.items():
        if row["outcome"] == "in_doubt":
            # Its first request was on the wire at the kill: held, never followed.
            assert row["final_status"] is None, row
            assert row["chain"] == [], row
            unknown += 1
            continue
        assert row["chain"], row
        assert row["new_run_id"] == row["chain"][-1]
        if row["final_status"] == "unknown":
            # Only a further round on the wire at the kill may leave its chain unknown.
            assert row["next_round"]["outcome"] == "in_doubt", row
            unknown += 1
            continue
        want = {"succeeds": ("success", 1), "fails-once": ("success", 2)}
        want["always-fails"] = ("failed", ROUNDS)
        assert (row["final_status"], row["rounds"]) == want[fates[run_id]], row
    assert unknown <= 4  # at most the requests in flight at the kill (--concurrency 4)
    # Every run a chain holds but its last was re-triggered exactly once.
    for row in last.values():
        if row["outcome"] == "in_doubt":
            continue
        for run_id in [row["run_id"], *row["chain"][:-1]]:
            assert counts.get(run_id) == 1, (run_id, row)
    assert resumed.code == 1, resumed.err  # the always-fails chains ended failed
    # The resume went on with the chains: it re-triggered runs that were not input runs.
    assert set(counts) - set(before) - set(ids), "no further round after the resume"
