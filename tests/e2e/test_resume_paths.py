"""Every way to resume after kill -9 accounts for each input run once and sends none twice.

A batch fed from a pipe is killed at the k-th request the simulator receives; each way to
resume starts from exactly what that kill left (the folder restored byte for byte, same paths,
same simulator) and is checked against the simulator's own count of re-triggers (it accepts a
repeat, so a run sent twice shows). The three ways: the same pipe fed again, ``--resume`` with
nothing but ``--state`` and ``-o``, and the very same command line continuing its ``-o`` file.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from helpers_resume import (
    CONCURRENCY,
    DONE,
    FAST,
    Pace,
    Tripwire,
    bulkretry,
    id_lines,
    kill_at,
    outcomes,
    records,
    run_ids_once,
    same_file,
    sent_twice,
    state_list,
    uuid,
)

from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

# One loop for the module: a killed batch (and its simulator) serves every way to resume it.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

KILL_POINTS = [1, 3, 8, 21, 55, 144, 300, 600]
#: The other API key the simulator accepts (its client ID): tells a second batch's requests apart.
SECOND_API_KEY = "sim-client-id"


def batch_size(kill_point: int) -> int:
    """Return how many IDs a batch killed at ``kill_point`` holds: a few hundred beyond k."""
    return max(250, kill_point + 250)


def simulator(ids: Sequence[str], trip: Tripwire, seed: int) -> Simulator:
    """Return a simulator of ``ids`` that re-triggers a run as often as asked (repeats show)."""
    return Simulator(
        SimulatorConfig(
            run_ids=tuple(ids),
            allow_repeat_retrigger=True,
            latency=0.002,
            seed=seed,
            on_request=trip,
        )
    )


def assert_each_once_none_twice(
    rows: Sequence[Mapping[str, Any]], ids: Sequence[str], counts: Mapping[str, int], err: str
) -> None:
    """Check a resumed output: each ID once, no run sent twice, in_doubt only from the kill."""
    problem = run_ids_once(rows, ids)
    assert problem is None, f"{problem}\n{err}"
    assert sent_twice(counts) == [], f"re-triggered twice: {sent_twice(counts)[:5]}\n{err}"
    by_outcome = outcomes(rows)
    assert set(by_outcome) <= DONE | {"in_doubt"}, f"{by_outcome}\n{err}"
    # Only the requests in flight at the kill can be in doubt: at most the concurrency.
    assert by_outcome["in_doubt"] <= CONCURRENCY, f"{by_outcome}\n{err}"
    claimed = {row["run_id"] for row in rows if row["outcome"] in DONE}
    assert claimed <= set(counts), "reported re-triggered, never re-triggered"


@dataclass(slots=True)
class KilledBatch:
    """A batch fed from a pipe and SIGKILLed at the k-th request, kept for every way to resume.

    Each test restores the folder (state file, results file) to what the kill left, at the
    same paths, and resumes against the same simulator; `before` is what the simulator had
    re-triggered when the kill was over, so each resume's count adds to that alone.
    """

    kill_point: int
    ids: list[str]
    folder: Path
    snapshot: Path
    sim: Simulator
    trip: Tripwire
    before: dict[str, int]

    @property
    def state(self) -> str:
        return str(self.folder / "s.db")

    @property
    def command(self) -> tuple[str, ...]:
        """The first command: every option on the command line, nothing in the environment."""
        results = str(self.folder / "results.jsonl")
        return ("run", "--state", self.state, "-o", results, "--base-url", self.sim.base_url, *FAST)

    def restore(self) -> None:
        """Put the folder back as the kill left it, byte for byte, at the same paths."""
        shutil.rmtree(self.folder)
        shutil.copytree(self.snapshot, self.folder)

    def since_kill(self, counts: Mapping[str, int], start: Mapping[str, int]) -> Counter[str]:
        """Add what one resume re-triggered (``counts`` less ``start``) to what the kill left."""
        total = Counter(self.before)
        for run_id, n in counts.items():
            total[run_id] += n - start.get(run_id, 0)
        return +total


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=KILL_POINTS, ids=lambda k: f"killed-at-{k}"
)
async def killed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KilledBatch]:
    """Run a piped batch and SIGKILL it at the k-th request the simulator receives."""
    kill_point: int = request.param
    ids = [uuid(i) for i in range(batch_size(kill_point))]
    trip = Tripwire()
    folder = tmp_path_factory.mktemp(f"killed-at-{kill_point}-")
    async with simulator(ids, trip, kill_point) as sim:
        batch = KilledBatch(
            kill_point, ids, folder, folder.with_name(folder.name + "snapshot"), sim, trip, {}
        )
        await kill_at(kill_point, trip, *batch.command, base_url=None, stdin=id_lines(ids))
        await trip.served()  # requests in flight at the kill are served all the same
        batch.before = sim.retrigger_counts()
        shutil.copytree(folder, batch.snapshot)
        yield batch


async def test_the_same_pipe_fed_again_after_kill_9_accounts_for_each_id_once(
    killed: KilledBatch,
) -> None:
    """Piping the same input into the same command (new -o) after kill -9 finishes the batch."""
    killed.restore()
    start = killed.sim.retrigger_counts()
    out = killed.folder / "second.jsonl"
    command = list(killed.command)
    command[command.index("-o") + 1] = str(out)
    second = await bulkretry(*command, base_url=None, stdin=id_lines(killed.ids))
    counts = killed.since_kill(killed.sim.retrigger_counts(), start)
    rows = records(out)
    assert_each_once_none_twice(rows, killed.ids, counts, second.err)
    assert sorted(row["line"] for row in rows) == list(range(1, len(killed.ids) + 1)), second.err
    assert {row["source"] for row in rows} == {"-"}
    assert second.code == (1 if outcomes(rows)["in_doubt"] else 0), second.err


async def test_resume_alone_after_kill_9_finishes_the_batch_with_its_stored_options(
    killed: KilledBatch,
) -> None:
    """`run --state S --resume -o F`, no other option nor base URL, finishes a killed batch."""
    killed.restore()
    start = killed.sim.retrigger_counts()
    out = killed.folder / "second.jsonl"
    killed.trip.pace = pace = Pace()
    try:
        second = await bulkretry(
            "run",
            "--state",
            killed.state,
            "--resume",
            "-o",
            str(out),
            base_url=None,
            kill_on=pace.too_slow,
        )
    finally:
        killed.trip.pace = None
    counts = killed.since_kill(killed.sim.retrigger_counts(), start)
    assert not pace.too_slow.is_set(), "the resume crawled: it did not use the stored --rate"
    assert second.code in (0, 1), second.err
    rows = records(out)
    assert_each_once_none_twice(rows, killed.ids, counts, second.err)
    assert second.code == (1 if outcomes(rows)["in_doubt"] else 0), second.err


async def test_the_same_command_run_again_after_kill_9_continues_its_output_file(
    killed: KilledBatch,
) -> None:
    """The exact first command again (same pipe, same -o) continues the file: each ID once."""
    killed.restore()
    start = killed.sim.retrigger_counts()
    out = killed.folder / "results.jsonl"
    written = records(out)
    again = await bulkretry(*killed.command, base_url=None, stdin=id_lines(killed.ids))
    counts = killed.since_kill(killed.sim.retrigger_counts(), start)
    assert again.code in (0, 1), again.err
    rows = records(out)
    assert rows[: len(written)] == written, "the records written before the kill were changed"
    assert_each_once_none_twice(rows, killed.ids, counts, again.err)
    assert again.code == (1 if outcomes(rows)["in_doubt"] else 0), again.err


async def test_resume_after_a_kill_mid_pipe_processes_what_was_read_and_asks_for_the_rest(
    tmp_path: Path,
) -> None:
    """Killed while its pipe was still open, `--resume` does the lines read and exits 1 asking."""
    n, read = 800, 512  # a whole chunk of the reader, so "lines read" has one meaning
    ids = [uuid(i) for i in range(n)]
    trip = Tripwire()
    state = str(tmp_path / "s.db")
    async with simulator(ids, trip, 1) as sim:
        options = ("--state", state, "--base-url", sim.base_url, *FAST)
        trip.at = read  # every line read has been sent once this request arrives
        first = await bulkretry(
            "run",
            *options,
            "-o",
            str(tmp_path / "first.jsonl"),
            base_url=None,
            stdin=id_lines(ids[:read]),
            keep_stdin_open=True,
            kill_on=trip.fired,
            timeout=15,
        )
        trip.at = None
        assert first.killed, f"exit {first.code} with the pipe still open:\n{first.err}"
        trip.pace = pace = Pace()
        resumed = await bulkretry(
            "run",
            "--state",
            state,
            "--resume",
            "-o",
            str(tmp_path / "second.jsonl"),
            base_url=None,
            kill_on=pace.too_slow,
        )
        after_resume = sim.retrigger_counts()
        trip.pace = None
        fed = await bulkretry(
            "run", *options, "-o", str(tmp_path / "third.jsonl"), base_url=None, stdin=id_lines(ids)
        )
        counts = sim.retrigger_counts()
    assert not pace.too_slow.is_set(), "the resume crawled: it did not use the stored --rate"
    assert resumed.code == 1, resumed.err
    assert re.search(r"\bfeed\b", resumed.err, re.IGNORECASE), resumed.err
    assert re.search(rf"\b{read} (input )?lines?\b", resumed.err), f"not {read} lines read"
    assert re.search(r"stdin|'-'", resumed.err), "does not name the input (stdin) read"
    assert_each_once_none_twice(records(tmp_path / "second.jsonl"), ids[:read], after_resume, "")
    # Feeding the whole input again then finishes the rest, sending nothing twice.
    third = records(tmp_path / "third.jsonl")
    assert_each_once_none_twice(third, ids, counts, fed.err)
    assert set(counts) >= set(ids[read:]), fed.err


async def test_fresh_ids_piped_into_an_old_state_file_are_all_processed(tmp_path: Path) -> None:
    """New IDs piped into a killed batch's state file are all sent; its unfinished runs too."""
    old = [uuid(i) for i in range(200)]
    fresh = [uuid(i) for i in range(1000, 1150)]
    trip = Tripwire()
    state = tmp_path / "s.db"
    async with simulator(old + fresh, trip, 7) as sim:
        common = ("run", "--state", str(state), *FAST)
        await kill_at(
            50,
            trip,
            *common,
            "-o",
            str(tmp_path / "old.jsonl"),
            base_url=sim.base_url,
            stdin=id_lines(old),
        )
        finished = state_list(state, "retriggered")
        fed = await bulkretry(
            *common, "-o", str(tmp_path / "new.jsonl"), base_url=sim.base_url, stdin=id_lines(fresh)
        )
        counts = sim.retrigger_counts()
    rows = records(tmp_path / "new.jsonl")
    assert fed.code in (0, 1), fed.err
    fresh_rows = [row for row in rows if row["run_id"] in set(fresh)]
    assert run_ids_once(fresh_rows, fresh) is None, fed.err
    assert {row["outcome"] for row in fresh_rows} == {"retriggered"}, fed.err
    assert {row["source"] for row in fresh_rows} == {"-"}
    assert sent_twice(counts) == []
    # Every run the killed batch had not finished (in flight at the kill included) is finished
    # now, with one record whose source is the state file.
    unfinished = [run_id for run_id in old if run_id not in finished]
    old_rows = [row for row in rows if row["run_id"] in set(old)]
    problem = run_ids_once(old_rows, unfinished)
    assert problem is None, f"unfinished runs of the old batch: {problem}\n{fed.err}"
    sources = {row["source"] for row in old_rows}
    assert all(same_file(source, state) for source in sources), sources
    by_outcome = outcomes(old_rows)
    assert set(by_outcome) <= DONE | {"in_doubt"}, by_outcome
    assert by_outcome["in_doubt"] <= CONCURRENCY, by_outcome


@pytest.mark.parametrize("how", ["the same path", "a symlink"])
async def test_a_live_state_file_is_refused_whatever_the_path(tmp_path: Path, how: str) -> None:
    """While a batch runs on a state file, another path to it is refused: exit 2, nothing sent."""
    ids = [uuid(i) for i in range(20)]
    others = [uuid(i) for i in range(100, 120)]
    stray = asyncio.Event()

    def hang(request: RecordedRequest) -> str | None:
        if request.method == "GET":
            return None  # the pre-flight passes: the batch must get as far as its re-triggers
        # The second batch sends with the other API key the simulator accepts (its client ID).
        if request.headers.get("x-api-key") == SECOND_API_KEY:
            stray.set()
        # Nothing is ever answered: the first batch holds its state file until it is killed.
        return "hang"

    trip = Tripwire(answer=hang)
    state = tmp_path / "s.db"
    path = state
    if how == "a symlink":
        path = tmp_path / "elsewhere" / "link.db"
        path.parent.mkdir()
        path.symlink_to(state)
    release = asyncio.Event()
    async with simulator(ids + others, trip, 3) as sim:
        trip.at = 1
        running = asyncio.ensure_future(
            bulkretry(
                "run",
                "--state",
                str(state),
                "-o",
                str(tmp_path / "first.jsonl"),
                *FAST,
                base_url=sim.base_url,
                stdin=id_lines(ids),
                kill_on=release,
            )
        )
        try:
            await asyncio.wait_for(trip.fired.wait(), 30)
            second = await bulkretry(
                "run",
                "--state",
                str(path),
                "-o",
                str(tmp_path / "second.jsonl"),
                *FAST,
                base_url=sim.base_url,
                stdin=id_lines(others),
                kill_on=stray,
                env={"BULKRETRY_API_KEY": SECOND_API_KEY},
                timeout=15,
            )
        finally:
            release.set()
            first = await running
    assert first.killed, first.err
    assert not stray.is_set(), f"the second batch sent requests:\n{second.err}"
    assert second.code == 2, second.err
    assert second.err.count("\n") == 1, second.err


async def test_the_same_command_run_again_repairs_a_cut_last_line_and_continues(
    tmp_path: Path,
) -> None:
    """A results file whose last line a kill cut is repaired, then continued: each ID once."""
    ids = [uuid(i) for i in range(600)]
    trip = Tripwire()
    out = tmp_path / "results.jsonl"
    async with simulator(ids, trip, 5) as sim:
        command = ("run", "--state", str(tmp_path / "s.db"), "-o", str(out), *FAST)
        await kill_at(400, trip, *command, base_url=sim.base_url, stdin=id_lines(ids))
        data = out.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        # Linux breaks a write off at a page when a SIGKILL comes: the kill may have cut the
        # last line itself. If not, cut one as a kill in the middle of a write leaves it.
        if whole == data:
            with out.open("ab") as fh:
                fh.write(b'{"run_id": "0000')
        written = [orjson.loads(line) for line in whole.splitlines()]
        assert written, "the killed batch wrote no record: nothing to continue"
        again = await bulkretry(*command, base_url=sim.base_url, stdin=id_lines(ids))
        counts = sim.retrigger_counts()
    assert again.code in (0, 1), again.err
    rows = records(out)
    assert rows[: len(written)] == written, "the records written before the kill were changed"
    assert_each_once_none_twice(rows, ids, counts, again.err)


async def test_a_kill_9_during_the_pre_flight_leaves_a_batch_its_resume_knows(
    tmp_path: Path,
) -> None:
    """The pre-flight waits until the state file holds the input's first batch: killed at its
    GET, a resume alone finds every run piped in (or names the input to feed again, exit 1),
    and never ends 0 with a line unaccounted for."""
    ids = [uuid(i) for i in range(200)]
    trip = Tripwire()
    trip.on_get = True
    state = tmp_path / "s.db"
    async with simulator(ids, trip, 7) as sim:
        await kill_at(
            1,
            trip,
            "run",
            "--state",
            str(state),
            *FAST,
            "-o",
            str(tmp_path / "first.jsonl"),
            base_url=sim.base_url,
            stdin=id_lines(ids),
        )
        trip.on_get = False
        resumed = await bulkretry(
            "run", "--state", str(state), "--resume", "-o", str(tmp_path / "second.jsonl"),
            base_url=None,
        )  # fmt: skip
        counts = sim.retrigger_counts()
    rows = records(tmp_path / "second.jsonl")
    assert sent_twice(counts) == []
    assert rows, resumed.err  # the piped input is in the state file
    if run_ids_once(rows, ids) is not None:
        assert resumed.code == 1, resumed.err
        assert "never read to its end" in resumed.err
    else:
        assert resumed.code in (0, 1), resumed.err
