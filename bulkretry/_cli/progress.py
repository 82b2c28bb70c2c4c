"""What a person watching stderr sees: a live progress line on a terminal, and a summary."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TextIO

import orjson

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
        f"{stats.server_errors} 5xx, {stats.network_errors} network errors or timeouts, "
        f"{stats.ambiguous_attempts} ambiguous attempts) in {elapsed:.1f} s, "
        f"{rate:.1f} requests/s",
    ]
    if stats.checks:
        lines.append(
            f"bulkretry: {stats.checks} lost answers looked up "
            f"({stats.checks_resent} found not processed and sent again); "
            f"{stats.lookups} look-up requests (the pre-flight included)"
        )
    followed = sum(n for final, n in stats.finals.items() if final)
    if followed:
        ends = ", ".join(
            f"{stats.finals[final]} {final}"
            for final in ("success", "failed", "partial", "unknown")
            if stats.finals[final]
        )
        lines.append(
            f"bulkretry: followed {followed} records' new runs to their end: {ends}; "
            f"{stats.rounds} further rounds; {stats.follow_lookups} look-up requests "
            f"({stats.follow_lookups / followed:.2f} per record)"
        )
    if governor is not None and stats.attempts:
        lines.append(
            f"bulkretry: learned rate {governor.throttle.learned_rate:.1f}/s "
            f"of {governor.throttle.max_rate:g}/s allowed; "
            f"retry budget {governor.budget.tokens:.1f} tokens, "
            f"{stats.budget_waits} retries waited for it"
            + (f"; learned {learned}" if (learned := governor.throttle.learned()) else "")
        )
    return "\n".join(lines)


class Progress:
    """Show a batch's progress on stderr while it runs.

    On a terminal (``live``), one status line redrawn every ``interval`` seconds and cleared
    before results are written to the same terminal; elsewhere (a log file, CI), one whole line
    every ``interval`` seconds, or one JSON object with ``json``. ``read`` tells how many records
    were read so far: the total while a pipe is still open.
    """

    def __init__(
        self,
        stats: Stats,
        governor: Governor | None = None,
        *,
        stream: TextIO | None = None,
        interval: float = 0.5,
        live: bool = True,
        json: bool = False,
        read: Callable[[], int] | None = None,
    ) -> None:
        self._stats = stats
        self._governor = governor
        self._stream = stream or sys.stderr
        self._interval = interval
        self._live = live
        self._json = json
        self._read = read
        self._drawn = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        mode = "live" if self._live else "json" if self._json else "log"
        return f"Progress({mode}, every {self._interval:g} s, running={self._task is not None})"

    def _total(self) -> int | None:
        total = self._stats.total
        if total is None and self._read is not None:
            total = self._read()
        return total

    def line(self) -> str:
        """Return the current status line."""
        stats = self._stats
        done = stats.done
        elapsed = stats.elapsed
        rate = done / elapsed if elapsed > 0 else 0.0
        total = self._total()
        text = f"{done}{f'/{total}' if total is not None else ''} done, {rate:.1f}/s"
        if total is not None and rate > 0 and done < total:
            text += f", ETA {_duration((total - done) / rate)}"
        text += f", {stats.retries} retries, {stats.throttled} throttled"
        if self._governor is not None:
            text += (
                f", rate {self._governor.throttle.rate:.1f}/s"
                f", budget {self._governor.budget.tokens:.0f}"
            )
        counts = ", ".join(f"{stats.count(o)} {o.value}" for o in _ORDER if stats.count(o))
        return text + (f"; {counts}" if counts else "")

    def record(self) -> dict[str, Any]:
        """Return the current progress as one JSON-ready object."""
        stats = self._stats
        done, elapsed = stats.done, stats.elapsed
        rate = done / elapsed if elapsed > 0 else 0.0
        total = self._total()
        eta = (total - done) / rate if total is not None and rate > 0 and done < total else None
        return {
            "event": "progress",
            "done": done,
            "total": total,
            "rate": round(rate, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "retries": stats.retries,
            "throttled": stats.throttled,
            "learned_rate": (
                round(self._governor.throttle.learned_rate, 3)
                if self._governor is not None
                else None
            ),
            "outcomes": {o.value: stats.count(o) for o in _ORDER if stats.count(o)},
        }

    def start(self) -> None:
        """Start showing, in a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._show())

    def clear(self) -> None:
        """Remove the live line (results are about to be written to the same terminal)."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False

    async def stop(self) -> None:
        """Stop showing and clear the live line."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            self.clear()

    async def _show(self) -> None:
        while True:
            if self._live:
                self._stream.write("\r\x1b[K" + self.line())
                self._drawn = True
                self._stream.flush()
                await asyncio.sleep(self._interval)
                continue
            await asyncio.sleep(self._interval)
            if self._json:
                self._stream.write(orjson.dumps(self.record()).decode() + "\n")
            else:
                self._stream.write(f"bulkretry: progress {self.line()}\n")
            self._stream.flush()
