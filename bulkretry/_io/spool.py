"""Read a piped stdin ahead when it brings results lines, as a FILE argument is read ahead.

On a pipe, a results line weighs only on the lines after it: ``cat checked.jsonl pass1.jsonl
pass2.jsonl | bulkretry run -`` sent a run on ``check``'s verdict before pass 2's line said it
had been re-triggered already. A stdin whose first record is a results line (a JSON object with
an ``outcome``) is finished output, not a producer still at work: :func:`take_stdin` copies it
whole to an anonymous temporary file, so that its lines are pre-scanned like a FILE argument's
before the first request. A stdin of run IDs (``list-failed | bulkretry run``, in either
format) streams as it comes: only its first line is read before the batch starts.

A SIGINT or SIGTERM before the batch's loop handles them is kept by :class:`EarlySignals` for
the batch to act on as if it came at its first moment; while stdin is read here it also stops
the reading at once, with no byte read lost: what was read is handed over, the rest of the pipe
after it. A copy that cannot be written (a full disk, a file size
limit) is given up with a warning: stdin then streams, nothing read lost either.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import select
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO, BinaryIO

import orjson

from .source import BOM, MAX_LINE_BYTES

__all__ = ["EarlySignals", "StdinInput", "stdin_is_a_terminal", "take_stdin"]

log = logging.getLogger("bulkretry")

_CHUNK = 1 << 16
# How often a silent pipe is looked at again for a stop (seconds).
_POLL = 0.05
# Comments and blank lines read before the first record at most: a header far longer is left
# to stream (with a warning) rather than held in memory.
_HEAD_LIMIT = 16 * MAX_LINE_BYTES


@dataclass
class StdinInput:
    """Stdin as the batch reads it: *stream* (one byte stream, nothing read lost), whether it
    was read whole ahead (*read_ahead*), and whether it is a regular file (``< file``)."""

    stream: BinaryIO
    read_ahead: bool
    regular: bool = False

    def on_hand(self) -> bool:
        """True while the stream's next bytes were read already (whole ahead, or a stop's copy
        not yet read through): they cannot go silent, so a hard stop reads them all."""
        raw = getattr(self.stream, "raw", None)
        return self.read_ahead or self.regular or (isinstance(raw, _Chain) and raw.on_hand)

    def close(self) -> None:
        """Close a stream read whole ahead (its temporary file goes with it).

        One that streams is left open: a reader thread may be blocked in it on a silent pipe,
        holding its lock, which closing would wait for. Descriptor 0 stays open either way.
        """
        if self.read_ahead:
            self.stream.close()


class EarlySignals:
    """SIGINT and SIGTERM before the batch's loop handles them (its input pre-scanned, stdin
    read ahead): kept in *signals* for the batch to act on once it runs, not the end of a
    process that has read input and written nothing. :meth:`close` puts the handlers back."""

    def __init__(self, catch: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals: list[int] = []
        # Only an append: a lock taken here (an Event's) could be the one a signal interrupted.
        self._restore = _install(catch, lambda signum, frame: self.signals.append(signum))

    def close(self) -> None:
        """Put back the handlers there were."""
        self._restore()


class _Chain(io.RawIOBase):
    """Read *parts* one after the other, as one raw stream."""

    def __init__(self, parts: Sequence[IO[bytes]]) -> None:
        self._parts = list(parts)

    def readable(self) -> bool:
        return True

    @property
    def on_hand(self) -> bool:
        """True while a part before the last (the pipe's rest) is being read."""
        return len(self._parts) > 1

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._parts:
            part = self._parts[0]
            # One read, as a raw read is: a pipe's lines go on as they come, not a chunk later.
            data = part.read1(len(buffer)) if hasattr(part, "read1") else part.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._parts.pop(0).close()
        return 0

    def close(self) -> None:
        for part in self._parts:
            part.close()
        self._parts = []
        super().close()


def _first_line(head: bytes | bytearray) -> bytes | None:
    """Return the first line of *head* that is not blank or a comment (None: none yet)."""
    for line in head.removeprefix(BOM).splitlines():
        if (text := line.strip()) and not text.startswith(b"#"):
            return bytes(text)
    return None


def _starts_with_a_results_line(head: bytes) -> bool:
    """True when the first line that is not blank (or a comment) is a JSON object with an
    ``outcome``."""
    if (line := _first_line(head)) is None:
        return False
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "outcome" in obj


def take_stdin(
    fd: int = 0,
    *,
    signals: Sequence[int] = (),
    stop: threading.Event | None = None,
    chunk: int = _CHUNK,
    whole: bool = False,
) -> StdinInput:
    """Read *fd* (a pipe or file, not a terminal) as far as the batch needs before it starts.

    That is all of it when its first line is a results line, or when *whole* says so
    (``--only``, which selects by what the whole input says); else its head. Returns a
    stream of every byte of *fd* in order. A signal added to *signals* (the list of
    the command's :class:`EarlySignals`) while this runs, or *stop* set by the caller, ends the
    reading early.
    """
    caught = len(signals)

    def stopped() -> bool:
        return len(signals) > caught or (stop is not None and stop.is_set())

    head = _read_head(fd, stopped, chunk)
    rest = io.FileIO(fd, "rb", closefd=False)
    regular = stat.S_ISREG(os.fstat(fd).st_mode)  # `< file`: it cannot go silent
    if stopped() or not (whole or _starts_with_a_results_line(head)):
        return StdinInput(_joined([io.BytesIO(head), rest]), False, regular)
    try:
        # Unbuffered: a failed write leaves the file holding exactly what was written.
        spool = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - closed by StdinInput
    except OSError as exc:  # no TMPDIR to write to
        _gave_up(exc)
        return StdinInput(_joined([io.BytesIO(head), rest]), False, regular)
    data: bytes | None = head
    while data:
        if (unwritten := _write(spool, data)) is not None:
            spool.seek(0)  # what was copied, what was not, then the rest as it comes
            return StdinInput(_joined([spool, io.BytesIO(unwritten), rest]), False, regular)
        data = _pull(fd, stopped, chunk)
    spool.seek(0)
    if data is None:  # stopped: what was read, then the rest of the pipe, as it comes
        return StdinInput(_joined([spool, rest]), False, regular)
    rest.close()
    return StdinInput(io.BufferedReader(spool), True)


def _write(spool: IO[bytes], data: bytes) -> bytes | None:
    """Write *data* whole; on a failure (a full disk, a file size limit), warn and return
    what was not written."""
    view = memoryview(data)
    try:
        while view:
            written = spool.write(view)
            if not written:  # a blocking file that takes nothing: as good as full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
    except OSError as exc:
        _gave_up(exc)
        return bytes(view)
    return None


def _gave_up(exc: OSError) -> None:
    log.warning(
        "could not copy stdin to a temporary file (%s): reading it as it comes instead, "
        "so results lines on it weigh only on the lines after them",
        exc.strerror or exc,
    )


def _joined(parts: Sequence[IO[bytes]]) -> BinaryIO:
    return io.BufferedReader(_Chain(parts))


def _read_head(fd: int, stopped: Callable[[], bool], chunk: int) -> bytes:
    """Read up to the end of the first line that is not blank or a comment (or EOF, a stop,
    more than :data:`_HEAD_LIMIT`); what comes with it is kept too."""
    head = bytearray()
    while not _decided(head):
        if len(head) > _HEAD_LIMIT:
            log.warning(
                "stdin starts with more than %d bytes of comments and blank lines: reading it "
                "as it comes, so results lines on it weigh only on the lines after them",
                _HEAD_LIMIT,
            )
            break
        data = _pull(fd, stopped, chunk)
        if not data:  # EOF, or stopped
            break
        head += data
    return bytes(head)


def _decided(head: bytes | bytearray) -> bool:
    """True once *head* holds a whole line that is not blank or a comment."""
    return _first_line(head[: head.rfind(b"\n") + 1]) is not None


def _pull(fd: int, stopped: Callable[[], bool], chunk: int) -> bytes | None:
    """Read what *fd* has (b"" at EOF), waiting for it; None once *stopped*."""
    while not stopped():
        try:
            ready, _, _ = select.select([fd], [], [], _POLL)
        except (OSError, ValueError):  # pragma: no cover - no select for this descriptor
            ready = [fd]
        if ready:
            return os.read(fd, chunk)
    return None


def _install(
    catch: Sequence[int], handler: Callable[[int, FrameType | None], None]
) -> Callable[[], None]:
    """Install *handler* for the signals in *catch*; return what puts the old ones back."""
    if threading.current_thread() is not threading.main_thread():
        catch = ()
    old = {signum: signal.signal(signum, handler) for signum in catch}

    def restore() -> None:
        for signum, previous in old.items():
            signal.signal(signum, previous)

    return restore


def stdin_is_a_terminal() -> bool:
    """True when descriptor 0 is a terminal (someone typing, not a pipe or a file)."""
    try:
        return os.isatty(0)
    except OSError:  # pragma: no cover - a closed descriptor 0
        return False
