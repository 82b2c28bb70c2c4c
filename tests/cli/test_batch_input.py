"""Reading the input in a thread: what arrives is handed over at once, and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import types
from pathlib import Path

import pytest
from conftest import virtual_time

from bulkretry._cli.batch_input import SILENCE, BatchInput, _Pump, read_batches
from bulkretry._config import DEFAULT_RUN_ID_PATTERN
from bulkretry._exceptions import InputError
from bulkretry._io.source import RecordReader, RunIdValidator
from bulkretry._io.spool import StdinInput


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


@virtual_time
async def test_lines_from_a_pipe_left_open_are_handed_over_without_a_full_batch() -> None:
    """A writer that sends three IDs and stays silent has them admitted, not held for 509 more."""
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(uuid(i) + "\n" for i in range(3)).encode())
    with os.fdopen(read_end, "rb") as stdin:
        reader = RecordReader(["-"], RunIdValidator(), stdin=stdin)
        batches = read_batches(reader, size=512)
        first = await anext(batches)
        assert [record.run_id for record in first] == [uuid(i) for i in range(3)]
        os.close(write_end)
        assert [batch async for batch in batches] == []


@virtual_time
async def test_every_line_of_a_long_file_arrives_once_in_order(tmp_path: Path) -> None:
    """However the thread and the loop interleave, and with the read-ahead bounded."""
    path = tmp_path / "ids.txt"
    path.write_text("".join(uuid(i) + "\n" for i in range(5000)))
    reader = RecordReader([str(path)], RunIdValidator())
    seen = []
    async for batch in read_batches(reader, size=64, ahead=100):
        assert 0 < len(batch) <= 100
        seen += [record.line for record in batch]
    assert seen == list(range(1, 5001))


@virtual_time
async def test_an_input_that_cannot_be_read_raises_in_the_loop(tmp_path: Path) -> None:
    """The reader thread's error is the consumer's error, not a silent end of input."""
    reader = RecordReader([str(tmp_path / "missing.txt")], RunIdValidator())
    with pytest.raises(InputError, match="cannot read input"):
        async for _ in read_batches(reader):
            pass


@virtual_time
async def test_a_hard_stop_reads_a_file_on_to_its_end_but_not_a_silent_pipe(
    tmp_path: Path,
) -> None:
    """Hurried at once (a second Ctrl-C): a regular file cannot go silent, so every line of it
    is handed over (it was cut wherever the reader had not refilled yet: 20k of 200k lines
    written); a pipe left open is cut after what was read of it, if anything."""
    path = tmp_path / "ids.txt"
    path.write_text("".join(uuid(i) + "\n" for i in range(20_000)))
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(uuid(i) + "\n" for i in range(3)).encode())
    stdin = os.fdopen(read_end, "rb")
    reader = RecordReader([str(path), "-"], RunIdValidator(), stdin=stdin)
    pumps = []

    def hurried(pump: _Pump) -> None:
        pumps.append(pump)
        pump.hurry()  # before the first batch is taken

    batches = read_batches(reader, size=64, ahead=100, started=hurried)
    lines = [record.line async for batch in batches for record in batch]
    assert lines[:20_000] == list(range(1, 20_001))
    assert lines[20_000:] == [1, 2, 3][: len(lines) - 20_000]  # what was read of the pipe
    assert pumps[0].cut
    os.close(write_end)  # the reader thread, still waiting on the pipe, sees its end
    stdin.close()  # once that thread lets go of it


@virtual_time
async def test_once_the_batch_stops_a_pipe_silent_for_a_while_is_not_waited_for() -> None:
    """A first Ctrl-C on a feed left open (`tail -f`): the reading ends once the pipe has been
    silent for SILENCE, not after the 30 s grace period (a service manager's own grace period
    ran out first), and what was read is handed over."""
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(uuid(i) + "\n" for i in range(3)).encode())
    stdin = os.fdopen(read_end, "rb")
    reader = RecordReader(["-"], RunIdValidator(), stdin=stdin)
    stopped = False
    pumps: list[_Pump] = []
    batches = read_batches(reader, size=512, started=pumps.append, stopping=lambda: stopped)
    first = await anext(batches)
    stopped = True
    loop = asyncio.get_running_loop()
    begun = loop.time()
    async with asyncio.timeout(10 * SILENCE):
        rest = [record.line async for batch in batches for record in batch]
    assert [record.line for record in first] == [1, 2, 3]
    assert rest == []
    assert loop.time() - begun >= SILENCE
    assert pumps[0].cut
    os.close(write_end)
    stdin.close()


@pytest.mark.parametrize("signalled", [True, False], ids=["a-signal", "a-halt-or-a-cap"])
@virtual_time
async def test_only_a_signal_cuts_a_silent_pipe_short(signalled: bool) -> None:
    """A halt or --max-retriggers stops the batch too, but nobody asked it to stop reading:
    a producer that pauses (list-failed between pages) is read on to its end, every line its
    record. A signal cuts the pipe once it has been silent for SILENCE."""
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(uuid(i) + "\n" for i in range(3)).encode())
    stdin = os.fdopen(read_end, "rb")
    source = BatchInput(
        ["-"],
        run_id_pattern=DEFAULT_RUN_ID_PATTERN,
        reads_input=True,
        ledger=None,
        stdin=StdinInput(stdin, False),
    )
    source.engine = types.SimpleNamespace(stopping=True, input_cut_short=False)  # type: ignore[assignment]
    stops = [False]
    source.signalled = lambda: stops[-1]
    lines: list[int] = []
    three = asyncio.Event()

    async def collect() -> None:
        async for batch in source.batches():
            lines.extend(record.line for record in batch)
            if len(lines) >= 3:
                three.set()

    task = asyncio.create_task(collect())
    await three.wait()  # the reader thread has handed the three over
    stops.append(signalled)
    await asyncio.sleep(10 * SILENCE)
    assert lines == [1, 2, 3]
    assert task.done() is signalled
    os.write(write_end, (uuid(3) + "\n").encode())
    os.close(write_end)
    async with asyncio.timeout(10 * SILENCE):
        await task
    assert lines == ([1, 2, 3] if signalled else [1, 2, 3, 4])
    assert source.cut_short is signalled
    stdin.close()
