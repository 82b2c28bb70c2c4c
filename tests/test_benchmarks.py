"""Smoke tests: every benchmark script runs to the end at tiny sizes and prints its figures.

No target is asserted (the figures depend on the machine); only that each script works, checks
its own outputs (it exits non-zero when a contender's output is wrong) and reports ratios.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_throughput_runs() -> None:
    out = run("throughput.py", "--quick", "--ids", "300", "--rounds", "1")
    assert "lean stand-in" in out
    assert "bulkretry/plain: req/s (wall)" in out
    assert "CPU per request" in out
    assert "target req/s" in out


def test_memory_runs_and_dedup_is_exact() -> None:
    out = run("memory.py", "--sizes", "300,1000")
    assert "10 duplicates reported (exact)" in out
    assert out.count("bytes/ID") == 2


def test_startup_runs() -> None:
    out = run("startup.py", "--runs", "1")
    assert "ratio first-request / import-aiohttp" in out
    assert re.search(r"bytecode (NOT )?compiled in ", out)  # as a wheel's install has it


def test_dedup_structures_run() -> None:
    out = run("dedup.py", "--sizes", "1000,3000")
    for kind in ("seenset", "set-str", "set-bytes", "bucket16", "bucket12"):
        assert f"\n{kind}" in out


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_runs_and_derives_the_room() -> None:
    out = run(
        "instructions.py", "--ids", "3", "--only", "bulkretry,plain,floor", "--requests", "10"
    )
    for name in ("bulkretry", "plain", "floor"):
        assert re.search(rf"^{name} +-?\d+k +\d+\.\d\dG$", out, re.MULTILINE), out
    assert "room for everything else" in out


def test_state_runs_and_the_resume_sends_nothing() -> None:
    out = run("state.py", "--quick")
    assert "ratio --state/plain req/s:" in out
    assert "records not already_retriggered on resume: 0" in out


def test_admission_runs_and_the_resume_sends_nothing() -> None:
    out = run("admission.py", "--quick")
    assert "ratio admission/dry-run wall:" in out
    assert re.search(r"admission peak RSS: median \d+\.\d MB", out), out
    assert "records not already_retriggered on resume: 0" in out


def test_quota_shapes_runs_and_prints_its_table() -> None:
    out = run("quota_shapes.py", "--n", "200", "--rows", "bucket", "--only-bulkretry")
    assert "row       contender  goodput rejected" in out
    assert re.search(r"^bucket +bulkretry +\d\.\d{3} +\d+\.\d%", out, re.MULTILINE), out


def test_follow_runs_checks_its_outputs_and_prints_its_table() -> None:
    out = run("follow.py", "--quick")
    assert "contender          N followed  wall s ideal s wall/ideal" in out
    for title in ("run --follow", "run \\+ watch", "run \\+ naive"):
        assert re.search(
            rf"^{title} +300 +\d+ +\d+\.\d +\d+\.\d +\d+\.\d\d .* \d+\.\d{{3}} +\d+ +\d+ +\d+$",
            out,
            re.MULTILINE,
        ), out
    assert "look-up requests per followed run" in out
    assert "all checks passed" in out
