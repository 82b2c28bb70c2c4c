"""bulkretry check after the fact, against the simulator over a socket: no run wrongly attributed.

A batch with ``--on-ambiguous hold`` against a simulator that accepts a second re-trigger of a
run, loses 10% of the answers after processing (a reset, a 5xx) and answers 5% with a 5xx
without processing: genuinely in doubt, both kinds. ``check`` then resolves what it can, and
the simulator's own records say whether each verdict is true. The check's clock is a minute
ahead (as if it ran a minute after the batch), so no window needs waiting for.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers_resume import FAST, id_lines, records, uuid

from bulkretry._cli.check import Checker, run_check
from bulkretry._cli.main import build_parser, main
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

# The simulator served from a thread of its own, as the CLI tests serve it (their module is
# imported from tests/cli/): the commands run in this thread with their own event loops.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_list_cli import SIM_ENV, SimulatorThread

pytestmark = pytest.mark.e2e

RUNS = 300
HOLD = [*FAST, "--timeout", "1", "--on-ambiguous", "hold"]


class Calm:
    """An ``on_request`` hook: once set, every re-trigger is served normally (no fault)."""

    def __init__(self) -> None:
        self.on = threading.Event()

    def __call__(self, request: RecordedRequest) -> int | None:
        return 200 if self.on.is_set() and request.method == "POST" else None


@pytest.fixture
def calm() -> Calm:
    return Calm()


@pytest.fixture
def sim(calm: Calm) -> Iterator[Simulator]:
    config = SimulatorConfig(
        run_ids=tuple(uuid(i) for i in range(RUNS)),
        flows=100,
        allow_repeat_retrigger=True,
        in_doubt_rate=0.1,
        error_rate=0.05,
        error_statuses=(500, 502, 504),
        seed=7,
        on_request=calm,
    )
    with SimulatorThread(config) as s:
        yield s


def env_for(sim: Simulator) -> dict[str, str]:
    return {**SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url}


def check(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``bulkretry check ARGS`` in this process, its clock a minute ahead."""
    words = ["check", *args]
    ns = build_parser(env, "check").parse_args(words)
    err = io.StringIO()

    def later(settings: Any) -> Checker:
        return Checker(settings, wall=lambda: time.time() + 60)

    return run_check(ns, env, words, stderr=err, checker=later), err.getvalue()


def judge(sim: Simulator, lines: list[dict[str, Any]]) -> tuple[Counter[str], list[str]]:
    """Count the verdicts on lines that were in doubt; list those the simulator contradicts."""
    made = {r.run_id: r.new_run_id for r in sim.retriggers}
    counts: Counter[str] = Counter()
    wrong = []
    for line in lines:
        run_id, outcome = line["run_id"], line["outcome"]
        if outcome == "retriggered" and line["new_run_id"] is not None:
            counts["found"] += 1
            ok = made.get(run_id) == line["new_run_id"]
        elif outcome == "retriggered":
            counts["candidates"] += 1
            ok = made.get(run_id) in line["candidates"]
        elif outcome == "failed":
            counts["not_processed"] += 1
            ok = run_id not in made and line["error"]["kind"] == "not_processed"
        else:
            counts[outcome] += 1
            ok = outcome == "in_doubt"
        if not ok:
            wrong.append(f"{line} (the simulator made {made.get(run_id)})")
    return counts, wrong


def test_results_checked_after_the_fact_name_no_wrong_run(sim: Simulator, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(id_lines(uuid(i) for i in range(RUNS)))
    results, out = tmp_path / "results.jsonl", tmp_path / "checked.jsonl"
    main(["run", str(ids), "-o", str(results), "-q", *HOLD], env=env_for(sim))
    before = records(results)
    in_doubt = {line["run_id"] for line in before if line["outcome"] == "in_doubt"}
    lost = {r.run_id for r in sim.retriggers if r.answer_lost}
    assert len(in_doubt) >= 30, "too few records in doubt for the test to mean much"
    assert lost < in_doubt, "some in doubt must be unprocessed, some processed"
    requests = sim.request_count
    code, err = check([str(results), "-o", str(out), *FAST, "--timeout", "1"], env_for(sim))
    assert code in (0, 1), err
    after = records(out)
    assert [line["run_id"] for line in after] == [line["run_id"] for line in before]
    for old, new in zip(before, after, strict=True):
        if old["run_id"] not in in_doubt:
            assert new == old
    counts, wrong = judge(sim, [line for line in after if line["run_id"] in in_doubt])
    assert wrong == []
    resolved = counts["found"] + counts["candidates"] + counts["not_processed"]
    print(f"\n{len(in_doubt)} in doubt ({len(lost)} processed): {dict(counts)}; {err.strip()}")
    assert resolved >= len(in_doubt) // 2, (counts, err)
    assert counts["not_processed"] > 0
    assert counts["found"] > 0
    # One GET per run in doubt, one listing per flow (no page beyond the first), a pre-flight.
    assert sim.request_count - requests <= 2 * len(in_doubt) + 1
    assert sum(sim.retrigger_counts().values()) == len(sim.retriggers)  # check sent nothing


@pytest.mark.parametrize("resume", ["--resume", "input"])
def test_after_check_state_a_resume_sends_each_run_not_processed_once_and_no_other(
    sim: Simulator, calm: Calm, tmp_path: Path, resume: str
) -> None:
    """Runs found re-triggered are never sent again; those not processed exactly once; those
    still in doubt are held. With --resume (no input), or the same input fed again."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(id_lines(uuid(i) for i in range(RUNS)))
    db = str(tmp_path / "batch.db")
    main(["run", str(ids), "--state", db, "-q", "-o", os.devnull, *HOLD], env=env_for(sim))
    code, err = check(["--state", db, "-o", str(tmp_path / "checked.jsonl")], SIM_ENV)
    assert code in (0, 1), err
    checked = records(tmp_path / "checked.jsonl")
    counts, wrong = judge(sim, checked)
    assert wrong == []
    assert counts["not_processed"] > 0
    print(f"\n{len(checked)} in doubt: {dict(counts)}; {err.strip()}")
    verdicts = {line["run_id"]: line["outcome"] for line in checked}
    calm.on.set()
    mark = sim.request_count
    again = ["--resume"] if resume == "--resume" else [str(ids)]
    main(["run", "--state", db, *again, "-q", "-o", os.devnull], env=env_for(sim))
    sent = Counter(r.run_id for r in sim.requests if r.method == "POST" and r.index > mark)
    assert sent == Counter({run_id for run_id, v in verdicts.items() if v == "failed"})
    after = {r["run_id"]: r for r in map(orjson.loads, _status_rows(db))}
    assert all(after[run_id]["state"] == "retriggered" for run_id in sent)


def _status_rows(db: str) -> list[bytes]:
    """The state file's runs as JSON objects (run_id, state), read as status --list reads."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT run_id, state FROM runs").fetchall()
    finally:
        conn.close()
    return [orjson.dumps({"run_id": run_id, "state": state}) for run_id, state in rows]
