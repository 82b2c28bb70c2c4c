"""However a batch stops, every input line gets its record, and the state file keeps the rest."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkretry._cli.main import main
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

SIM_ENV = {
    "BULKRETRY_ACCESS_TOKEN": "sim-access-token",
    "BULKRETRY_API_KEY": "sim-api-key",
    "BULKRETRY_ORG_ID": "SIMORG0000000000000000@AdobeOrg",
}


def uuid(i: int) -> str:
    return f"{i:08x}-1804-45d6-8d56-dd51f05c0baf"


def lines_of(n: int) -> bytes:
    return "".join(uuid(i) + "\n" for i in range(n)).encode()


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def run_piped(
    args: list[str],
    stdin: bytes,
    *,
    base_url: str,
    signals: list[tuple[asyncio.Event, int]] = (),  # type: ignore[assignment]
) -> tuple[int, bytes, bytes]:
    """Run `bulkretry ARGS` fed ``stdin``; send each signal when its event is set."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkretry",
        *args,
        env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": base_url},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def signaller() -> None:
        for event, signum in signals:
            await event.wait()
            proc.send_signal(signum)

    task = asyncio.ensure_future(signaller())
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    task.cancel()
    assert proc.returncode is not None
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize("with_state", [False, True])
async def test_a_hard_stop_still_gives_every_input_line_a_record(
    tmp_path: Path, with_state: bool
) -> None:
    """Two SIGINTs with requests hanging: 5,000 piped lines, 5,000 records, none lost."""
    n = 5000
    first, second = asyncio.Event(), asyncio.Event()

    def on_request(request: RecordedRequest) -> None:
        if request.index == 4:
            first.set()
            asyncio.get_running_loop().call_later(0.2, second.set)

    state = ["--state", str(tmp_path / "s.db")] if with_state else []
    out = tmp_path / "out.jsonl"
    config = SimulatorConfig(
        run_ids=tuple(uuid(i) for i in range(n)), hang_rate=1.0, on_request=on_request
    )
    async with Simulator(config) as sim:
        code, _, err = await run_piped(
            ["run", "--rate", "100", "--concurrency", "4", "-o", str(out), *state],
            lines_of(n),
            base_url=sim.base_url,
            signals=[(first, signal.SIGINT), (second, signal.SIGINT)],
        )
    assert code == 130, err.decode()
    got = records(out)
    assert sorted(r["line"] for r in got) == list(range(1, n + 1))
    outcomes = Counter(r["outcome"] for r in got)
    assert outcomes["in_doubt"] <= 4
    assert outcomes["in_doubt"] + outcomes["not_attempted"] == n


@pytest.mark.slow
async def test_a_reader_that_goes_away_leaves_the_answers_in_the_state_file(
    tmp_path: Path,
) -> None:
    """`run --state S | head -1`: answered requests are recorded, and stderr says how many."""
    n = 300
    state = tmp_path / "s.db"
    async with Simulator(
        SimulatorConfig(run_ids=tuple(uuid(i) for i in range(n)), latency=0.01)
    ) as sim:
        proc = await asyncio.create_subprocess_shell(
            f"{sys.executable} -m bulkretry run --state {state} --rate 500 --concurrency 8 "
            f"| head -1",
            env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(lines_of(n)), 120)
        sent = sum(sim.retrigger_counts().values())
    assert len(out.splitlines()) == 1
    assert b"Traceback" not in err
    conn = sqlite3.connect(state)
    try:
        done = conn.execute("SELECT count(*) FROM runs WHERE state = 'retriggered'").fetchone()[0]
    finally:
        conn.close()
    assert done == sent  # every answered request is in the state file
    if sent > 1:
        assert b"re-triggered but not written to the output" in err


def test_resume_without_a_state_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--resume finishes a state file's batch: without --state it is exit 2, one line."""
    assert main(["run", "--resume", "--dry-run"], env={}) == 2
    assert "--resume needs --state" in capsys.readouterr().err


def test_resume_of_a_state_file_that_does_not_exist_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo'd path: not a new, empty batch resumed with exit 0."""
    path = tmp_path / "batc.db"
    assert main(["run", "--state", str(path), "--resume", "--dry-run"], env={}) == 2
    assert f"state file {path} does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_resume_with_input_files_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume reads no input, so FILE arguments beside it are a mistake (exit 2)."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(lines_of(1))
    env = {**SIM_ENV, "BULKRETRY_BASE_URL": "http://127.0.0.1:9"}
    code = main(["run", "--state", str(tmp_path / "s.db"), "--resume", str(ids)], env=env)
    assert code == 2
    assert "--resume reads no input" in capsys.readouterr().err


@pytest.mark.slow
async def test_a_resume_takes_the_batchs_options_from_the_state_file(tmp_path: Path) -> None:
    """`run --state S --resume` alone: base URL, rate and the rest come from the batch."""
    n = 40
    state = str(tmp_path / "s.db")
    stop = asyncio.Event()

    def on_request(request: RecordedRequest) -> None:
        if request.index == 10:
            stop.set()

    async with Simulator(
        SimulatorConfig(
            run_ids=tuple(uuid(i) for i in range(n)), latency=0.01, on_request=on_request
        )
    ) as sim:
        code, _, _ = await run_piped(
            ["run", "--state", state, "--rate", "300", "--max-attempts", "2"],
            lines_of(n),
            base_url=sim.base_url,
            signals=[(stop, signal.SIGINT)],
        )
        assert code == 130
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKRETRY_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bulkretry",
            "run",
            "--state",
            state,
            "--resume",
            "-o",
            str(tmp_path / "r.jsonl"),
            env={**env, **SIM_ENV},  # no base URL, no rate: the state file has them
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        counts = sim.retrigger_counts()
    assert proc.returncode == 0, err.decode()
    assert b"of 300/s allowed" in err
    got = records(tmp_path / "r.jsonl")
    assert len(got) == n
    assert set(counts.values()) == {1}


def test_the_resume_hint_names_the_same_command_and_the_no_input_form() -> None:
    """A piped batch is resumed by feeding the pipe again, or with --resume and no input."""
    from bulkretry._cli.state import resume_command

    hint = resume_command(
        ["run", "--state", "b.db", "-o", "r.jsonl", "--append"], "b.db", "r.jsonl", piped=True
    )
    assert hint is not None
    assert hint.startswith("... | bulkretry run --state b.db -o r.jsonl")
    assert "--append" not in hint
    assert "bulkretry run --state b.db --resume -o r.jsonl" in hint
    files = resume_command(["run", "ids.txt", "--state", "b.db"], "b.db", None, piped=False)
    assert files == "bulkretry run ids.txt --state b.db"
    # A --resume reads no input (and takes no FILE): nothing is piped into it.
    again = resume_command(["run", "--state", "b.db", "--resume"], "b.db", None, piped=True)
    assert again == "bulkretry run --state b.db --resume"


def test_after_the_cap_the_hint_says_what_to_raise_and_where_in_both_commands() -> None:
    """Stopped at --max-retriggers: the advice names the cap to go above (no number for a
    shard's part of it), and a command that does not give the flag (the state file keeps it)
    gains --max-retriggers N: in the piped command and in the --resume one, not after both."""
    from bulkretry._cli.state import resume_advice

    piped = ["run", "--state", "b.db"]
    assert resume_advice(piped, "b.db", None, True, 5, piped=True) == (
        "to go on, raise --max-retriggers above 5 (the batch's count) in: "
        "... | bulkretry run --state b.db --max-retriggers N  "
        "(or, with no more input: bulkretry run --state b.db --resume --max-retriggers N)"
    )
    given = ["run", "ids.txt", "--state", "b.db", "--max-retriggers", "5"]
    assert resume_advice(given, "b.db", None, True, None, piped=False) == (
        "to go on, raise --max-retriggers (the batch's count) in: "
        "bulkretry run ids.txt --state b.db --max-retriggers 5"
    )
    # Given on a piped command: the --resume form holds only what it needs, and the cap's place.
    assert resume_advice(given[:1] + given[2:], "b.db", None, True, 5, piped=True).endswith(
        "bulkretry run --state b.db --max-retriggers 5  "
        "(or, with no more input: bulkretry run --state b.db --resume --max-retriggers N)"
    )
    assert resume_advice(piped, "b.db", None, False, 5, piped=False) == (
        "to resume: bulkretry run --state b.db"
    )


def test_continuing_output_is_subprocess_free_of_tracebacks(tmp_path: Path) -> None:
    """A dry run's output path is never mistaken for a batch's own file (no state, no merge)."""
    ids = tmp_path / "ids.txt"
    ids.write_bytes(lines_of(3))
    out = tmp_path / "o.jsonl"
    out.write_text('{"run_id": "x", "outcome": "retriggered"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "bulkretry", "run", "--dry-run", str(ids), "-o", str(out)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert b"exists and is not empty" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("with_state", [False, True])
async def test_a_hard_stop_does_not_wait_for_an_input_that_stays_open(
    tmp_path: Path, with_state: bool
) -> None:
    """Two SIGINTs while stdin is open and silent: the process ends, the lines read have records."""
    first, second = asyncio.Event(), asyncio.Event()

    def on_request(request: RecordedRequest) -> None:
        if request.index == 1:
            first.set()
            asyncio.get_running_loop().call_later(0.2, second.set)

    state = ["--state", str(tmp_path / "s.db")] if with_state else []
    out = tmp_path / "out.jsonl"
    config = SimulatorConfig(
        run_ids=tuple(uuid(i) for i in range(20)), hang_rate=1.0, on_request=on_request
    )
    async with Simulator(config) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bulkretry", "run", "-o", str(out), "--concurrency", "2",
            *state,
            env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url},
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(lines_of(20))  # and the pipe stays open
        await proc.stdin.drain()
        await first.wait()
        proc.send_signal(signal.SIGINT)
        await second.wait()
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        err = await asyncio.wait_for(proc.stderr.read(), 60)
        code = await asyncio.wait_for(proc.wait(), 60)
        proc.stdin.close()
    assert code == 130, err.decode()
    assert b"stopped reading the input after 20 records" in err
    assert sorted(r["line"] for r in records(out)) == list(range(1, 21))


@pytest.mark.slow
async def test_ctrl_c_while_stdin_is_read_ahead_stops_there_and_accounts_for_every_line() -> None:
    """Results lines on a pipe left open are read ahead, so nothing is sent before its end.
    Ctrl-C there stops the reading; the batch stops as at its first moment (a second Ctrl-C:
    at once), sends nothing, and every line read has its record."""
    import fcntl
    import termios

    ids = [uuid(i) for i in range(20)]
    results = b"".join(orjson.dumps({"run_id": i, "outcome": "failed"}) + b"\n" for i in ids)
    read_end, write_end = os.pipe()
    async with Simulator(SimulatorConfig(run_ids=tuple(ids))) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bulkretry", "run", "-", "--no-preflight",
            env={**os.environ, **SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url},
            stdin=read_end,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.write(write_end, results)  # and the pipe stays open
        waiting = bytearray(4)
        for _ in range(3000):  # until the child has read it all (a condition, not a delay)
            fcntl.ioctl(read_end, termios.FIONREAD, waiting)
            if not int.from_bytes(waiting, sys.byteorder):
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        first = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"stopping: no new requests" in first
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        sent = sim.endpoint_counts().get("re-trigger", 0)
    os.close(write_end)
    os.close(read_end)
    assert proc.returncode == 130, err.decode()
    assert sent == 0
    assert sorted(orjson.loads(line)["run_id"] for line in out.splitlines()) == sorted(ids)
    assert b"stopped reading the input after 20 records" in err


def test_stdin_s_signal_handlers_are_put_back_whatever_ends_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usage error found after stdin was taken (`--only` on plain run IDs read ahead) still
    puts the signal handlers back: an in-process caller's Ctrl-C is not left to a flag."""
    import io

    from bulkretry._cli import run as run_module
    from bulkretry._io.spool import StdinInput

    taken = StdinInput(io.BytesIO(lines_of(3)), True)  # type: ignore[arg-type]
    monkeypatch.setattr(run_module, "stdin_is_a_terminal", lambda: False)
    monkeypatch.setattr(run_module, "take_stdin", lambda **_: taken)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["run", "-", "--only", "failed", "--dry-run"], env={}) == 2
    assert "none of the 3 input lines is one" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_ctrl_c_while_the_input_is_pre_scanned_is_the_batch_s_stop_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT before the batch's loop handles signals (here in the pre-scan of a FILE) used to
    end the process with no record at all; now the batch stops at its first moment, with a
    record for every line, and the handlers are put back after."""
    from bulkretry._cli import run as run_module

    real = run_module.prescan

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # handled before the next bytecode
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "prescan", interrupted)
    ids = tmp_path / "ids.txt"
    ids.write_bytes(lines_of(5))
    out = tmp_path / "out.jsonl"
    before = signal.getsignal(signal.SIGINT)
    assert main(["run", str(ids), "--dry-run", "-o", str(out)], env={}) == 130
    assert sorted(r["line"] for r in records(out)) == [1, 2, 3, 4, 5]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ([], "exists and is not empty; use --append or --overwrite"),
        (["--append", "--overwrite"], "--append and --overwrite cannot be used together"),
    ],
    ids=["not-empty", "append-and-overwrite"],
)
def test_an_output_refused_is_refused_before_stdin_is_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    said: str,
) -> None:
    """Results lines on stdin are read whole before the first request, as long as their
    producer runs (`bulkretry run ids | bulkretry run - -o out`): a typo'd -o is said at once,
    not after the producer ends."""
    from bulkretry._cli import run as run_module

    def read(**_: object) -> None:
        pytest.fail("stdin was read before the output was checked")

    out = tmp_path / "out.jsonl"
    out.write_text('{"run_id": "x", "outcome": "retriggered"}\n')
    monkeypatch.setattr(run_module, "stdin_is_a_terminal", lambda: False)
    monkeypatch.setattr(run_module, "take_stdin", read)
    assert main(["run", "-", "-o", str(out), "--dry-run", *flags], env={}) == 2
    assert said in capsys.readouterr().err
    assert out.read_text() == '{"run_id": "x", "outcome": "retriggered"}\n'


def test_an_output_in_a_directory_that_is_not_there_is_refused_before_stdin_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The commonest typo in -o, a directory that does not exist, came only at the open."""
    from bulkretry._cli import run as run_module

    def read(**_: object) -> None:
        pytest.fail("stdin was read before the output was checked")

    monkeypatch.setattr(run_module, "stdin_is_a_terminal", lambda: False)
    monkeypatch.setattr(run_module, "take_stdin", read)
    out = tmp_path / "no-such-dir" / "out.jsonl"
    assert main(["run", "-", "-o", str(out), "--dry-run"], env={}) == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_a_batch_with_a_state_file_may_go_on_with_its_own_output_read_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --state, a results file that is not empty may be the batch's own: the early check
    leaves that to the state file, and stdin is read."""
    from bulkretry._cli import run as run_module
    from bulkretry._exceptions import ConfigurationError

    reads: list[bool] = []

    def read(**_: object) -> None:
        reads.append(True)
        raise ConfigurationError("stdin read")

    out = tmp_path / "out.jsonl"
    out.write_text('{"run_id": "x", "outcome": "retriggered"}\n')
    monkeypatch.setattr(run_module, "stdin_is_a_terminal", lambda: False)
    monkeypatch.setattr(run_module, "take_stdin", read)
    argv = ["run", "-", "-o", str(out), "--state", str(tmp_path / "s.db")]
    assert main(argv, env=SIM_ENV) == 2
    assert reads == [True]
