"""The durable ledger: intents and outcomes across invocations and crashes, its reads, its failures.

Admission is in test_admission.py, group commits in test_commits.py, refusals and the lock in
test_files.py, the format in test_schema.py.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_helpers import DONE, IDENT, make_ledger

from bulkretry._exceptions import StateError
from bulkretry._ledger.ledger import Ledger, PriorState


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


# -- intents and outcomes -------------------------------------------------------------------------


async def test_an_intent_for_a_run_never_admitted_is_refused(path: str) -> None:
    """intent() of an unknown run raises StateError rather than recording nothing."""
    with Ledger.open(path, IDENT) as ledger, pytest.raises(StateError, match="never admitted"):
        await ledger.intent("run-x")


async def test_not_attempted_never_hides_an_earlier_doubt(path: str) -> None:
    """A run retried from in_doubt but stopped before sending stays in_doubt."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        ledger.outcome("run-a", "in_doubt", **{**DONE, "new_run_id": None, "etag": None})
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("run-a", "in.txt", 1).state is PriorState.IN_DOUBT
        await ledger.intent("run-a")
        ledger.outcome("run-a", "not_attempted", **{**DONE, "new_run_id": None, "etag": None})
    with Ledger.open(path, IDENT) as ledger:
        admission = ledger.admit("run-a", "in.txt", 1)
    assert (admission.state, admission.attempts) == (PriorState.IN_DOUBT, 2)


def test_an_outcome_for_a_run_never_admitted_is_refused(path: str) -> None:
    """outcome() and ambiguous() of an unknown run raise StateError instead of doing nothing."""
    with Ledger.open(path, IDENT) as ledger:
        with pytest.raises(StateError, match="never admitted"):
            ledger.outcome("run-x", "retriggered", **DONE)
        with pytest.raises(StateError, match="never admitted"):
            ledger.ambiguous("run-x")


def test_unknown_outcomes_are_refused(path: str) -> None:
    """Only final outcomes can be recorded."""
    with Ledger.open(path, IDENT) as ledger, pytest.raises(ValueError, match="duplicate"):
        ledger.outcome("run-a", "duplicate", **DONE)


# -- crashes --------------------------------------------------------------------------------------

CRASH = """
import asyncio, os, signal, sys
from bulkretry._ledger.ledger import BatchIdentity, Ledger

async def main():
    ident = BatchIdentity(base_url=sys.argv[2], org_id=sys.argv[3], sandbox=sys.argv[4],
                          op=sys.argv[5])
    ledger = Ledger.open(sys.argv[1], ident, commit_delay=0, flush_interval=3600)
    for n, run_id in enumerate(("sent", "answered", "ambiguous", "waiting")):
        ledger.admit(run_id, "in.txt", n + 1)
    await ledger.intent("sent")
    await ledger.intent("answered")
    await ledger.intent("ambiguous")
    ledger.ambiguous("ambiguous")
    await ledger.flush()
    ledger.outcome("answered", "retriggered", new_run_id="n", etag="e", attempts=1,
                   ambiguous=0, error=None, http_status=200, request_id="r")
    ledger.admit("unrecorded", "in.txt", 9)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def crashed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger whose process was killed mid-batch (run once, copied by each test)."""
    directory = tmp_path_factory.mktemp("crashed")
    target = directory / "batch.state"
    fields = [IDENT.base_url, IDENT.org_id, IDENT.sandbox, IDENT.op]
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(target), *fields], capture_output=True, timeout=60
    )
    assert done.returncode == -9, done.stderr.decode()
    return directory


@pytest.fixture
def crashed(crashed_template: Path, tmp_path: Path) -> str:
    for file in crashed_template.iterdir():
        shutil.copy(file, tmp_path / file.name)
    return str(tmp_path / "batch.state")


@pytest.mark.slow
def test_runs_in_flight_at_a_crash_are_in_doubt_at_reopen(crashed: str) -> None:
    """A killed process leaves its sent runs IN_DOUBT and its unsent ones PENDING."""
    with Ledger.open(crashed, IDENT) as ledger:
        assert ledger.counts() == dict.fromkeys(ledger.counts(), 0) | {
            "in_doubt": 3,
            "pending": 1,
        }
        assert ledger.admit("sent", "in.txt", 1).state is PriorState.IN_DOUBT
        assert ledger.admit("waiting", "in.txt", 4).state is PriorState.PENDING


@pytest.mark.slow
def test_an_outcome_lost_in_a_crash_leaves_the_run_in_doubt_not_pending(crashed: str) -> None:
    """An outcome not yet flushed is lost, but the durable intent makes the run IN_DOUBT."""
    with Ledger.open(crashed, IDENT) as ledger:
        assert ledger.admit("answered", "in.txt", 2).state is PriorState.IN_DOUBT


@pytest.mark.slow
def test_an_ambiguous_attempt_survives_a_crash(crashed: str) -> None:
    """A flushed ambiguous mark is still there after the crash, with the run in doubt."""
    with Ledger.open(crashed, IDENT) as ledger:
        admission = ledger.admit("ambiguous", "in.txt", 3)
    assert (admission.state, admission.attempts, admission.ambiguous) == (
        PriorState.IN_DOUBT,
        1,
        1,
    )


@pytest.mark.slow
def test_a_run_admitted_after_the_last_commit_is_simply_unknown(crashed: str) -> None:
    """An admission that was never committed is forgotten: the run is NEW, never half-known."""
    with Ledger.open(crashed, IDENT) as ledger:
        assert ledger.admit("unrecorded", "in.txt", 9).state is PriorState.NEW


@pytest.mark.slow
def test_status_of_a_crashed_batch_counts_in_flight_as_in_doubt(crashed: str) -> None:
    """Read-only inspection with no live process reports in-flight runs as in doubt."""
    with Ledger.inspect(crashed) as ledger:
        assert not ledger.live
        assert ledger.counts()["in_doubt"] == 3
        assert list(ledger.list("in_doubt")) == ["sent", "answered", "ambiguous"]


# -- reads ---------------------------------------------------------------------------------------


async def test_resume_ids_lists_every_run_in_first_seen_order(path: str) -> None:
    """resume_ids() streams (run_id, source, line) in the order the runs were first admitted."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many([("b", "one.txt", 1), ("a", "one.txt", 2)])
        ledger.admit_many((f"r{i:04d}", "two.txt", i) for i in range(2500))
        ledger.admit("b", "three.txt", 7)
    with Ledger.open(path, IDENT) as ledger:
        resumed = list(ledger.resume_ids())
        assert resumed[:3] == [("b", "one.txt", 1), ("a", "one.txt", 2), ("r0000", "two.txt", 0)]
        assert len(resumed) == 2502
        assert ledger.admit_many(resumed)[0].state is PriorState.PENDING


async def test_counts_and_list_report_every_state(path: str) -> None:
    """counts() has every state, list() yields the IDs of one in first-seen order."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit_many((run_id, "in.txt", n) for n, run_id in enumerate("abcdef"))
        for run_id in "abcd":
            await ledger.intent(run_id)
        ledger.outcome("a", "retriggered", **DONE)
        ledger.outcome("b", "failed", **DONE)
        ledger.outcome("c", "not_attempted", **DONE)
        ledger.ambiguous("d")
        counts = ledger.counts()
        assert counts == {
            "pending": 2,
            "in_flight": 1,
            "retriggered": 1,
            "already_retriggered": 0,
            "failed": 1,
            "in_doubt": 0,
            "not_attempted": 1,
        }
        assert list(ledger.list("pending")) == ["e", "f"]
        with pytest.raises(ValueError, match="unknown state"):
            list(ledger.list("lost"))
    with Ledger.inspect(path) as ledger:
        assert list(ledger.list("in_doubt")) == ["d"]


async def test_info_reports_identity_invocations_and_rate(path: str) -> None:
    """info() carries what `bulkretry status` prints."""
    make_ledger(path, runs=0)
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("a", "in.txt", 1)
        await ledger.intent("a")
        ledger.outcome("a", "retriggered", **DONE)
        await ledger.flush()
        info = ledger.info()
    assert info["org_id"] == IDENT.org_id
    assert info["op"] == "re-trigger"
    assert info["invocations"] == 2
    assert (info["runs"], info["finished"], info["live"]) == (1, 1, True)
    assert isinstance(info["elapsed"], float)


async def test_status_during_a_live_batch_shows_runs_in_flight(path: str) -> None:
    """While a batch holds the ledger, inspection reports in_flight as such, not as in doubt."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        await ledger.intent("run-a")
        with Ledger.inspect(path) as status:
            assert status.live
            assert (status.counts()["in_flight"], status.counts()["in_doubt"]) == (1, 0)


def test_an_inspected_ledger_refuses_writes(path: str) -> None:
    """The read-only view used by `status` raises StateError on any write."""
    make_ledger(path, runs=1)
    with Ledger.inspect(path) as ledger:
        assert ledger.counts()["pending"] == 1
        with pytest.raises(StateError, match="read-only"):
            ledger.admit("run-b", "in.txt", 1)


# -- failures and housekeeping -------------------------------------------------------------------


def test_no_sqlite_error_escapes_a_broken_ledger(path: str) -> None:
    """Every method turns a SQLite failure into StateError, for writes and reads alike."""
    ledger = Ledger.open(path, IDENT)
    ledger.admit("run-a", "in.txt", 1)
    ledger.write_admitted()
    ledger._conn.close()  # as if the disk vanished
    calls: list[Callable[[], object]] = [
        lambda: ledger.admit("run-b", "in.txt", 2),
        lambda: ledger.admit_many([("run-c", "in.txt", 3)]),
        lambda: ledger.ambiguous("run-a"),
        lambda: ledger.outcome("run-a", "failed", **DONE),
        ledger.counts,
        ledger.info,
        lambda: list(ledger.resume_ids()),
        lambda: list(ledger.list("pending")),
    ]
    for call in calls:
        with pytest.raises(StateError):
            call()
    ledger.close()


def test_a_closed_ledger_refuses_use(path: str) -> None:
    """Using a ledger after close() raises StateError; closing twice is harmless."""
    ledger = Ledger.open(path, IDENT)
    ledger.close()
    ledger.close()
    with pytest.raises(StateError, match="closed"):
        ledger.admit("run-a", "in.txt", 1)


def test_repr_shows_the_ledger_state(path: str) -> None:
    """repr() shows path, invocation, sync mode and what is staged and buffered."""
    with Ledger.open(path, IDENT) as ledger:
        ledger.admit("run-a", "in.txt", 1)
        assert repr(ledger) == (
            f"Ledger({path!r}, open, invocation=1, sync='normal', staged=1, buffered=0, "
            "waiting=0, commits=0, fsyncs=0)"
        )


#: The names other packages import from the wing; a module split must keep them where they are.
IMPORTED = {
    "bulkretry._ledger.ledger": [
        "STATES",
        "Admission",
        "BatchIdentity",
        "Ledger",
        "PriorState",
    ],
    "bulkretry._ledger.schema": [
        "FORMAT_VERSION",
        "IDENTITY_FIELDS",
        "SETTLING_STATES",
        "Admission",
        "PriorState",
        "inspect_file",
    ],
}


@pytest.mark.parametrize("module", sorted(IMPORTED))
def test_the_names_other_packages_import_stay_where_they_are(module: str) -> None:
    """What the engine, the CLI and their tests import from the wing is still exported there."""
    exported = importlib.import_module(module)
    assert set(IMPORTED[module]) <= set(exported.__all__)
    assert all(hasattr(exported, name) for name in IMPORTED[module])


@pytest.mark.parametrize(
    "module", ["records", "files", "schema", "opening", "admission", "commits", "reads", "ledger"]
)
def test_every_module_of_the_wing_exports_only_what_it_has(module: str) -> None:
    """Each module's ``__all__`` names only what the module has (ruff keeps it sorted)."""
    exported = importlib.import_module(f"bulkretry._ledger.{module}")
    assert all(hasattr(exported, name) for name in exported.__all__)
