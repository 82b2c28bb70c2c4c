"""Paths a review found sending a run twice or calling a processed run failed, now closed."""

from __future__ import annotations

from pathlib import Path

import orjson
from helpers_resume import FAST, bulkretry, id_lines, records, uuid

from bulkretry._simulator import Simulator, SimulatorConfig

IDS = [uuid(i) for i in range(6)]


def results_line(run_id: str, outcome: str, **extra: object) -> bytes:
    return orjson.dumps({"run_id": run_id, "outcome": outcome, **extra}) + b"\n"


async def test_only_with_state_never_finishes_skipped_runs_that_were_retriggered(
    tmp_path: Path,
) -> None:
    """Runs --only skips, re-triggered by a pass without --state, are not sent as unfinished."""
    state = str(tmp_path / "s.db")
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS), allow_repeat_retrigger=True)) as sim:
        # The state file knows all six runs; --max-retriggers 1 leaves five not_attempted.
        await bulkretry(
            "run", "--state", state, "--max-retriggers", "1", *FAST,
            base_url=sim.base_url, stdin=id_lines(IDS),
        )  # fmt: skip
        # A pass without the state file re-triggers the rest.
        done = tmp_path / "done.jsonl"
        done.write_bytes(
            b"".join(results_line(r, "retriggered", new_run_id=f"n-{r[:8]}") for r in IDS[1:])
        )
        before = dict(sim.retrigger_counts())
        third = await bulkretry(
            "run", "--state", state, "--only", "failed", str(done), "--max-retriggers", "100",
            "-o", str(tmp_path / "out.jsonl"), *FAST,
            base_url=sim.base_url,
        )  # fmt: skip
        after = sim.retrigger_counts()
    assert after == before, third.err
    rows = records(tmp_path / "out.jsonl") if (tmp_path / "out.jsonl").exists() else []
    assert not [r for r in rows if r["outcome"] == "retriggered"]


async def test_an_old_in_doubt_line_does_not_undo_a_retriggered_run_in_the_state_file(
    tmp_path: Path,
) -> None:
    """The state file's retriggered beats an in_doubt line fed back; nothing is sent again."""
    state = str(tmp_path / "s.db")
    run = IDS[0]
    old = tmp_path / "old.jsonl"
    old.write_bytes(results_line(run, "in_doubt"))
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS), allow_repeat_retrigger=True)) as sim:
        await bulkretry(
            "run", "--state", state, *FAST, base_url=sim.base_url, stdin=id_lines([run])
        )
        second = await bulkretry(
            "run", "--state", state, str(old), "-o", str(tmp_path / "2.jsonl"), *FAST,
            base_url=sim.base_url,
        )  # fmt: skip
        third = await bulkretry(
            "run", "--state", state, "--retry-in-doubt", "-o", str(tmp_path / "3.jsonl"), *FAST,
            base_url=sim.base_url, stdin=id_lines([run]),
        )  # fmt: skip
        counts = sim.retrigger_counts()
    assert counts[run] == 1, (second.err, third.err)
    assert [r["outcome"] for r in records(tmp_path / "2.jsonl")] == ["already_retriggered"]
    assert [r["outcome"] for r in records(tmp_path / "3.jsonl")] == ["already_retriggered"]


async def test_retry_in_doubt_sends_only_the_runs_the_input_names(tmp_path: Path) -> None:
    """Runs of the state file left in doubt, which the input does not name, stay held."""
    state = str(tmp_path / "s.db")
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS), allow_repeat_retrigger=True)) as sim:
        for run in IDS:
            sim.script(run, ["in-doubt-502"])
        await bulkretry(
            "run", "--state", state, "--on-ambiguous", "hold", *FAST, base_url=sim.base_url,
            stdin=id_lines(IDS),
        )  # fmt: skip
        before = dict(sim.retrigger_counts())
        again = await bulkretry(
            "run", "--state", state, "--retry-in-doubt", "-o", str(tmp_path / "r.jsonl"), *FAST,
            base_url=sim.base_url, stdin=id_lines(IDS[:1]),
        )  # fmt: skip
        after = sim.retrigger_counts()
    sent = {r for r in IDS if after.get(r, 0) > before.get(r, 0)}
    assert sent == {IDS[0]}, again.err
    held = [r for r in records(tmp_path / "r.jsonl") if r["source"] == state]
    assert {r["outcome"] for r in held} == {"in_doubt"}
    assert len(held) == 5


async def test_a_run_fed_back_in_doubt_and_sent_again_is_never_called_failed(
    tmp_path: Path,
) -> None:
    """--retry-in-doubt on an in_doubt line whose run was processed: in_doubt, not failed."""
    run = IDS[0]
    line = tmp_path / "doubt.jsonl"
    line.write_bytes(results_line(run, "in_doubt"))
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS))) as sim:
        await bulkretry("run", *FAST, base_url=sim.base_url, stdin=id_lines([run]))
        for extra in ([], ["--state", str(tmp_path / "s.db")]):
            out = tmp_path / f"out{len(extra)}.jsonl"
            await bulkretry(
                "run", str(line), "--retry-in-doubt", "-o", str(out), *extra, *FAST,
                base_url=sim.base_url,
            )  # fmt: skip
            [row] = records(out)
            assert row["outcome"] == "in_doubt", row


async def test_a_stop_at_max_retriggers_says_to_raise_it_and_a_resume_is_not_piped(
    tmp_path: Path,
) -> None:
    """The same command after the cap stops at once (the batch's re-triggers count): the hint
    says to raise it, and where, when the cap came from the state file. A --resume reads no
    input: its hint pipes nothing into it."""
    state = str(tmp_path / "s.db")
    ids = tmp_path / "ids.txt"
    ids.write_bytes(id_lines(IDS))
    async with Simulator(SimulatorConfig(run_ids=tuple(IDS))) as sim:
        first = await bulkretry(
            "run", str(ids), "--state", state, "--max-retriggers", "2", *FAST,
            base_url=sim.base_url,
        )  # fmt: skip
        resumed = await bulkretry(
            "run", "--state", state, "--resume", "--max-retriggers", "4", *FAST,
            base_url=sim.base_url,
        )  # fmt: skip
        stored = await bulkretry("run", "--state", state, "--resume", base_url=sim.base_url)
    assert first.code == 3, first.err
    assert "to go on, raise --max-retriggers above 2 (the batch's count) in" in first.err
    assert f"bulkretry run {ids} --state {state} --max-retriggers 2" in first.err
    assert resumed.code == 3, resumed.err
    hint = next(ln for ln in resumed.err.splitlines() if "raise --max-retriggers" in ln)
    assert "..." not in hint
    assert hint.endswith(
        f"bulkretry run --state {state} --resume --max-retriggers 4 " + " ".join(FAST)
    )
    # The cap stored in the state file (4): the command does not name it, the hint does.
    assert stored.code == 3, stored.err
    hint = next(ln for ln in stored.err.splitlines() if "raise --max-retriggers above 4" in ln)
    assert hint.endswith(f"bulkretry run --state {state} --resume --max-retriggers N")
