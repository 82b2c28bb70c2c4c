"""Smoke test of benchmarks/goodput.py: scenario (a), bulkretry only, at N=300 (``--quick``).

No goodput target is asserted (the figures depend on the machine and its load); only that the
benchmark runs against a fresh simulator, that bulkretry re-triggers every run exactly once, and
that both the table and the JSON report parse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "goodput.py"

pytestmark = pytest.mark.slow


def test_goodput_quick_scenario_a_bulkretry_only(tmp_path: Path) -> None:
    report = tmp_path / "goodput.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--scenarios",
            "a",
            "--only-bulkretry",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("bulkretry ")]
    assert len(rows) == 1, proc.stdout
    row = rows[0]
    assert row[1] == "300/300"
    time_s, wall_s, ideal_s, share = (float(v) for v in row[2:6])
    assert ideal_s == pytest.approx(1.5)
    assert 0 < time_s <= wall_s
    # The table prints times to 0.01 s: around 1.5 s that alone moves ideal/time by up to 0.004.
    assert share == pytest.approx(ideal_s / time_s, abs=0.006)
    assert row[6].endswith("%")
    assert "(a) share of quota" in proc.stdout

    results = json.loads(report.read_text())["results"]
    assert list(results) == ["a"]
    (ours,) = results["a"]
    assert ours["contender"] == "bulkretry"
    assert ours["complete"] is True
    assert ours["retriggered_runs"] == ours["n"] == 300
    assert ours["duplicates"] == 0
    assert ours["output_ok"] is True
    assert 0 < ours["share"] < 2
    assert 0 <= ours["share_429"] <= 1
