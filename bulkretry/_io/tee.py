"""Keep each line a :class:`~bulkretry._io.source.RecordReader` reads, as it was read.

Commands that write a valid input line back byte for byte (``report``, ``watch``) read through
the same reader as ``run``, so that they judge every line as ``run`` does, and take the line
itself from the tee.
"""

from __future__ import annotations

from typing import IO

__all__ = ["LineTee"]


class LineTee:
    """Read lines from ``stream`` and keep the last one whole (up to ``cap`` bytes).

    The reader reads an over-long line in chunks: the tee joins them, up to ``cap``.
    """

    __slots__ = ("_cap", "_ended", "_stream", "line")

    def __init__(self, stream: IO[bytes], cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self._ended = True
        #: The line read last (its first ``cap`` bytes).
        self.line = b""

    def __repr__(self) -> str:
        return f"LineTee(stream={self._stream!r}, cap={self._cap})"

    def readline(self, limit: int = -1) -> bytes:
        """Return the next line (at most ``limit`` bytes), keeping it in :attr:`line`."""
        chunk = self._stream.readline(limit)
        if self._ended:
            self.line = chunk
        elif len(self.line) < self._cap:
            self.line += chunk
        self._ended = not chunk or chunk.endswith(b"\n")
        return chunk
