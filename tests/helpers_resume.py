"""Shared harness of the "nothing lost, nothing sent twice" acceptance tests.

`bulkretry(...)` runs ``python -m bulkretry`` against a simulator and SIGKILLs it when an event is
set; the events come from the simulator's ``on_request`` hook (`Tripwire`, `Pace`), never from a
clock, so a kill lands at the k-th request however fast or slow the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bulkretry._simulator import Answer, RecordedRequest

SIM_ENV = {
    "BULKRETRY_ACCESS_TOKEN": "sim-access-token",
    "BULKRETRY_API_KEY": "sim-api-key",
    "BULKRETRY_ORG_ID": "SIMORG0000000000000000@AdobeOrg",
}
#: Seconds any one invocation may take before the harness kills it and the test fails.
PROCESS_TIMEOUT = 60.0
#: Options that make a batch of a thousand runs take about a second on the simulator.
FAST = ("--rate", "3000", "--burst", "16", "--concurrency", "8", "--timeout", "5")
CONCURRENCY = 8
DONE = frozenset({"retriggered", "already_retriggered"})
#: A loopback port nothing listens on.
DEAD = "http://127.0.0.1:9"
_PROXY_VARIABLES = frozenset({"https_proxy", "http_proxy", "all_proxy", "no_proxy"})


def uuid(i: int) -> str:
    """Return the i-th run ID of a test: a valid UUID, distinct for each i."""
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def id_lines(ids: Iterable[str]) -> bytes:
    """Return the run IDs as an input file's bytes, one per line."""
    return "".join(f"{run_id}\n" for run_id in ids).encode()


def records(path: Path) -> list[dict[str, Any]]:
    """Read a results file; fail on a line that is not a JSON object (a cut line left behind)."""
    lines = path.read_bytes().splitlines() if path.exists() else []
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line[:80]!r}") from exc
    return out


def outcomes(rows: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Count results rows by outcome."""
    return Counter(str(row["outcome"]) for row in rows)


def sim_env(base_url: str | None) -> dict[str, str]:
    """Return the environment of an invocation: credentials, and the base URL unless None.

    Any ``BULKRETRY_*`` of the developer's own shell is dropped, so that it cannot stand in for
    an option the test means to leave out. Proxies point at a closed loopback port (loopback
    never uses one): a resume that forgot the simulator's URL fails here instead of sending
    test credentials to Adobe.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BULKRETRY_") and k.lower() not in _PROXY_VARIABLES
    }
    env.update(SIM_ENV)
    env.update(dict.fromkeys(("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"), DEAD))
    if base_url is not None:
        env["BULKRETRY_BASE_URL"] = base_url
    return env


@dataclass(frozen=True, slots=True)
class Finished:
    """How one invocation ended: its exit code (-9 when killed) and its stderr."""

    code: int
    err: str

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL


async def bulkretry(
    *args: str,
    base_url: str | None,
    stdin: bytes | None = None,
    keep_stdin_open: bool = False,
    kill_on: asyncio.Event | None = None,
    timeout: float = PROCESS_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Finished:
    """Run ``python -m bulkretry ARGS``; SIGKILL it as soon as ``kill_on`` is set.

    ``stdin`` None gives an empty stdin that is not a terminal (/dev/null). With
    ``keep_stdin_open`` the bytes are written and the pipe is left open, as a writer that has
    more to say would: the process can only end by itself or by ``kill_on``. A process still
    running after ``timeout`` seconds is killed and fails the test. ``env`` adds to (or
    overrides) the variables of `sim_env`.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkretry",
        *args,
        env={**sim_env(base_url), **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    err_task = asyncio.ensure_future(proc.stderr.read())
    feeder = None
    if stdin is not None:
        assert proc.stdin is not None
        if keep_stdin_open:
            assert kill_on is not None, "an open pipe needs a kill point to end"
            proc.stdin.write(stdin)
            await _ignore_broken_pipe(proc.stdin.drain())
        else:
            feeder = asyncio.ensure_future(_feed(proc.stdin, stdin))
    waiting = asyncio.ensure_future(proc.wait())
    pending = {waiting}
    killer = None
    if kill_on is not None:
        killer = asyncio.ensure_future(kill_on.wait())
        pending.add(killer)
    done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        proc.kill()
    if killer is not None:
        killer.cancel()
    await asyncio.wait_for(waiting, 30)
    if feeder is not None:
        await asyncio.wait_for(feeder, 30)
    if proc.stdin is not None:
        proc.stdin.close()
    err = (await asyncio.wait_for(err_task, 30)).decode(errors="replace")
    if not done:
        raise AssertionError(f"bulkretry {' '.join(args)} ran over {timeout} s:\n{err}")
    assert proc.returncode is not None
    return Finished(proc.returncode, err)


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    """Write ``data`` and close the pipe; a reader that went away (killed) is fine."""
    pipe.write(data)
    await _ignore_broken_pipe(pipe.drain())
    pipe.close()


async def _ignore_broken_pipe(waiting: Any) -> None:
    try:
        await waiting
    except (BrokenPipeError, ConnectionResetError):
        pass


class Tripwire:
    """An ``on_request`` hook: set `fired` at the k-th request, and know when all are served.

    ``at`` counts from 1 the re-triggers (``POST``) since it was armed, or with ``on_get`` the
    look-ups (the pre-flight's is the first); ``None`` disarms it. ``answer`` may force
    answers, like the simulator's own hook. Each request is handled in a task of its own: the
    hook follows it, so `served` waits for no time at all.
    """

    def __init__(self, answer: Callable[[RecordedRequest], Answer | None] | None = None) -> None:
        self.at: int | None = None
        self.on_get = False
        self.counted = 0
        self.fired = asyncio.Event()
        self.answer = answer
        self.pace: Pace | None = None
        self.open = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"Tripwire(at={self.at}, fired={self.fired.is_set()}, open={self.open})"

    def __call__(self, request: RecordedRequest) -> Answer | None:
        if self.at is not None and (request.method == "GET") == self.on_get:
            self.counted += 1
            if self.counted >= self.at:
                self.fired.set()
        if self.pace is not None:
            self.pace.saw(request)
        task = asyncio.current_task()
        if task is not None:
            self.open += 1
            self._idle.clear()
            task.add_done_callback(self._done)
        return self.answer(request) if self.answer is not None else None

    def _done(self, _: object) -> None:
        self.open -= 1
        if not self.open:
            self._idle.set()

    async def served(self, timeout: float = 10.0) -> None:
        """Wait until the simulator has finished with every request it received so far."""
        await asyncio.wait_for(self._idle.wait(), timeout)


class Pace:
    """Set `too_slow` when requests arrive at fewer than `floor` a second on average.

    A resume that forgot the stored ``--rate`` would crawl at the default 5/s; this ends it
    after `after` requests instead of letting the test wait a minute.
    """

    def __init__(self, floor: float = 20.0, after: int = 20) -> None:
        self.floor = floor
        self.after = after
        self.count = 0
        self.first: float | None = None
        self.too_slow = asyncio.Event()

    def __repr__(self) -> str:
        return f"Pace(count={self.count}, too_slow={self.too_slow.is_set()})"

    def saw(self, request: RecordedRequest) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.count += 1
        if self.count >= self.after and now - self.first > self.count / self.floor:
            self.too_slow.set()


def run_ids_once(rows: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> str | None:
    """Return what is wrong if ``rows`` do not account for each of ``ids`` exactly once."""
    seen = Counter(str(row["run_id"]) for row in rows)
    missing = [run_id for run_id in ids if run_id not in seen]
    twice = sorted(run_id for run_id, n in seen.items() if n > 1)
    extra = sorted(set(seen) - set(ids))
    if not (missing or twice or extra):
        return None
    return (
        f"{len(missing)} input IDs without a record (e.g. {missing[:3]}), "
        f"{len(twice)} with several (e.g. {twice[:3]}), {len(extra)} records of no input ID"
    )


def sent_twice(counts: Mapping[str, int]) -> list[str]:
    """Return the runs the simulator re-triggered more than once."""
    return sorted(run_id for run_id, n in counts.items() if n > 1)


async def kill_at(
    k: int, trip: Tripwire, *args: str, base_url: str | None, stdin: bytes | None = None
) -> Finished:
    """Run a batch and SIGKILL it when the simulator receives its k-th re-trigger."""
    trip.at = k
    trip.counted = 0
    trip.fired.clear()
    try:
        first = await bulkretry(*args, base_url=base_url, stdin=stdin, kill_on=trip.fired)
    finally:
        trip.at = None
    assert first.killed, f"the batch ended (exit {first.code}) before request {k}:\n{first.err}"
    return first


def state_list(state: Path | str, which: str) -> set[str]:
    """Return the run IDs that ``bulkretry status --state STATE --list WHICH`` prints."""
    from bulkretry._cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["status", "--state", str(state), "--list", which], env={})
    assert code == 0, f"bulkretry status --list {which} exited {code}"
    return set(out.getvalue().split())


def same_file(a: Path | str, b: Path | str) -> bool:
    """Tell whether two paths name the same file once symlinks and ``..`` are resolved."""
    return os.path.realpath(a) == os.path.realpath(b)
