"""Stdin taken before the batch: read whole when it brings results lines, else only its first
line; a stop ends the reading at once, and no byte read is lost either way."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bulkretry._io import spool
from bulkretry._io.source import BOM
from bulkretry._io.spool import take_stdin

RUN = b"4fb0418e-1804-45d6-8d56-dd51f05c0baf"
RESULT = orjson.dumps({"run_id": RUN.decode(), "outcome": "retriggered"})
LISTED = orjson.dumps({"run_id": RUN.decode(), "flow_id": "f"})  # list-failed --format jsonl


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass


class StopAfter(threading.Event):
    """A stop that comes once it was looked at *n* times (no clock involved)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.looks = n

    def is_set(self) -> bool:
        self.looks -= 1
        if self.looks < 0:
            self.set()
        return super().is_set()


def test_run_ids_stream_after_their_first_line_and_every_byte_comes_through(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    os.write(write, RUN + b"\n")
    taken = take_stdin(read)
    os.write(write, b"second\n")  # written after: only the first line was read ahead
    os.close(write)
    assert not taken.read_ahead
    assert taken.stream.read() == RUN + b"\nsecond\n"
    taken.stream.close()


@pytest.mark.parametrize(
    "start",
    [b"", BOM, b"\n  \n", BOM + b"\r\n", b"# pass 1\n\n  # and 2\n"],
    ids=["plain", "after a BOM", "after blank lines", "after a BOM and a CRLF", "after comments"],
)
def test_a_results_line_first_means_the_whole_stdin_is_read_ahead(
    pipe: tuple[int, int], start: bytes
) -> None:
    read, write = pipe
    body = start + RESULT + b"\n" + RUN + b"\n" + b"x" * 200_000 + b"\n"
    writer = threading.Thread(target=lambda: (os.write(write, body), os.close(write)))
    writer.start()  # more than a pipe holds: the reading must go on until the end
    taken = take_stdin(read, chunk=4096)
    writer.join()
    assert taken.read_ahead
    assert taken.stream.read() == body
    taken.stream.seek(0)  # the pre-scan reads it, then the batch from its start
    assert taken.stream.read() == body
    taken.stream.close()


@pytest.mark.parametrize("first", [LISTED, b"not json {", b"[1, 2]", b"# a comment\n" + RUN])
def test_anything_but_a_results_line_first_streams(pipe: tuple[int, int], first: bytes) -> None:
    read, write = pipe
    os.write(write, first + b"\n" + RESULT + b"\n")
    os.close(write)
    taken = take_stdin(read)
    assert not taken.read_ahead
    assert taken.stream.read() == first + b"\n" + RESULT + b"\n"
    taken.stream.close()


def test_an_empty_stdin_streams_nothing(pipe: tuple[int, int]) -> None:
    read, write = pipe
    os.close(write)
    taken = take_stdin(read)
    assert not taken.read_ahead
    assert taken.stream.read() == b""
    taken.stream.close()


@pytest.mark.parametrize(
    ("looks", "chunk"),
    [(2, 8), (2, 4096)],
    ids=["during the first line", "during the rest"],
)
def test_a_stop_hands_over_what_was_read_then_the_rest_of_the_pipe(
    pipe: tuple[int, int], looks: int, chunk: int
) -> None:
    """Stopped in the first line (read 8 bytes at a time), or once it was read whole (the
    third look, after one for the read and one for the line), nothing read is lost."""
    read, write = pipe
    first = RESULT + b"\n" + RUN + b"\n"
    os.write(write, first)
    taken = take_stdin(read, stop=StopAfter(looks), chunk=chunk)
    later = RUN + b"\nlast\n"
    os.write(write, later)  # the pipe is still open: its writer had more to say
    os.close(write)
    assert not taken.read_ahead  # a stopped reading is not a whole stdin: it streams on
    assert taken.stream.read() == first + later
    taken.stream.close()


def test_a_signal_while_stdin_is_read_stops_the_reading_and_is_handed_to_the_batch(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    os.write(write, RESULT + b"\n")  # a results line, and the pipe left open: read ahead

    class SignalOnFirstLook(threading.Event):
        sent = False

        def is_set(self) -> bool:
            if not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGUSR1)  # handled before the next bytecode
            return super().is_set()

    before = signal.getsignal(signal.SIGUSR1)
    early = spool.EarlySignals(catch=(signal.SIGUSR1,))
    taken = take_stdin(read, signals=early.signals, stop=SignalOnFirstLook())
    assert early.signals == [signal.SIGUSR1]
    os.close(write)
    assert not taken.read_ahead
    assert taken.stream.read() == RESULT + b"\n"
    early.close()
    assert signal.getsignal(signal.SIGUSR1) is before  # put back
    taken.stream.close()


REAL_TEMPORARY_FILE = tempfile.TemporaryFile


class FullDisk:
    """A temporary file that takes *room* bytes, part of a write included, then fails."""

    def __init__(self, room: int) -> None:
        self.file = REAL_TEMPORARY_FILE(buffering=0)
        self.room = room

    def write(self, data: memoryview) -> int:
        if not self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.file.write(data[: self.room]) or 0
        self.room -= n
        return n

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)


@pytest.mark.parametrize("room", [0, 10, 100_000])
def test_a_temporary_file_that_cannot_be_written_means_streaming_with_nothing_lost(
    pipe: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    room: int,
) -> None:
    read, write = pipe
    body = RESULT + b"\n" + b"".join(RUN + b"%d\n" % i for i in range(20_000))
    writer = threading.Thread(target=lambda: (os.write(write, body), os.close(write)))
    writer.start()
    monkeypatch.setattr(spool.tempfile, "TemporaryFile", lambda **_: FullDisk(room))
    taken = take_stdin(read, chunk=4096)
    assert not taken.read_ahead
    assert taken.stream.read() == body
    writer.join()
    assert "No space left on device" in caplog.text
    taken.stream.close()


def test_a_signal_after_stdin_was_read_ahead_is_kept_for_the_batch_until_closed(
    pipe: tuple[int, int],
) -> None:
    """Between the reading and the batch (a large stdin pre-scanned), a signal is one more for
    the batch, not the end of a process that read the pipe and wrote nothing."""
    read, write = pipe
    os.write(write, RESULT + b"\n")
    os.close(write)
    before = signal.getsignal(signal.SIGUSR1)
    early = spool.EarlySignals(catch=(signal.SIGUSR1,))
    taken = take_stdin(read, signals=early.signals)
    assert taken.read_ahead
    os.kill(os.getpid(), signal.SIGUSR1)  # handled before the next bytecode
    assert early.signals == [signal.SIGUSR1]
    early.close()
    taken.close()
    assert signal.getsignal(signal.SIGUSR1) is before


@pytest.mark.parametrize(
    ("header", "ahead"),
    [
        (b"#" + b"c" * 200_000 + b"\n", True),  # one comment longer than a line may be
        (b"# a comment line\n" * 12_000, True),  # about 200 KB of them
        (b"# a comment line\n" * 70_000, False),  # past the limit: streams, with a warning
    ],
    ids=["one long comment", "many comments", "comments past the limit"],
)
def test_a_long_header_of_comments_is_read_past_up_to_a_limit(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture, header: bytes, ahead: bool
) -> None:
    read, write = pipe
    body = header + RESULT + b"\n"
    writer = threading.Thread(target=lambda: (os.write(write, body), os.close(write)))
    writer.start()
    taken = take_stdin(read)
    assert taken.read_ahead is ahead
    assert taken.stream.read() == body
    writer.join()
    assert ("more than" in caplog.text) is not ahead
    taken.stream.close()


def test_no_temporary_file_at_all_means_streaming_with_nothing_lost(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    read, write = pipe
    body = RESULT + b"\n" + RUN + b"\n"
    os.write(write, body)
    os.close(write)

    def no_room(**_: object) -> object:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(spool.tempfile, "TemporaryFile", no_room)
    taken = take_stdin(read)
    assert not taken.read_ahead
    assert taken.stream.read() == body
    assert "Read-only file system" in caplog.text
    taken.stream.close()


def test_early_signals_are_kept_until_closed_then_the_handlers_are_put_back() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    early = spool.EarlySignals(catch=(signal.SIGUSR1,))
    os.kill(os.getpid(), signal.SIGUSR1)
    assert early.signals == [signal.SIGUSR1]
    early.close()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_what_a_stop_copied_is_on_hand_until_read_through_then_the_pipe_is_not(
    pipe: tuple[int, int],
) -> None:
    """A hard stop cuts a silent pipe, not the copy of it a stop left (its lines were read from
    the pipe: cutting them would leave them unrecorded)."""
    read, write = pipe
    first = RESULT + b"\n" + RUN + b"\n"
    os.write(write, first)
    taken = take_stdin(read, stop=StopAfter(2), chunk=4096)  # stopped during the copy
    assert not taken.read_ahead
    assert taken.on_hand()
    assert taken.stream.read(len(first)) == first
    os.close(write)
    assert taken.stream.read() == b""
    assert not taken.on_hand()
    taken.stream.close()


def test_stdin_read_whole_ahead_is_on_hand(pipe: tuple[int, int]) -> None:
    read, write = pipe
    os.write(write, RESULT + b"\n")
    os.close(write)
    taken = take_stdin(read)
    assert taken.read_ahead
    assert taken.on_hand()
    taken.close()


def test_a_regular_file_on_stdin_is_on_hand_to_its_end(tmp_path: Path) -> None:
    """`run < ids.txt` streams, but a file cannot go silent: a stop reads it to its end (it
    was cut like a silent pipe when the reader had not caught up: 20 records of 40)."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"".join(b"%08x-1804-45d6-8d56-dd51f05c0baf\n" % i for i in range(40)))
    with path.open("rb") as stdin:
        taken = take_stdin(stdin.fileno())
        assert not taken.read_ahead
        assert taken.on_hand()
        assert taken.stream.read() == path.read_bytes()
        assert taken.on_hand()


def test_a_pipe_on_stdin_is_not_on_hand_once_its_head_is_read(pipe: tuple[int, int]) -> None:
    """Its head, read before the batch, is on hand; what follows may never come."""
    read, write = pipe
    os.write(write, b"4fb0418e-1804-45d6-8d56-dd51f05c0baf\n")
    os.close(write)
    taken = take_stdin(read)
    assert not taken.read_ahead
    assert taken.on_hand()
    taken.stream.read()
    assert not taken.on_hand()
