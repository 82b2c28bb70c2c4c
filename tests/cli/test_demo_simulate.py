"""The demo keeps earlier results unless told, and the simulator's settings can be eval-ed."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulkretry._cli.main import main


def test_demo_refuses_to_overwrite_its_results_without_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second demo does not silently replace the first one's results (exit 2, one line)."""
    out = tmp_path / "demo.jsonl"
    out.write_text('{"run_id": "x", "outcome": "retriggered"}\n')
    assert main(["demo", "--runs", "5", "-o", str(out)], env={}) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err
    assert err.count("\n") == 1
    assert out.read_text().startswith('{"run_id": "x"')


@pytest.mark.slow
def test_demo_with_overwrite_runs_and_echoes_a_command_that_can_be_pasted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The echoed command names no temporary file: it is the same pipeline for a real sandbox."""
    out = tmp_path / "demo.jsonl"
    out.write_text("old\n")
    assert main(["demo", "--runs", "30", "-o", str(out), "--overwrite"], env={}) == 0
    err = capsys.readouterr().err
    pasted = next(line for line in err.splitlines() if "on your sandbox" in line)
    command = pasted.split(": ", 2)[2]
    assert command.startswith("bulkretry list-failed --all-flows --since 1d | bulkretry run ")
    assert "tmp" not in command.split("|")[1].replace(str(tmp_path), "")
    assert len(out.read_text().splitlines()) == 30


@pytest.mark.slow
def test_simulate_env_prints_export_lines_that_list_failed_can_use(tmp_path: Path) -> None:
    """`simulate --env`: eval-able exports, the flows served, and list-failed works from them."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkretry", "simulate", "--env", "--port", "0", "--flows", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or lines[-1].startswith("export"):
            lines.append(proc.stdout.readline().rstrip("\n"))
        exports = {}
        for line in lines:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                (exports[name],) = shlex.split(value)
        assert {"BULKRETRY_BASE_URL", "BULKRETRY_ACCESS_TOKEN", "BULKRETRY_ORG_ID"} <= set(exports)
        flows = exports["BULKRETRY_LIST_FAILED_FLOW_ID"].split(",")
        assert len(flows) == 2
        assert lines[-1] == f"# flow {flows[0]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKRETRY_")}
        listed = subprocess.run(
            [sys.executable, "-m", "bulkretry", "list-failed"],
            env={**env, **exports},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
