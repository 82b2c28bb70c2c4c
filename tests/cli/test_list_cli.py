"""The list-failed command: flags, environment, time windows, output formats and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkretry._cli.list_failed import configure_parser, parse_when, resolve_when, run_list_failed
from bulkretry._cli.options import Parser as _Parser
from bulkretry._simulator import RecordedRequest, Simulator, SimulatorConfig

pytestmark = pytest.mark.e2e

SIM_ENV = {
    "BULKRETRY_ACCESS_TOKEN": "sim-access-token",
    "BULKRETRY_API_KEY": "sim-api-key",
    "BULKRETRY_ORG_ID": "SIMORG0000000000000000@AdobeOrg",
    "BULKRETRY_RATE": "1000",
    "BULKRETRY_BURST": "50",
}
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


class SimulatorThread:
    """Serve a simulator from a thread of its own, so the command can run its own event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Simulator:
        self.thread.start()

        async def start() -> Simulator:
            sim = Simulator(self.config)
            await sim.start()
            return sim

        self.sim = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with SimulatorThread(SimulatorConfig(seed=7, flows=3, runs_per_flow=6)) as s:
        yield s


def env_for(sim: Simulator, **extra: str) -> dict[str, str]:
    return {**SIM_ENV, "BULKRETRY_BASE_URL": sim.base_url, **extra}


def parse(args: list[str], env: Mapping[str, str]) -> argparse.Namespace:
    parser = _Parser(prog="bulkretry list-failed")
    configure_parser(parser, env)
    return parser.parse_args(args)


def list_failed(args: list[str], env: Mapping[str, str], **kwargs: Any) -> int:
    return run_list_failed(parse(args, env), env, **kwargs)


def run_field(sim: Simulator, run_id: str, *path: str) -> Any:
    value: Any = sim.run(run_id)
    for name in path:
        value = value[name]
    return value


def started(sim: Simulator, run_id: str) -> int:
    return int(run_field(sim, run_id, "metrics", "durationSummary", "startedAtUTC"))


def failed_of(sim: Simulator, flow: str) -> list[str]:
    return [r for r in sim.failed_run_ids() if run_field(sim, r, "flowId") == flow]


def iso(ms: int, zone: datetime.timezone | None = None) -> str:
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=zone or datetime.UTC)
    text = when.isoformat(timespec="milliseconds")
    return text if zone is not None else text.removesuffix("+00:00")  # naive means UTC


def test_ids_are_written_one_per_line_with_a_summary_on_stderr(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """The default output is bare run IDs, pipeable into `bulkretry run`."""
    flows = sim.flow_ids()
    args = ["--flow-id", flows[0], "--flow-id", flows[2], "--page-size", "2"]
    assert list_failed(args, env_for(sim)) == 0
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(failed_of(sim, flows[0]) + failed_of(sim, flows[2]))
    assert "12 failed runs listed from 2 flows in 6 pages" in err
    assert len(err.splitlines()) == 1


def test_a_flow_id_no_flow_has_exits_2_naming_it_after_the_others_are_listed(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """A typo'd (well-formed) flow ID lists nothing: that is an error, not a green exit; the
    flows that exist are listed all the same."""
    known = sim.flow_ids()[0]
    args = ["--flow-id", FLOW_A, "--flow-id", known]
    assert list_failed(args, env_for(sim)) == 2
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(failed_of(sim, known))
    assert f"--flow-id {FLOW_A}: no such flow in sandbox 'prod'" in err
    assert sim.endpoint_counts().get("get-flow") == 1  # only the flow that listed nothing
    assert "superseded" not in err  # the summary's look-ups are those of --skip-superseded


def test_a_flow_with_no_failed_run_in_the_window_lists_nothing_and_exits_0(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """It exists (GET /flows/{id} says so): an empty listing is a complete one."""
    args = ["--flow-id", sim.flow_ids()[0], "--since", "2h", "--until", "1h"]
    assert list_failed(args, env_for(sim)) == 0
    out, err = capfd.readouterr()
    assert out == ""
    assert "error:" not in err


def test_an_upper_case_flow_id_lists_the_same_runs_as_its_lower_case(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """--flow-id is folded to lower case, as run IDs are: no listed run is left out."""
    flow = sim.flow_ids()[0]
    assert list_failed(["--flow-id", flow.upper()], env_for(sim)) == 0
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(failed_of(sim, flow))
    assert "6 failed runs listed from 1 flow" in err
    assert "left out" not in err


@pytest.mark.parametrize(
    "flow",
    ["not-a-flow", "3d17a4ff9e0a4f7c94bbbc0b61a3a76d", "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76", ""],
)
def test_a_flow_id_that_is_not_a_uuid_exits_2_naming_it_before_any_request(
    flow: str, sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --flow-id is a usage error: exit 2, one line naming it, nothing asked."""
    good = sim.flow_ids()[0]
    assert list_failed(["--flow-id", good, "--flow-id", flow], env_for(sim)) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"bulkretry: error: --flow-id {flow!r} is not a flow ID")
    assert sim.requests == []


def test_jsonl_format_gives_one_object_per_run(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """--format jsonl: run_id, flow_id, times, status and failure summary per line."""
    flow = sim.flow_ids()[1]
    assert list_failed(["--flow-id", flow, "--format", "jsonl", "-q"], env_for(sim)) == 0
    out, err = capfd.readouterr()
    records = [orjson.loads(line) for line in out.splitlines()]
    assert sorted(r["run_id"] for r in records) == sorted(failed_of(sim, flow))
    first = records[0]
    assert set(first) == {"run_id", "flow_id", "started_at", "completed_at", "status", "errors"}
    assert first["flow_id"] == flow
    assert first["errors"] == run_field(sim, first["run_id"], "metrics", "statusSummary", "errors")
    assert err == ""


def test_iso_window_with_and_without_a_zone_selects_runs_started_inside(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """A naive ISO time is UTC; one with an offset is converted; both ends are exclusive."""
    ids = sim.failed_run_ids()
    starts = sorted(started(sim, r) for r in ids)
    low, high = starts[3], starts[-3]
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    args = ["--all-flows", "--since", iso(low), "--until", iso(high, plus_two), "-q"]
    assert list_failed(args, env_for(sim)) == 0
    out, _ = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(r for r in ids if low < started(sim, r) < high)


def test_relative_since_counts_back_from_now(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """--since 2d lists the runs started in the two days before now."""
    ids = sim.failed_run_ids()
    now = datetime.datetime.fromtimestamp(
        max(started(sim, r) for r in ids) / 1000 + 60, datetime.UTC
    )
    assert list_failed(["--all-flows", "--since", "2d", "-q"], env_for(sim), now=lambda: now) == 0
    out, _ = capfd.readouterr()
    cutoff = (now - datetime.timedelta(days=2)).timestamp() * 1000
    expected = sorted(r for r in ids if started(sim, r) > cutoff)
    assert expected
    assert sorted(out.splitlines()) == expected
    assert len(expected) < len(ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - datetime.timedelta(minutes=30)),
        ("6h", NOW - datetime.timedelta(hours=6)),
        ("2d", NOW - datetime.timedelta(days=2)),
        ("1w", NOW - datetime.timedelta(weeks=1)),
        ("2029-12-31T12:00", datetime.datetime(2029, 12, 31, 12, tzinfo=datetime.UTC)),
        ("2029-12-31T12:00Z", datetime.datetime(2029, 12, 31, 12, tzinfo=datetime.UTC)),
        ("2029-12-31T14:00+02:00", datetime.datetime(2029, 12, 31, 12, tzinfo=datetime.UTC)),
        ("2029-12-31", datetime.datetime(2029, 12, 31, tzinfo=datetime.UTC)),
    ],
)
def test_when_is_an_iso_time_or_a_duration_before_now(
    text: str, expected: datetime.datetime
) -> None:
    """Durations count back from now; ISO times without a zone are UTC."""
    ms = resolve_when(parse_when(text), NOW, what="--since")
    assert ms == int(expected.timestamp() * 1000)


@pytest.mark.parametrize("text", ["yesterday", "3x", "-2d", "2025-13-01", "", "1 week"])
def test_bad_since_exits_2_with_one_line(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable --since is a usage error: exit 2, one line naming it."""
    with pytest.raises(SystemExit) as caught:
        parse(["--all-flows", f"--since={text}"], SIM_ENV)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--since" in err
    assert "ISO-8601" in err


def test_bad_since_on_a_plain_argparse_parser_exits_2() -> None:
    """configure_parser works on any ArgumentParser, as the lead's subparser will be."""
    parser = argparse.ArgumentParser(prog="x")
    configure_parser(parser, {})
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["--all-flows", "--until", "soon"])
    assert caught.value.code == 2


def test_since_after_until_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty window is refused before any request."""
    args = ["--all-flows", "--since", "1d", "--until", "2d"]
    assert list_failed(args, {**SIM_ENV, "BULKRETRY_BASE_URL": "http://127.0.0.1:9"}) == 2
    assert "--since must be earlier than --until" in capsys.readouterr().err


def test_no_flow_and_no_all_flows_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Listing the whole sandbox must be asked for explicitly."""
    assert list_failed([], SIM_ENV) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--flow-id" in err
    assert "--all-flows" in err


FLOW_A, FLOW_B = "3d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d", "4d17a4ff-9e0a-4f7c-94bb-bc0b61a3a76d"


def test_flow_ids_on_the_command_line_replace_the_environment_s() -> None:
    """A flag wins over the environment: a --flow-id (typo'd or not) lists its flow alone, not
    the environment's flows as well; and so does --exclude."""
    env = {"BULKRETRY_LIST_FAILED_FLOW_ID": f"{FLOW_A},{FLOW_A.upper()}"}
    assert parse([], env).flow_ids == [FLOW_A, FLOW_A.upper()]
    assert parse(["--flow-id", FLOW_B], env).flow_ids == [FLOW_B]
    assert parse(["--flow-id", FLOW_B, "--flow-id", FLOW_A], env).flow_ids == [FLOW_B, FLOW_A]
    env = {"BULKRETRY_LIST_FAILED_EXCLUDE": os.pathsep.join(["x.jsonl", "y.jsonl"])}
    assert parse(["--all-flows", "--exclude", "z.jsonl"], env).exclude == ["z.jsonl"]


def test_all_flows_on_the_command_line_beats_the_environment_s_flow_ids(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """The simulator's env file names its flows; --all-flows still lists every flow."""
    env = env_for(sim, BULKRETRY_LIST_FAILED_FLOW_ID=FLOW_A)
    assert list_failed(["--all-flows", "-q"], env) == 0
    assert sorted(capfd.readouterr().out.splitlines()) == sorted(sim.failed_run_ids())


def test_flow_ids_on_the_command_line_beat_all_flows_from_the_environment(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """BULKRETRY_LIST_FAILED_ALL_FLOWS=1 and --flow-id F: the flag wins, F alone is listed."""
    flow = sim.flow_ids()[1]
    env = env_for(sim, BULKRETRY_LIST_FAILED_ALL_FLOWS="1")
    assert list_failed(["--flow-id", flow, "-q"], env) == 0
    assert sorted(capfd.readouterr().out.splitlines()) == sorted(failed_of(sim, flow))


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--flow-id", FLOW_A, "--all-flows"], {}, "--flow-id and --all-flows"),
        (
            [],
            {"BULKRETRY_LIST_FAILED_ALL_FLOWS": "1", "BULKRETRY_LIST_FAILED_FLOW_ID": FLOW_A},
            "BULKRETRY_LIST_FAILED_FLOW_ID and BULKRETRY_LIST_FAILED_ALL_FLOWS",
        ),
    ],
)
def test_flow_ids_and_all_flows_from_one_place_exit_2_naming_where(
    args: list[str], env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list_failed(args, {**SIM_ENV, **env}) == 2
    err = capsys.readouterr().err
    assert named in err
    assert err.count("\n") == 1


def test_missing_credentials_exit_2_naming_them(capsys: pytest.CaptureFixture[str]) -> None:
    """Same credentials as `run`, with the same message when they are missing."""
    assert list_failed(["--all-flows"], {"BULKRETRY_BASE_URL": "http://127.0.0.1:9"}) == 2
    err = capsys.readouterr().err
    assert "BULKRETRY_ACCESS_TOKEN" in err
    assert "BULKRETRY_ORG_ID" in err


def test_options_come_from_the_environment_and_flags_win() -> None:
    """Every connection option has its BULKRETRY_ variable; a flag overrides it."""
    env = {
        "BULKRETRY_RATE": "3",
        "BULKRETRY_LIST_FAILED_PAGE_SIZE": "7",
        "BULKRETRY_MAX_ATTEMPTS": "9",
    }
    ns = parse(["--all-flows", "--rate", "4"], env)
    assert (ns.rate, ns.page_size, ns.max_attempts) == (4.0, 7, 9)
    # run's results file is not where a listing goes.
    assert parse(["--all-flows"], {"BULKRETRY_OUTPUT": "results.jsonl"}).output is None


def test_halted_listing_exits_3_with_one_line_keeping_what_was_written(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """A refusal mid-listing: exit 3, the pages before it stay written, one line says why."""
    sim.script(None, [200, 400])
    assert list_failed(["--all-flows", "--page-size", "4", "-q"], env_for(sim)) == 3
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 4
    assert err.count("\n") == 1
    assert err.startswith("bulkretry: listing the failed runs stopped at page 2: ")
    assert "HTTP 400" in err


def test_output_file_is_written_and_not_overwritten_without_asking(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """-o PATH receives the list; an existing non-empty file needs --overwrite."""
    target = tmp_path / "failed.txt"
    assert list_failed(["--all-flows", "-o", str(target), "-q"], env_for(sim)) == 0
    assert sorted(target.read_text().splitlines()) == sorted(sim.failed_run_ids())
    assert list_failed(["--all-flows", "-o", str(target)], env_for(sim)) == 2
    assert "--overwrite" in capfd.readouterr().err


@pytest.mark.slow
def test_listing_stops_quietly_when_the_reader_goes_away(tmp_path: Path) -> None:
    """`list-failed | head -1`: the closed pipe ends the listing with exit 0 and no traceback."""
    closed = threading.Event()

    def hold_page_3(rec: RecordedRequest) -> None:
        if rec.index == 3:
            closed.wait(10)  # page 3 is answered only after the reader has gone

    config = SimulatorConfig(flows=2, runs_per_flow=10, on_request=hold_page_3)
    with SimulatorThread(config) as sim:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkretry", "list-failed", "--all-flows", "--page-size", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env_for(sim)},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        closed.set()
        _, err = proc.communicate(timeout=60)
        listed = len([r for r in sim.requests if r.path == "/runs"])
    assert first.strip().decode() in sim.failed_run_ids()
    assert proc.returncode == 0
    assert b"Traceback" not in err
    assert listed < 20


@pytest.mark.slow
def test_list_failed_piped_into_run_retriggers_each_failed_run_once() -> None:
    """`bulkretry list-failed --flow-id F --format jsonl | bulkretry run` is a whole recovery."""
    with SimulatorThread(SimulatorConfig(seed=11, flows=2, runs_per_flow=8)) as sim:
        flow = sim.flow_ids()[0]
        env = {**os.environ, **env_for(sim)}
        lister = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bulkretry",
                "list-failed",
                "--flow-id",
                flow,
                "--format",
                "jsonl",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        runner = subprocess.run(
            [sys.executable, "-m", "bulkretry", "run", "-q"],
            stdin=lister.stdout,
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert lister.stdout is not None
        lister.stdout.close()
        _, lister_err = lister.communicate(timeout=60)
        counts = sim.retrigger_counts()
    assert lister.returncode == 0, lister_err.decode()
    assert runner.returncode == 0, runner.stderr.decode()
    assert counts == dict.fromkeys(failed_of(sim, flow), 1)
    assert b"8 failed runs listed from 1 flow in 1 page;" in lister_err


def test_help_names_each_option_with_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--help shows the flags, the BULKRETRY_ variables and the exit codes."""
    with pytest.raises(SystemExit):
        parse(["--help"], {})
    text = " ".join(capsys.readouterr().out.split())
    for name in ("BASE_URL", "RATE", "TIMEOUT", "MAX_ATTEMPTS", "TOKEN_FILE", "CA_BUNDLE", "QUIET"):
        assert f"BULKRETRY_{name}" in text
    for flag in ("--flow-id", "--all-flows", "--since", "--until", "--format", "--output"):
        assert flag in text
    for flag in ("--exclude FILE", "--state PATH", "--skip-superseded", "--no-skip-superseded"):
        assert flag in text
    for name in ("LIST_FAILED_EXCLUDE", "STATE", "LIST_FAILED_SKIP_SUPERSEDED"):
        assert f"BULKRETRY_{name}" in text
    assert "exit codes:" in text


def test_the_new_variables_draw_no_unknown_variable_warning() -> None:
    """BULKRETRY_LIST_FAILED_EXCLUDE and _SKIP_SUPERSEDED are variables some command reads."""
    from bulkretry._cli.main import known_variables
    from bulkretry._cli.variables import unknown_variables

    env = {"BULKRETRY_LIST_FAILED_EXCLUDE": "a", "BULKRETRY_LIST_FAILED_SKIP_SUPERSEDED": "1"}
    assert unknown_variables(env, known_variables()) == []


# -- what is done already: --exclude, --state, --skip-superseded ---------------------------------


def results_file(path: Path, lines: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return str(path)


def test_exclude_leaves_out_runs_results_files_show_re_triggered(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each --exclude file counts; the summary says how many were left out and why."""
    flow = sim.flow_ids()[0]
    failed = failed_of(sim, flow)
    first = results_file(tmp_path / "a.jsonl", [{"run_id": failed[0], "outcome": "retriggered"}])
    second = results_file(
        tmp_path / "b.jsonl",
        [
            {"run_id": failed[1], "outcome": "skipped", "prior_outcome": "already_retriggered"},
            {"run_id": failed[2], "outcome": "failed"},
        ],
    )
    args = ["--flow-id", flow, "--exclude", first, "--exclude", second]
    assert list_failed(args, env_for(sim)) == 0
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(failed[2:])
    assert f"{len(failed) - 2} failed runs listed" in err
    assert "2 left out as re-triggered already (2 by results files)" in err


def test_exclude_files_come_from_the_environment_separated_like_path(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """BULKRETRY_LIST_FAILED_EXCLUDE holds several files, os.pathsep between them."""
    failed = sim.failed_run_ids()
    files = [
        results_file(tmp_path / f"{i}.jsonl", [{"run_id": run, "outcome": "retriggered"}])
        for i, run in enumerate(failed[:3])
    ]
    env = env_for(sim, BULKRETRY_LIST_FAILED_EXCLUDE=os.pathsep.join(files))
    assert list_failed(["--all-flows"], env) == 0
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(failed[3:])
    assert "3 left out as re-triggered already" in err


def test_state_leaves_out_what_the_batch_re_triggered(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Runs the state file records re-triggered are not listed; it is only read."""
    from bulkretry._ledger.ledger import BatchIdentity, Ledger

    failed = sim.failed_run_ids()
    state = tmp_path / "batch.db"
    identity = BatchIdentity(base_url=sim.base_url, org_id="o", sandbox="prod", op="re-trigger")
    with Ledger.open(str(state), identity) as ledger:
        ledger.admit_many((run, "in", i + 1) for i, run in enumerate(failed[:4]))
        for run, outcome in zip(
            failed[:4], ["retriggered", "failed", "in_doubt", "retriggered"], strict=True
        ):
            ledger.outcome(
                run,
                outcome,
                new_run_id=None,
                etag=None,
                attempts=1,
                ambiguous=0,
                error=None,
                http_status=200,
                request_id=None,
            )
    assert list_failed(["--all-flows", "--state", str(state)], env_for(sim)) == 0
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(set(failed) - {failed[0], failed[3]})
    assert "2 left out as re-triggered already (2 by the state file)" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--exclude", "/nonexistent/results.jsonl"], "not found"),
        (["--state", "NOTES"], "not a bulkretry state file"),
    ],
)
def test_an_unusable_exclusion_exits_2_before_any_request(
    sim: Simulator,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    """A missing results file or a file that is no state file: one line, exit 2, no request."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a ledger\n")
    args = [str(notes) if a == "NOTES" else a for a in args]
    assert list_failed(["--all-flows", *args], env_for(sim)) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert words in err
    assert sim.requests == []


def test_skip_superseded_is_opt_in_and_counts_its_requests(
    sim: Simulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """--skip-superseded (or its variable) adds one look-up per flow; --no-… turns it off."""
    flows = sim.flow_ids()
    env = env_for(sim, BULKRETRY_LIST_FAILED_SKIP_SUPERSEDED="1")
    assert list_failed(["--all-flows", "--no-skip-superseded"], env) == 0
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == sorted(sim.failed_run_ids())
    assert "superseded" not in err
    assert list_failed(["--all-flows"], env) == 0
    out, err = capfd.readouterr()
    kept = out.splitlines()
    for run in kept:
        flow = run_field(sim, run, "flowId")
        newest = max(
            run_field(sim, r, "createdAt")
            for r in sim.run_ids("success")
            if run_field(sim, r, "flowId") == flow
        )
        assert run_field(sim, run, "createdAt") >= newest
    superseded = len(sim.failed_run_ids()) - len(kept)
    assert 0 < superseded < len(sim.failed_run_ids())
    assert f"{superseded} left out as superseded by a newer successful run" in err
    assert f"({len(flows)} look-ups)" in err
    assert len([r for r in sim.requests if "orderby" in r.query]) == len(flows)


@pytest.mark.slow
def test_listing_again_after_a_batch_with_state_sends_nothing_twice(tmp_path: Path) -> None:
    """`list-failed --state b.db | run --state b.db`, twice: the second lists and sends none."""
    with SimulatorThread(SimulatorConfig(seed=12, flows=2, runs_per_flow=5)) as sim:
        env = {**os.environ, **env_for(sim)}
        flow = sim.flow_ids()[0]
        state = str(tmp_path / "b.db")
        results = str(tmp_path / "results.jsonl")
        listing = ["list-failed", "--flow-id", flow, "--state", state, "--exclude", results]
        Path(results).touch()
        for round_ in range(2):
            piped = subprocess.run(
                [sys.executable, "-m", "bulkretry", *listing],
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            assert piped.returncode == 0, piped.stderr.decode()
            listed = piped.stdout.decode().splitlines()
            assert len(listed) == (5 if round_ == 0 else 0), piped.stderr.decode()
            # The first time, the batch has not created its state file yet.
            assert (b"holds no batch yet" in piped.stderr) is (round_ == 0)
            sent = subprocess.run(
                [sys.executable, "-m", "bulkretry", "run", "-q", "--state", state,
                 "-o", results, "--append"],
                input=piped.stdout,
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr.decode()
        counts = sim.retrigger_counts()
    assert counts == dict.fromkeys(failed_of(sim, flow), 1)
    assert b"5 left out as re-triggered already" in piped.stderr
