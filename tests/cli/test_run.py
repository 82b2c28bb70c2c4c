"""The run command as a process: output safety, broken pipes, full disks, signals, progress."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bulkretry._cli.progress import Progress, format_summary
from bulkretry._config import Credentials, Settings
from bulkretry._engine.governor import Governor
from bulkretry._model import Outcome
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig
from bulkretry._stats import Stats

SIM_ENV = {
    "BULKRETRY_ACCESS_TOKEN": "sim-access-token",
    "BULKRETRY_API_KEY": "sim-api-key",
    "BULKRETRY_ORG_ID": "SIMORG0000000000000000@AdobeOrg",
}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def write_ids(path: Path, count: int) -> Path:
    path.write_text("".join(uuid(i) + "\n" for i in range(count)))
    return path


def bulkretry_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkretry", *args]


def test_stdout_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`bulkretry run … | head -1` prints one line and no traceback."""
    ids = write_ids(tmp_path / "ids.txt", 50_000)
    proc = subprocess.run(
        f"{sys.executable} -m bulkretry run --dry-run {ids} | head -1",
        shell=True,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert len(proc.stdout.splitlines()) == 1
    assert b"Traceback" not in proc.stderr
    assert b"Error" not in proc.stderr


def test_full_disk_stops_the_batch_with_exit_3(tmp_path: Path) -> None:
    """Writing to /dev/full (ENOSPC) stops cleanly with one line, exit 3."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    ids = write_ids(tmp_path / "ids.txt", 20_000)
    proc = subprocess.run(
        bulkretry_cmd("run", "--dry-run", str(ids), "-o", "/dev/full"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3
    assert b"disk is full" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_unwritable_output_fails_before_any_request(tmp_path: Path) -> None:
    """An output in a missing directory is a usage error (exit 2), found before sending."""
    ids = write_ids(tmp_path / "ids.txt", 3)
    proc = subprocess.run(
        bulkretry_cmd(
            "run",
            str(ids),
            "-o",
            str(tmp_path / "no" / "such" / "dir.jsonl"),
            "--base-url",
            "http://127.0.0.1:9",
        ),
        capture_output=True,
        env={**os.environ, **SIM_ENV},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count(b"\n") == 1
    assert b"cannot write output" in proc.stderr


async def _run_and_signal(
    tmp_path: Path, config_kwargs: dict[str, object], signals: list[tuple[int, int]], n: int
) -> tuple[int, list[dict[str, object]], bytes, Simulator]:
    """Run bulkretry against a simulator; send signal s when the k-th re-trigger arrives."""
    ids = write_ids(tmp_path / "ids.txt", n)
    out = tmp_path / "out.jsonl"
    pending = sorted(signals)
    holder: dict[str, asyncio.subprocess.Process] = {}
    posts = 0

    def on_request(request: RecordedRequest) -> None:
        nonlocal posts
        if request.method != "POST":
            return  # the pre-flight's GET
        posts += 1
        while pending and posts >= pending[0][0]:
            _, signum = pending.pop(0)
            holder["proc"].send_signal(signum)

    config = SimulatorConfig(
        run_ids=tuple(uuid(i) for i in range(n)), on_request=on_request, **config_kwargs
    )  # type: ignore[arg-type]
    async with Simulator(config) as sim:
        proc = await asyncio.create_subprocess_exec(
            *bulkretry_cmd("run", str(ids), "-o", str(out), "--rate", "200", "--concurrency", "4"),
            env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url},
            stderr=asyncio.subprocess.PIPE,
        )
        holder["proc"] = proc
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        return proc.returncode, records, stderr, sim


async def test_first_sigint_finishes_in_flight_requests_and_exits_130(tmp_path: Path) -> None:
    """SIGINT stops sending; nothing in doubt, the rest not_attempted, every line accounted."""
    code, records, stderr, sim = await _run_and_signal(
        tmp_path, {"latency": 0.02}, [(30, signal.SIGINT)], 400
    )
    outcomes = Counter(r["outcome"] for r in records)
    assert code == 130
    assert sorted(r["line"] for r in records) == list(range(1, 401))
    assert outcomes["in_doubt"] == 0
    assert outcomes["not_attempted"] > 0
    assert outcomes["retriggered"] == sum(sim.retrigger_counts().values())
    assert b"Traceback" not in stderr


async def test_sigterm_exits_143(tmp_path: Path) -> None:
    """SIGTERM is handled like SIGINT, with exit code 143."""
    code, records, _, _ = await _run_and_signal(
        tmp_path, {"latency": 0.02}, [(10, signal.SIGTERM)], 200
    )
    assert code == 143
    assert len(records) == 200


async def test_second_sigint_stops_at_once_and_in_flight_becomes_in_doubt(tmp_path: Path) -> None:
    """With requests hanging, a second SIGINT cancels them: they end in_doubt."""
    code, records, _, _ = await _run_and_signal(
        tmp_path, {"hang_rate": 1.0}, [(4, signal.SIGINT), (4, signal.SIGINT)], 50
    )
    outcomes = Counter(r["outcome"] for r in records)
    assert code == 130
    assert outcomes["in_doubt"] == 4
    assert outcomes["in_doubt"] + outcomes["not_attempted"] == 50


def test_progress_line_shows_done_total_rate_retries_and_429s() -> None:
    """The live line carries the figures a watcher needs."""
    stats = Stats()
    stats.total = 10
    stats.outcomes[Outcome.RETRIGGERED] = 4
    stats.retries = 3
    stats.throttled = 2
    line = Progress(stats).line()
    assert line.startswith("4/10 done")
    assert "3 retries" in line
    assert "2 throttled" in line


def test_summary_counts_outcomes_requests_and_rate() -> None:
    """The summary names each outcome's count and the requests made."""
    stats = Stats()
    stats.outcomes[Outcome.RETRIGGERED] = 7
    stats.outcomes[Outcome.FAILED] = 1
    stats.attempts = 9
    stats.throttled = 1
    stats.network_errors = 2
    text = format_summary(stats)
    assert "8 records: 7 retriggered, 1 failed" in text
    assert "9 requests" in text
    assert "1 answered 429" in text
    # A timeout is no network error in the records (error.kind "timeout"): named apart.
    assert "2 network errors or timeouts" in text


async def test_the_summary_after_an_eased_last_second_says_the_rate_learned_before_it() -> None:
    """A batch that met a 429 sends its last second 3% slower: the summary's learned rate, in
    text and in progress JSON, is the rate before that ease, of the configured rate."""
    creds = Credentials(access_token="t", api_key="k", org_id="O@AdobeOrg")
    governor = Governor(Settings(credentials=creds, rate=200, burst=1))
    throttle = governor.throttle
    await throttle.acquire()
    throttle.on_throttled(1, sent_at=asyncio.get_running_loop().time())
    learned = throttle.rate
    throttle.ending(0)
    assert throttle.rate < learned
    stats = Stats()
    stats.attempts = 1
    assert f"learned rate {learned:.1f}/s of 200/s allowed" in format_summary(stats, governor)
    assert Progress(stats, governor).record()["learned_rate"] == round(learned, 3)
