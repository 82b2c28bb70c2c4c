"""Write results lines: whole lines, in line-aligned chunks, flushed at least every 100 ms.

Lines are gathered in a buffer and written with ``os.write`` in chunks that end on a line
boundary and, on a pipe, never exceed ``PIPE_BUF`` (4096 bytes on Linux), so that a reader
never sees half a line, even if the process is killed between two writes.
"""

from __future__ import annotations

import errno
import os
import select
import stat
from collections.abc import Callable

from .._exceptions import BulkRetryError

__all__ = ["FLUSH_INTERVAL", "OutputClosed", "OutputFailed", "ResultSink"]

#: Seconds a finished record may wait in the buffer before it is written.
FLUSH_INTERVAL = 0.1
_PIPE_CHUNK = getattr(select, "PIPE_BUF", 4096)
_FILE_CHUNK = 256 * 1024


class OutputClosed(BulkRetryError):
    """The reader of the output went away (``| head``): stop quietly."""


class OutputFailed(BulkRetryError):
    """Writing the output failed (a full disk, an I/O error): the batch must stop."""


class ResultSink:
    """Buffer results lines and write them whole to a file descriptor."""

    def __init__(
        self,
        fd: int,
        *,
        high_water: int = 64 * 1024,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.fd = self._fd = fd
        #: Called before lines are written (a live progress line on the same terminal clears).
        self.before_write = before_write
        mode = os.fstat(fd).st_mode
        self._chunk = _PIPE_CHUNK if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else _FILE_CHUNK
        self._buffer = bytearray()
        self._high_water = max(high_water, self._chunk)
        self.lines_written = 0
        self._pending_lines = 0

    def __repr__(self) -> str:
        return (
            f"ResultSink(fd={self._fd}, buffered={len(self._buffer)}, "
            f"lines_written={self.lines_written})"
        )

    def add(self, line: bytes) -> None:
        """Queue one whole JSON line; write out when the buffer is large."""
        self._buffer += line
        self._pending_lines += 1
        if len(self._buffer) >= self._high_water:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered, in line-aligned chunks."""
        buffer = self._buffer
        if buffer and self.before_write is not None:
            self.before_write()
        view = memoryview(buffer)
        start = 0
        try:
            while start < len(buffer):
                end = len(buffer)
                if end - start > self._chunk:
                    cut = buffer.rfind(b"\n", start, start + self._chunk)
                    if cut < start:
                        # A single line longer than a chunk is written whole regardless
                        # (to the end of the buffer if its newline has not come yet).
                        cut = buffer.find(b"\n", start)
                    end = cut + 1 if cut >= start else len(buffer)
                while start < end:
                    start += os.write(self._fd, view[start:end])
        except BrokenPipeError:
            raise OutputClosed("the output was closed by its reader") from None
        except OSError as exc:
            what = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
            raise OutputFailed(f"cannot write the results: {what}") from exc
        finally:
            view.release()
            # A new buffer, not ``del buffer[:start]``: a slice of ``view`` held by the
            # traceback of a failed write keeps ``buffer`` exported, and so not resizable.
            self._buffer = buffer[start:]
        self.lines_written += self._pending_lines
        self._pending_lines = 0
