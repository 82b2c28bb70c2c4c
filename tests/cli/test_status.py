"""`bulkretry status`: a right rate, JSON for machines, every state listable, quiet on a pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bulkretry._cli.main import main
from bulkretry._ledger.ledger import STATES, BatchIdentity, Ledger
from bulkretry._model import ErrorInfo, Outcome

IDENT = BatchIdentity(
    base_url="https://x.test/fs", org_id="O@AdobeOrg", sandbox="dev", op="re-trigger"
)
NOTHING = {"etag": None, "attempts": 1, "http_status": None, "request_id": None}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


@pytest.fixture
def state(tmp_path: Path) -> str:
    """A batch of 3,000 runs: 2,000 retriggered, 990 never sent, 10 failed with a code."""
    path = str(tmp_path / "b.db")
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((uuid(i), "ids.txt", i + 1) for i in range(3000))
        for i in range(2000):
            ledger.outcome(
                uuid(i), Outcome.RETRIGGERED, new_run_id="n", ambiguous=0, error=None, **NOTHING
            )
        for i in range(2000, 2010):
            error = ErrorInfo(kind="http", message="404", error_code="FLOW-1101-404")
            ledger.outcome(
                uuid(i), Outcome.FAILED, new_run_id=None, ambiguous=0, error=error, **NOTHING
            )
    return path


def test_status_json_is_the_summary_object_plus_the_batch(
    state: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json: outcomes, error kinds and codes, requests, exit code, identity."""
    assert main(["status", "--state", state, "--format", "json"], env={}) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["outcomes"]["retriggered"] == 2000
    assert summary["outcomes"]["failed"] == 10
    assert summary["pending"] == 990
    assert summary["error_codes"] == {"FLOW-1101-404": 10}
    assert summary["error_kinds"] == {"http": 10}
    assert summary["requests"] == 2010
    assert summary["exit_code"] == 3  # runs are left: the batch has not ended
    assert summary["batch"]["sandbox"] == "dev"
    assert {"throttled", "learned_rate", "elapsed_s", "ambiguous_attempts"} <= set(summary)


def test_the_rate_counts_runs_sent_not_every_id(
    state: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs never sent do not make the batch look faster than it sent."""
    with Ledger.inspect(state) as ledger:
        info = ledger.info()
    assert info["rate"] is None or info["rate"] == pytest.approx(
        2010 / float(info["elapsed"]), rel=0.05
    )


@pytest.mark.parametrize("listed", STATES)
def test_every_state_can_be_listed(
    state: str, listed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--list takes any state of the state file, already_retriggered and in_flight included."""
    assert main(["status", "--state", state, "--list", listed], env={}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == {"retriggered": 2000, "failed": 10, "pending": 990}.get(listed, 0)


def test_a_reader_that_goes_away_ends_status_quietly(state: str) -> None:
    """`status --list ... | head -1`: one line, exit 0, no BrokenPipeError traceback."""
    proc = subprocess.run(
        f"{sys.executable} -m bulkretry status --state {state} --list retriggered | head -1; "
        'echo "rc=${PIPESTATUS[0]}" >&2',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr.decode().strip().splitlines() == ["rc=0"]
