"""--state: resume after a stop or a kill -9, nothing lost, no run re-triggered twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkretry._cli.main import main
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

SIM_ENV = {
    "BULKRETRY_ACCESS_TOKEN": "sim-access-token",
    "BULKRETRY_API_KEY": "sim-api-key",
    "BULKRETRY_ORG_ID": "SIMORG0000000000000000@AdobeOrg",
}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def bulkretry(
    *args: str,
    base_url: str,
    stdin: bytes | None = None,
    kill_on: asyncio.Event | None = None,
) -> tuple[int, bytes]:
    """Run `python -m bulkretry ARGS`; SIGKILL it as soon as ``kill_on`` is set."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkretry",
        *args,
        env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": base_url},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    done = asyncio.ensure_future(proc.communicate(stdin))
    if kill_on is not None:
        killer = asyncio.ensure_future(kill_on.wait())
        await asyncio.wait({done, killer}, return_when=asyncio.FIRST_COMPLETED)
        if killer.done() and not done.done():
            proc.kill()
        killer.cancel()
    _, err = await asyncio.wait_for(done, 120)
    assert proc.returncode is not None
    return proc.returncode, err


# Kill points: the k-th request the simulator receives, with 429s and 5xx in the mix.
KILL_POINTS = [1, 2, 3, 8, 21, 34, 55, 89, 144]


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", KILL_POINTS)
async def test_kill_9_at_any_request_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, kill_at: int
) -> None:
    """After a SIGKILL at the k-th request and a resume, every record appears once, no run twice."""
    n = 150
    ids = [uuid(i) for i in range(n)]
    killed = asyncio.Event()
    in_flight_at_kill: list[int] = []
    open_requests = 0

    def on_request(request: RecordedRequest) -> None:
        nonlocal open_requests
        if request.index == kill_at and not killed.is_set():
            in_flight_at_kill.append(request.index)
            killed.set()

    config = SimulatorConfig(
        run_ids=tuple(ids),
        allow_repeat_retrigger=True,  # so that a duplicate re-trigger would show
        error_rate=0.15,
        # Only answers that were not processed: any in_doubt then comes from the kill alone.
        error_statuses=(429, 503),
        latency=0.002,
        seed=kill_at,
        on_request=on_request,
    )
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    state = str(tmp_path / "state.db")
    common = ["--state", state, "--rate", "400", "--burst", "8", "--concurrency", "6"]
    async with Simulator(config) as sim:
        await bulkretry(
            "run",
            str(tmp_path / "ids.txt"),
            "-o",
            str(tmp_path / "first.jsonl"),
            *common,
            base_url=sim.base_url,
            kill_on=killed,
        )
        code, err = await bulkretry(
            "run",
            str(tmp_path / "ids.txt"),
            "-o",
            str(tmp_path / "second.jsonl"),
            *common,
            base_url=sim.base_url,
        )
        counts = sim.retrigger_counts()
    second = records(tmp_path / "second.jsonl")
    assert sorted(r["line"] for r in second) == list(range(1, n + 1)), err.decode()
    assert max(counts.values(), default=0) <= 1, "a run was re-triggered twice"
    outcomes = Counter(r["outcome"] for r in second)
    done = outcomes["retriggered"] + outcomes["already_retriggered"]
    assert done + outcomes["in_doubt"] + outcomes["failed"] == n
    # Only requests in flight at the kill (at most the concurrency) can be in doubt.
    assert outcomes["in_doubt"] <= 6
    retriggered = {
        r["run_id"] for r in second if r["outcome"] in ("retriggered", "already_retriggered")
    }
    assert retriggered <= set(counts)
    assert code in (0, 1)


async def test_a_batch_fed_from_a_pipe_resumes_without_the_pipe(tmp_path: Path) -> None:
    """`run --state S` with no input after an interrupted piped batch sends the rest."""
    n = 120
    ids = [uuid(i) for i in range(n)]
    stop = asyncio.Event()

    def on_request(request: RecordedRequest) -> None:
        if request.index == 20:
            stop.set()

    state = str(tmp_path / "s.db")
    async with Simulator(
        SimulatorConfig(run_ids=tuple(ids), latency=0.01, on_request=on_request)
    ) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bulkretry",
            "run",
            "--state",
            state,
            "--rate",
            "300",
            "-o",
            str(tmp_path / "a.jsonl"),
            env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url},
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        communicate = asyncio.ensure_future(proc.communicate(("\n".join(ids) + "\n").encode()))
        await stop.wait()
        proc.send_signal(signal.SIGINT)
        _, err1 = await asyncio.wait_for(communicate, 60)
        assert proc.returncode == 130
        assert b"to resume: ... | bulkretry run --state" in err1
        assert b"--resume" in err1
        code, err2 = await bulkretry(
            "run",
            "--state",
            state,
            "--rate",
            "300",
            "-o",
            str(tmp_path / "a.jsonl"),
            "--overwrite",
            base_url=sim.base_url,
        )
        counts = sim.retrigger_counts()
    assert code == 0, err2.decode()
    second = records(tmp_path / "a.jsonl")
    assert len(second) == n
    assert Counter(r["outcome"] for r in second).keys() <= {"retriggered", "already_retriggered"}
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}


async def test_in_doubt_survives_a_resume_and_is_sent_only_when_asked(tmp_path: Path) -> None:
    """A lost answer is held in_doubt across runs; --retry-in-doubt sends it again."""
    ids = [uuid(i) for i in range(5)]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    state = str(tmp_path / "s.db")
    args = ["run", str(tmp_path / "ids.txt"), "--state", state, "--on-ambiguous", "hold"]
    async with Simulator(SimulatorConfig(run_ids=tuple(ids), allow_repeat_retrigger=True)) as sim:
        sim.script(ids[2], ["in-doubt-502"])
        code1, _ = await bulkretry(*args, "-o", str(tmp_path / "1.jsonl"), base_url=sim.base_url)
        # Re-triggers only: each invocation also makes its pre-flight GET.
        before = sim.endpoint_counts()["re-trigger"]
        code2, err2 = await bulkretry(*args, "-o", str(tmp_path / "2.jsonl"), base_url=sim.base_url)
        assert sim.endpoint_counts()["re-trigger"] == before  # nothing re-sent
        code3, _ = await bulkretry(
            *args, "--retry-in-doubt", "-o", str(tmp_path / "3.jsonl"), base_url=sim.base_url
        )
        third_requests = sim.endpoint_counts()["re-trigger"] - before
    assert (code1, code2) == (1, 1)
    second = {r["run_id"]: r["outcome"] for r in records(tmp_path / "2.jsonl")}
    assert second[ids[2]] == "in_doubt"
    assert b"resolve them with bulkretry check --state" in err2
    assert third_requests == 1
    assert code3 == 0
    listing = tmp_path / "list.txt"
    with listing.open("w") as out:
        import argparse

        from bulkretry._cli.state import run_status

        run_status(argparse.Namespace(state=state, list="retriggered"), out)
    assert sorted(listing.read_text().split()) == sorted(ids)


def test_state_of_another_batch_is_refused_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another base URL or sandbox: exit 2 with one line, the file byte for byte the same."""
    ids = tmp_path / "ids.txt"
    ids.write_text(uuid(1) + "\n")
    state = tmp_path / "s.db"
    env = {**SIM_ENV, "BULKRETRY_BASE_URL": "http://127.0.0.1:9"}
    # A first run records the batch (its request fails to connect; that is fine here).
    main(
        ["run", str(ids), "--state", str(state), "-o", str(tmp_path / "o1"), "--max-attempts", "1"],
        env=env,
    )
    digest = hashlib.sha256(state.read_bytes()).hexdigest()
    capsys.readouterr()
    for other in (
        {"BULKRETRY_BASE_URL": "http://127.0.0.1:10"},
        {"BULKRETRY_SANDBOX": "dev"},
        {"BULKRETRY_ORG_ID": "OTHER@AdobeOrg"},
    ):
        code = main(
            ["run", str(ids), "--state", str(state), "-o", str(tmp_path / "o2")],
            env={**env, **other},
        )
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1
        assert "state" in err
    assert hashlib.sha256(state.read_bytes()).hexdigest() == digest


def test_a_file_that_is_not_a_state_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A text file given as --state is refused (exit 2) and not overwritten."""
    state = tmp_path / "notes.txt"
    state.write_text("my precious notes\n")
    code = main(
        ["run", "--state", str(state), "-o", str(tmp_path / "o")],
        env={**SIM_ENV, "BULKRETRY_BASE_URL": "http://127.0.0.1:9"},
    )
    assert code == 2
    assert state.read_text() == "my precious notes\n"


def test_append_repairs_a_cut_last_line_first(tmp_path: Path) -> None:
    """--append to a results file whose last line was cut by a kill drops the fragment."""
    out = tmp_path / "r.jsonl"
    out.write_bytes(b'{"run_id": "a"}\n{"run_id": "b", "outc')
    ids = tmp_path / "ids.txt"
    ids.write_text(uuid(1) + "\n")
    assert main(["run", "--dry-run", str(ids), "-o", str(out), "--append"], env={}) == 0
    lines = out.read_bytes().splitlines()
    assert lines[0] == b'{"run_id": "a"}'
    assert orjson.loads(lines[1])["outcome"] == "would_retrigger"
    assert len(lines) == 2
