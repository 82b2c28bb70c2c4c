"""The library API: re-trigger run IDs from your own asyncio code and iterate over results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import aiohttp

from ._config import Settings
from ._engine.engine import Engine
from ._exceptions import BatchHalted
from ._io.source import ASCII_WHITESPACE, InputRecord, RunIdValidator
from ._model import RunResult

__all__ = ["retrigger"]

_SOURCE = "<api>"
_DONE = None


async def _records(
    run_ids: Iterable[str] | AsyncIterable[str], validator: RunIdValidator
) -> AsyncIterator[list[InputRecord]]:
    def record(number: int, text: str) -> InputRecord:
        run_id, error = validator.normalise(text.strip(ASCII_WHITESPACE))
        return InputRecord(_SOURCE, number, run_id, "" if run_id else text[:120], error)

    batch: list[InputRecord] = []
    number = 0
    if isinstance(run_ids, AsyncIterable):
        async for text in run_ids:
            number += 1
            batch.append(record(number, text))
            if len(batch) >= 256:
                yield batch
                batch = []
    else:
        for text in run_ids:
            number += 1
            batch.append(record(number, text))
            if len(batch) >= 256:
                yield batch
                batch = []
                await asyncio.sleep(0)
    if batch:
        yield batch


async def retrigger(
    run_ids: Iterable[str] | AsyncIterable[str],
    settings: Settings,
    *,
    session: aiohttp.ClientSession | None = None,
) -> AsyncIterator[RunResult]:
    """Re-trigger every run ID and yield one :class:`RunResult` per ID, as each finishes.

    ``line`` in each result is the ID's 1-based position in ``run_ids``. Closing the iterator
    early stops the batch at once; requests then in flight end ``in_doubt``. Pass a ``session``
    to share a connection pool; it is not closed.

    When the batch halts (credentials refused, ``max_retriggers`` reached, a ``Retry-After``
    past the cap…) a result is still yielded for every ID, the unsent ones ``not_attempted``;
    then :class:`BatchHalted` is raised, its ``reason`` saying why the batch stopped::

        try:
            async for result in bulkretry.retrigger(run_ids, settings):
                record(result)
        except bulkretry.BatchHalted as halted:
            print("stopped early:", halted.reason)
    """
    engine = Engine(settings, session=session)
    queue: asyncio.Queue[RunResult | None] = asyncio.Queue(maxsize=settings.concurrency * 4)

    async def drive() -> None:
        try:
            await engine.run(_records(run_ids, RunIdValidator(settings.run_id_pattern)), queue.put)
        finally:
            await queue.put(_DONE)

    task = asyncio.create_task(drive())
    try:
        while (result := await queue.get()) is not _DONE:
            yield result
        await task
        if engine.halt_reason is not None:
            raise BatchHalted(engine.halt_reason)
    finally:
        if not task.done():
            engine.stop(hard=True)
            while not task.done():
                # Keep taking results so that the engine, blocked on a full queue, can end.
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                getter.cancel()
            await task
