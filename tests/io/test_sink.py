"""The sink: whole lines in bounded chunks, and clear errors when writing fails."""

from __future__ import annotations

import errno
import os
import random
import select
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from bulkretry._io.sink import OutputClosed, OutputFailed, ResultSink

PIPE_BUF = select.PIPE_BUF
FILE_CHUNK = 256 * 1024


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """An OS pipe ``(read_fd, write_fd)``, both closed afterwards if still open."""
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every ``os.write`` call's data, still writing it for real."""
    calls: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        calls.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    return calls


@pytest.fixture
def time_limit() -> Iterator[Callable[[float], None]]:
    """Arm a SIGALRM that fails a test stuck in a loop, instead of hanging the suite."""

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("the sink did not finish in time")

    previous = signal.signal(signal.SIGALRM, on_alarm)

    def arm(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def read_all(fd: int) -> bytes:
    """Read what a pipe holds right now (its writer must be closed)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def results_lines(count: int, seed: int = 0) -> list[bytes]:
    """Return ``count`` newline-terminated lines of varied lengths, as results lines vary."""
    rng = random.Random(seed)
    return [b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * rng.randint(0, 400)) for n in range(count)]


def test_writes_to_a_pipe_are_line_aligned_chunks_of_at_most_pipe_buf(
    pipe: tuple[int, int], writes: list[bytes]
) -> None:
    """On a pipe every write is ≤ PIPE_BUF and ends on a newline, so readers never see half."""
    read_fd, write_fd = pipe
    lines = results_lines(200)
    sink = ResultSink(write_fd)
    for line in lines:
        sink.add(line)
    sink.flush()
    os.close(write_fd)
    assert read_all(read_fd) == b"".join(lines)
    assert len(writes) > 1
    for data in writes:
        assert len(data) <= PIPE_BUF
        assert data.endswith(b"\n")
    assert sink.lines_written == len(lines)


def test_a_line_longer_than_pipe_buf_is_written_whole(
    pipe: tuple[int, int], writes: list[bytes]
) -> None:
    """A line past PIPE_BUF cannot be atomic, but it is never split across writes."""
    read_fd, write_fd = pipe
    long_line = b'{"pad":"' + b"y" * (3 * PIPE_BUF) + b'"}\n'
    lines = [b'{"a":1}\n', long_line, b'{"b":2}\n']
    sink = ResultSink(write_fd)
    for line in lines:
        sink.add(line)
    sink.flush()
    os.close(write_fd)
    assert read_all(read_fd) == b"".join(lines)
    assert writes == [b'{"a":1}\n', long_line, b'{"b":2}\n']


def test_a_trailing_piece_without_newline_is_written_not_looped_over(
    pipe: tuple[int, int], writes: list[bytes], time_limit: Callable[[float], None]
) -> None:
    """Bytes past the last newline, longer than a chunk, are written out as they are."""
    read_fd, write_fd = pipe
    sink = ResultSink(write_fd)
    sink.add(b'{"a":1}\n')
    sink.add(b"z" * (PIPE_BUF + 10))
    time_limit(2.0)
    sink.flush()
    os.close(write_fd)
    assert read_all(read_fd) == b'{"a":1}\n' + b"z" * (PIPE_BUF + 10)


def test_add_writes_out_once_the_buffer_reaches_high_water(
    pipe: tuple[int, int], writes: list[bytes]
) -> None:
    """A full buffer is written without waiting for the periodic flush."""
    _read_fd, write_fd = pipe
    sink = ResultSink(write_fd, high_water=1)
    line = b"q" * 1023 + b"\n"
    for _ in range(3):
        sink.add(line)
    assert writes == []
    sink.add(line)
    assert sum(map(len, writes)) == 4 * len(line)
    assert sink.lines_written == 4


def test_writes_to_a_regular_file_are_line_aligned_chunks(
    tmp_path: Path, writes: list[bytes]
) -> None:
    """On a file the chunks are larger, and still end on newlines."""
    path = tmp_path / "results.jsonl"
    lines = [b'{"n":%d,"pad":"%s"}\n' % (n, b"f" * 900) for n in range(600)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        sink = ResultSink(fd, high_water=10 * 1024 * 1024)
        for line in lines:
            sink.add(line)
        sink.flush()
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(lines)
    assert len(writes) >= 3
    for data in writes:
        assert len(data) <= FILE_CHUNK
        assert data.endswith(b"\n")


def test_short_writes_are_resumed_until_the_chunk_is_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.write may write less than asked; the sink writes the rest."""
    path = tmp_path / "results.jsonl"
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    lines = results_lines(20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        sink = ResultSink(fd)
        for line in lines:
            sink.add(line)
        sink.flush()
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(lines)


def test_a_closed_reader_raises_output_closed(pipe: tuple[int, int]) -> None:
    """When the reader went away (``| head``) the sink says so, so the batch stops quietly."""
    read_fd, write_fd = pipe
    os.close(read_fd)
    sink = ResultSink(write_fd)
    sink.add(b'{"a":1}\n')
    with pytest.raises(OutputClosed, match="closed by its reader"):
        sink.flush()


def test_a_full_disk_raises_output_failed_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC becomes OutputFailed saying the disk is full, with the OSError as its cause."""

    def full_disk(_fd: int, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fd = os.open(tmp_path / "results.jsonl", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        sink = ResultSink(fd)
        monkeypatch.setattr(os, "write", full_disk)
        sink.add(b'{"a":1}\n')
        with pytest.raises(
            OutputFailed, match="cannot write the results: the disk is full"
        ) as info:
            sink.flush()
    finally:
        os.close(fd)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert sink.lines_written == 0


def test_another_write_error_raises_output_failed_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error is reported with the system's own words."""

    def io_error(_fd: int, _data: bytes) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    fd = os.open(tmp_path / "results.jsonl", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        sink = ResultSink(fd)
        monkeypatch.setattr(os, "write", io_error)
        sink.add(b'{"a":1}\n')
        with pytest.raises(OutputFailed, match=os.strerror(errno.EIO)):
            sink.flush()
    finally:
        os.close(fd)


def test_lines_not_written_before_an_error_stay_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What was written is dropped from the buffer; what was not is kept, not lost."""
    path = tmp_path / "results.jsonl"
    real_write = os.write
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    first = b"a" * (FILE_CHUNK - 10) + b"\n"
    second = b"b" * 100 + b"\n"
    calls = 0

    def fail_second(fd_: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd_, data)

    try:
        sink = ResultSink(fd, high_water=10 * FILE_CHUNK)
        sink.add(first)
        sink.add(second)
        monkeypatch.setattr(os, "write", fail_second)
        with pytest.raises(OutputFailed):
            sink.flush()
        assert "buffered=101" in repr(sink)
        sink.flush()
    finally:
        os.close(fd)
    assert path.read_bytes() == first + second


def test_sink_repr_shows_its_state(pipe: tuple[int, int]) -> None:
    """The repr shows the descriptor, what is buffered and what was written."""
    _read_fd, write_fd = pipe
    sink = ResultSink(write_fd)
    sink.add(b'{"a":1}\n')
    assert repr(sink) == f"ResultSink(fd={write_fd}, buffered=8, lines_written=0)"
    sink.flush()
    assert repr(sink) == f"ResultSink(fd={write_fd}, buffered=0, lines_written=1)"
