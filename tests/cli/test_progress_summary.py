"""Progress everywhere (a live line on a terminal, lines in logs) and a machine-readable summary."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import virtual_time

from bulkretry._cli.main import main
from bulkretry._cli.progress import Progress
from bulkretry._io.sink import ResultSink
from bulkretry._model import Outcome
from bulkretry._stats import Stats

SUMMARY_KEYS = {
    "outcomes",
    "error_kinds",
    "error_codes",
    "requests",
    "throttled",
    "ambiguous_attempts",
    "learned_rate",
    "elapsed_s",
    "exit_code",
}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


@virtual_time
async def test_in_a_log_a_whole_progress_line_comes_every_interval() -> None:
    """Not a terminal: done/total, rate, ETA and counts by outcome, one line every 10 s."""
    stats = Stats(total=None)
    stats.outcomes[Outcome.RETRIGGERED] = 412
    stats.outcomes[Outcome.FAILED] = 3
    stream = io.StringIO()
    progress = Progress(stats, stream=stream, live=False, interval=10, read=lambda: 3000)
    progress.start()
    await asyncio.sleep(25)
    await progress.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("bulkretry: progress 415/3000 done")
    assert "ETA" in lines[0]
    assert "412 retriggered, 3 failed" in lines[0]
    assert "\r" not in stream.getvalue()


@virtual_time
async def test_with_json_logs_each_progress_line_is_a_json_object() -> None:
    """--log-format json: log collectors get progress as objects too."""
    stats = Stats(total=100)
    stats.outcomes[Outcome.RETRIGGERED] = 40
    stream = io.StringIO()
    progress = Progress(stats, stream=stream, live=False, interval=5, json=True)
    progress.start()
    await asyncio.sleep(6)
    await progress.stop()
    record = orjson.loads(stream.getvalue().splitlines()[0])
    assert record["event"] == "progress"
    assert (record["done"], record["total"]) == (40, 100)
    assert record["outcomes"] == {"retriggered": 40}


def test_the_live_line_is_cleared_before_results_reach_the_same_terminal() -> None:
    """On one terminal for both, a result line never lands on the end of the status line."""
    stream = io.StringIO()
    progress = Progress(Stats(), stream=stream)
    read_end, write_end = os.pipe()
    sink = ResultSink(write_end, before_write=progress.clear)
    try:
        stream.write("\r\x1b[K12 done")
        progress._drawn = True  # as after a redraw
        sink.add(b'{"run_id": "x"}\n')
        sink.flush()
        assert stream.getvalue().endswith("\r\x1b[K")
        assert os.read(read_end, 100) == b'{"run_id": "x"}\n'
    finally:
        os.close(read_end)
        os.close(write_end)


def test_summary_json_holds_every_key_and_the_final_exit_code(tmp_path: Path) -> None:
    """--summary-json FILE: one object, counts 0 when none, the exit code the process returns."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{uuid(1)}\nnot-an-id\n")
    out = tmp_path / "summary.json"
    code = main(
        ["run", "--dry-run", str(ids), "-o", os.devnull, "--summary-json", str(out)], env={}
    )
    summary = orjson.loads(out.read_bytes())
    assert set(summary) == SUMMARY_KEYS
    assert summary["exit_code"] == code == 1
    assert summary["outcomes"]["would_retrigger"] == 1
    assert summary["outcomes"]["invalid"] == 1
    assert summary["outcomes"]["retriggered"] == 0
    assert summary["error_kinds"] == {"invalid_input": 1}
    assert summary["learned_rate"] is None


def test_with_json_logs_the_summary_on_stderr_is_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log-format json: the summary is one JSON object on stderr, not text."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{uuid(1)}\n")
    main(["run", "--dry-run", str(ids), "-o", os.devnull, "--log-format", "json"], env={})
    last = capsys.readouterr().err.strip().splitlines()[-1]
    summary = orjson.loads(last)
    assert summary["event"] == "summary"
    assert set(summary) == SUMMARY_KEYS | {"event"}


@pytest.mark.slow
def test_a_terminal_on_stdin_is_told_that_run_ids_are_read_from_it() -> None:
    """`bulkretry run` typed at a prompt says what it waits for, instead of hanging silently."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkretry", "run", "--dry-run", "-o", os.devnull],
            stdin=follower,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("BULKRETRY_")},
        )
        os.write(leader, uuid(1).encode() + b"\n\x04")
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert b"reading run IDs from the terminal" in err
    assert proc.returncode == 0
