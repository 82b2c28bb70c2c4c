"""The state file as a file: its lock, a look at its header, its connections, its fsync.

Nothing here knows what a ledger holds (``schema`` does): these are the steps around the
database that keep a refused file untouched and a file in use by one process at a time.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import urllib.parse

from .._exceptions import StateError

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt
else:
    import fcntl

__all__ = [
    "FileLock",
    "connect",
    "connect_readonly",
    "fsync",
    "lock_is_held",
    "precheck",
]

_SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite's page cache. The input's runs are written in run ID order (see staging), so a larger
# cache saved little: 32 MiB admitted a million runs 7% faster than 8 MiB, for 24 MB of RSS.
_CACHE_KIB = 8 * 1024
_BUSY_MS = 5000
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class FileLock:
    """An exclusive, non-blocking ``flock`` on the state file itself, released at exit.

    The lock belongs to the file, not to the name that reached it: a symlink, a hard link or
    a relative path to the same state file meets the same lock. ``flock`` belongs to the open
    file description, so a second open in the same process is refused too, and a killed
    process leaves no stale lock behind. (SQLite's own locks are POSIX record locks, which
    ``flock`` does not touch.) The holder's pid goes in ``REALPATH.lock``, only to be named in
    the refusal.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"FileLock({self.path!r}, held={self._fd is not None})"

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateError` naming the process that holds it."""
        try:
            fd = os.open(_lock_target(self.path), os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"cannot create the state file {self.path}: {exc.strerror}") from None
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            holder = _read_pid(self.path)
            who = f" (pid {holder})" if holder else ""
            raise StateError(
                f"state file {self.path} is in use by another bulkretry process{who}; "
                "wait for it to finish or use another --state file"
            ) from None
        self._fd = fd
        _write_pid(self.path)

    def release(self) -> None:
        """Release the lock (closing the descriptor is what releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_target(path: str) -> str:
    if sys.platform == "win32":  # pragma: no cover - a byte lock there would block SQLite
        return os.path.realpath(path) + ".lock"
    return path


def _pid_path(path: str) -> str:
    return os.path.realpath(path) + ".lock"


def _write_pid(path: str) -> None:
    try:
        fd = os.open(_pid_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
    except OSError:
        return  # only a nicer message depends on it
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_pid(path: str) -> str | None:
    try:
        with open(_pid_path(path), "rb") as fh:
            text = fh.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def _lock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def lock_is_held(path: str) -> bool:
    """Tell whether a process holds the lock of the state file at ``path`` (without keeping it)."""
    try:
        fd = os.open(_lock_target(path), os.O_RDONLY | _CLOEXEC)
    except OSError:
        return False
    try:
        _lock(fd)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the lock if it was taken
    return False


def precheck(path: str) -> bool:
    """Return True if ``path`` has content to inspect; refuse a non-SQLite file by its header.

    This runs before the lock is taken so that no lock file appears beside a text file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"state file {path} is not a regular file")
    if st.st_size == 0:
        return False  # a zero-byte file holds nothing to lose: it becomes a new ledger
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from None
    if header != _SQLITE_MAGIC:
        if _SQLITE_MAGIC.startswith(header):
            raise StateError(f"state file {path} is corrupt (truncated to {st.st_size} bytes)")
        raise StateError(f"{path} is not a bulkretry state file (it is not a SQLite database)")
    return True


def connect_readonly(path: str) -> sqlite3.Connection:
    """Open ``path`` read-only: used to inspect a file and by ``status``."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    return conn


def connect(path: str) -> sqlite3.Connection:
    """Open the writer: WAL mode, synchronous=NORMAL (commits never fsync), its page cache."""
    # check_same_thread=False: the ledger may be opened in one thread and used in the loop's;
    # the Ledger itself never uses the writer from two threads.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StateError(f"state file {path} cannot use SQLite's WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
    except BaseException:
        conn.close()
        raise
    return conn


def fsync(path: str) -> None:
    """Flush a file, or a directory's entries, to stable storage."""
    if os.name == "nt" and os.path.isdir(path):  # pragma: no cover - Windows cannot
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
