"""Which files a ledger opens: refusals that leave the file as it was, and one process at a time."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import IDENT, digest, make_ledger

from bulkretry._exceptions import StateError
from bulkretry._ledger import files
from bulkretry._ledger.ledger import Ledger, PriorState
from bulkretry._ledger.schema import FORMAT_VERSION


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "batch.state")


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["base_url", "org_id", "sandbox", "op"])
def test_a_ledger_of_another_batch_is_refused_unchanged(path: str, field: str) -> None:
    """Another base URL, org, sandbox or op is refused, naming the field, without a write."""
    make_ledger(path, runs=3)
    before = digest(path)
    other = dataclasses.replace(IDENT, **{field: "other"})
    with pytest.raises(StateError, match=f"belongs to another batch: its {field} is"):
        Ledger.open(path, other)
    assert digest(path) == before
    Ledger.open(path, IDENT).close()  # and the refusal left no lock behind


def test_a_ledger_of_a_newer_format_is_refused_unchanged(path: str) -> None:
    """A file written by a newer bulkretry is refused and left as it is."""
    make_ledger(path, runs=3)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(StateError, match="newer bulkretry"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


def test_a_text_file_is_refused_unchanged(path: str) -> None:
    """A text file is not a SQLite database: refused, untouched, and no lock file beside it."""
    Path(path).write_text("4fb0418e-1804-45d6-8d56-dd51f05c0baf\n" * 100)
    before = digest(path)
    with pytest.raises(StateError, match="not a SQLite database"):
        Ledger.open(path, IDENT)
    assert digest(path) == before
    assert not os.path.exists(path + ".lock")


def test_a_foreign_sqlite_database_is_refused_unchanged(path: str) -> None:
    """A SQLite database that is not a ledger is refused and left as it is."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StateError, match="SQLite database but not a bulkretry state file"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


@pytest.mark.parametrize("keep", [0.5, 0.1, 50 / 4096])
def test_a_truncated_ledger_is_refused_as_corrupt_unchanged(path: str, keep: float) -> None:
    """A ledger cut short (at a page boundary or not) is corrupt, and left as it is."""
    make_ledger(path, runs=3000)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    before = digest(path)
    with pytest.raises(StateError, match="corrupt"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


def test_a_ledger_with_a_damaged_page_is_refused_as_corrupt_unchanged(path: str) -> None:
    """A page overwritten with garbage fails SQLite's quick_check: refused, left as it is."""
    make_ledger(path, runs=3000)
    data = bytearray(Path(path).read_bytes())
    data[4096 * 3 : 4096 * 4] = b"\xff" * 4096
    Path(path).write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StateError, match="corrupt"):
        Ledger.open(path, IDENT)
    assert digest(path) == before


def test_a_directory_is_refused(tmp_path: Path) -> None:
    """A directory where the state file should be is refused in one sentence."""
    with pytest.raises(StateError, match="not a regular file"):
        Ledger.open(tmp_path, IDENT)


def test_a_zero_byte_file_becomes_a_new_ledger(path: str) -> None:
    """A zero-byte file (e.g. from mktemp or touch) holds nothing to lose: it becomes a ledger."""
    Path(path).touch()
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.admit("run-a", "in.txt", 1).state is PriorState.NEW
    with Ledger.open(path, IDENT) as ledger:
        assert ledger.invocation == 2


def test_every_refusal_is_one_line(path: str) -> None:
    """StateError messages are single sentences a user can read without a traceback."""
    Path(path).write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    with pytest.raises(StateError) as info:
        Ledger.open(path, IDENT)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"state file {path} is corrupt")


def test_inspecting_a_missing_file_is_refused(path: str) -> None:
    """`status` on a path with no ledger says so in one sentence."""
    with pytest.raises(StateError, match="does not exist"):
        Ledger.inspect(path)


# -- the lock -------------------------------------------------------------------------------------


def test_a_second_open_of_a_ledger_in_use_is_refused(path: str) -> None:
    """While one invocation has the ledger open, another is refused, naming the holder's pid."""
    with Ledger.open(path, IDENT) as ledger:
        holder = rf"in use by another bulkretry process \(pid {os.getpid()}\)"
        with pytest.raises(StateError, match=holder):
            Ledger.open(path, IDENT)
        assert ledger.live
    Ledger.open(path, IDENT).close()


def test_the_lock_holds_through_a_symlink_and_a_hard_link(path: str, tmp_path: Path) -> None:
    """One lock per state file, whatever the name that reaches it."""
    with Ledger.open(path, IDENT):
        link = tmp_path / "link.state"
        link.symlink_to(path)
        hard = tmp_path / "hard.state"
        os.link(path, hard)
        for other in (str(link), str(hard), os.path.relpath(path)):
            with pytest.raises(StateError, match="in use by another bulkretry process"):
                Ledger.open(other, IDENT)
        assert files.lock_is_held(str(link))
    assert not files.lock_is_held(str(link))
