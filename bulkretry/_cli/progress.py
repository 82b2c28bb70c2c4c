"""What a person watching stderr sees: a live progress line on a terminal, and a summary."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from .._engine.governor import Governor
from .._model import Outcome
from .._stats import Stats

__all__ = ["Progress", "format_summary"]

_ORDER = [
    Outcome.RETRIGGERED,
    Outcome.ALREADY_RETRIGGERED,
    Outcome.WOULD_RETRIGGER,
    Outcome.FAILED,
    Outcome.IN_DOUBT,
    Outcome.INVALID,
    Outcome.DUPLICATE,
    Outcome.SKIPPED,
    Outcome.NOT_ATTEMPTED,
]


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_summary(stats: Stats, governor: Governor | None = None) -> str:
    """Return the end-of-batch summary: outcomes, attempts, 429s, 5xx, ambiguous, time, rate."""
    elapsed = stats.elapsed
    counts = (
        ", ".join(f"{stats.count(o)} {o.value}" for o in _ORDER if stats.count(o)) or "no records"
    )
    rate = stats.attempts / elapsed if elapsed > 0 else 0.0
    lines = [
        f"bulkretry: {stats.done} records: {counts}",
        f"bulkretry: {stats.attempts} requests ({stats.retries} retries, "
        f"{stats.throttled} answered 429, "
        f"{stats.server_errors} 5xx, {stats.network_errors} network errors, "
        f"{stats.ambiguous_attempts} ambiguous attempts) in {elapsed:.1f} s, "
        f"{rate:.1f} requests/s",
    ]
    if governor is not None and stats.attempts:
        lines.append(
            f"bulkretry: learned rate {governor.throttle.rate:.1f}/s "
            f"of {governor.throttle.max_rate:g}/s allowed; "
            f"retry budget {governor.budget.tokens:.1f} tokens, "
            f"{stats.budget_waits} retries waited for it"
        )
    return "\n".join(lines)


class Progress:
    """Redraw one status line on a terminal every ``interval`` seconds while a batch runs."""

    def __init__(
        self,
        stats: Stats,
        governor: Governor | None = None,
        *,
        stream: TextIO | None = None,
        interval: float = 0.5,
    ) -> None:
        self._stats = stats
        self._governor = governor
        self._stream = stream or sys.stderr
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Progress(running={self._task is not None}, {self._stats!r})"

    def line(self) -> str:
        """Return the current status line."""
        stats = self._stats
        done = stats.done
        elapsed = stats.elapsed
        rate = done / elapsed if elapsed > 0 else 0.0
        total = f"/{stats.total}" if stats.total is not None else ""
        text = f"{done}{total} done, {rate:.1f}/s"
        if stats.total is not None and rate > 0 and done < stats.total:
            text += f", ETA {_duration((stats.total - done) / rate)}"
        text += f", {stats.retries} retries, {stats.throttled} throttled"
        if self._governor is not None:
            text += (
                f", rate {self._governor.throttle.rate:.1f}/s"
                f", budget {self._governor.budget.tokens:.0f}"
            )
        bad = stats.count(Outcome.FAILED) + stats.count(Outcome.IN_DOUBT)
        if bad:
            text += f", {bad} failed/in doubt"
        return text

    def start(self) -> None:
        """Start redrawing, in a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._redraw())

    async def stop(self) -> None:
        """Stop redrawing and clear the line."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    async def _redraw(self) -> None:
        while True:
            self._stream.write("\r\x1b[K" + self.line())
            self._stream.flush()
            await asyncio.sleep(self._interval)
