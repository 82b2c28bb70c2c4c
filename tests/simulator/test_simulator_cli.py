"""``bulkretry simulate``: its options, its refusals, and a real server in a subprocess."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from bulkretry._simulator import (
    LeakyBucketQuota,
    Quota,
    SimulatorConfig,
    SlidingWindowQuota,
    TokenBucketQuota,
    WindowQuota,
)
from bulkretry._simulator._cli import (
    UsageError,
    build_config,
    configure_parser,
    run_from_args,
    serve,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(list(argv))


def test_defaults_give_the_default_simulator_without_a_request_log() -> None:
    """Without options the CLI serves the default simulator, keeping no request log."""
    config = build_config(parse())
    assert config == SimulatorConfig(
        record_requests=False, clock=config.clock, wall_clock=config.wall_clock
    )
    assert (config.host, config.port) == ("127.0.0.1", 0)


def test_options_map_onto_the_config() -> None:
    """Trouble options land in the config, milliseconds turned into seconds."""
    config = build_config(
        parse(
            "--seed=9",
            "--flows=5",
            "--runs-per-flow=2",
            "--accept-any",
            "--quota-rate=40",
            "--quota-burst=8",
            "--retry-after=http-date",
            "--error-rate=0.1",
            "--in-doubt-rate=0.05",
            "--latency-ms=20",
            "--jitter-ms=5",
            "--response-shape=spec",
            "--allow-repeat-retrigger",
            "--base-path=/data/foundation/flowservice/",
        )
    )
    assert config.quota == TokenBucketQuota(rate=40, burst=8)
    assert (config.seed, config.flows, config.runs_per_flow) == (9, 5, 2)
    assert (config.accept_any, config.allow_repeat_retrigger) == (True, True)
    assert (config.latency, config.jitter) == (0.02, 0.005)
    assert (config.retry_after, config.response_shape) == ("http-date", "spec")
    assert (config.error_rate, config.in_doubt_rate) == (0.1, 0.05)
    assert config.base_path == "/data/foundation/flowservice"


def test_fixed_window_options_make_a_window_quota() -> None:
    """--quota-window with --window-requests makes a fixed-window quota."""
    config = build_config(parse("--quota-window=60", "--window-requests=100"))
    assert config.quota == WindowQuota(requests=100, window=60)


@pytest.mark.parametrize(
    ("argv", "quota"),
    [
        (("--quota-shape=leaky-bucket", "--quota-rate=5"), LeakyBucketQuota(rate=5)),
        (
            ("--quota-shape=sliding-window", "--quota-window=10", "--window-requests=3"),
            SlidingWindowQuota(requests=3, window=10),
        ),
        (("--quota-per-minute=100",), WindowQuota(requests=100, window=60)),
        (
            ("--quota-shape=sliding-window", "--quota-per-minute=100", "--no-count-rejected"),
            SlidingWindowQuota(requests=100, window=60, count_rejected=False),
        ),
        (("--quota-shape=token-bucket", "--quota-rate=5"), TokenBucketQuota(rate=5, burst=1)),
    ],
)
def test_quota_shape_options_make_each_shape(argv: tuple[str, ...], quota: Quota) -> None:
    """--quota-shape picks the shape; --quota-per-minute is a window of 60 s."""
    assert build_config(parse(*argv)).quota == quota


def test_lifecycle_throttle_and_client_options_map_onto_the_config() -> None:
    """Run durations, fates, the throttle, rate-limit headers and client keys land in the config."""
    config = build_config(
        parse(
            "--run-duration=2",
            "--run-duration-jitter=0.5",
            "--in-progress-status=IN_PROGRESS",
            "--fates=run-a=fails-once, run-b=always-fails",
            "--fate-shares=fails-once=0.2,always-fails=0.05",
            "--throttle-rate=0.1",
            "--throttle-retry-after=3",
            "--rate-limit-headers=ietf",
            "--client-header=x-worker",
            "--extra-api-keys=key-a,key-b",
        )
    )
    assert (config.run_duration, config.run_duration_jitter) == (2, 0.5)
    assert config.in_progress_status == "IN_PROGRESS"
    assert config.fates == {"run-a": "fails-once", "run-b": "always-fails"}
    assert config.fate_shares == {"fails-once": 0.2, "always-fails": 0.05}
    assert (config.throttle_rate, config.throttle_retry_after) == (0.1, 3)
    assert (config.rate_limit_headers, config.client_header) == ("ietf", "x-worker")
    assert config.extra_api_keys == ("key-a", "key-b")


@pytest.mark.parametrize(
    "argv",
    [("--fates=run-a=sometimes",), ("--fates=run-a",), ("--fate-shares=fails-once=2",)],
)
def test_unreadable_fates_are_refused_by_the_parser(argv: tuple[str, ...]) -> None:
    """A fate that is not one, or a share that is not a probability, stops the parser."""
    with pytest.raises(SystemExit):
        parse(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ("--quota-rate=5", "--quota-window=1", "--window-requests=3"),
        ("--quota-window=1",),
        ("--quota-shape=leaky-bucket", "--quota-rate=5", "--quota-burst=3"),
        ("--quota-shape=leaky-bucket",),
        ("--quota-shape=sliding-window", "--quota-rate=5"),
        ("--quota-shape=sliding-window",),
        ("--quota-per-minute=10", "--quota-window=60", "--window-requests=10"),
        ("--quota-per-minute=10", "--no-count-rejected"),
        ("--quota-burst=4",),
        ("--fate-shares=fails-once=0.7,always-fails=0.7",),
        ("--in-progress-status=failed",),
        ("--error-rate=0.8", "--reset-rate=0.8"),
        ("--host=0.0.0.0",),
        ("--host=example.com",),
    ],
)
def test_clashing_or_unsafe_options_are_refused(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Options that clash, or a non-loopback address, exit 2 with one line on stderr."""
    with pytest.raises(UsageError):
        build_config(parse(*argv))
    assert run_from_args(parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("bulkretry simulate: error: ")
    assert err.count("\n") == 1


def test_allow_remote_permits_a_non_loopback_address() -> None:
    """--allow-remote is the explicit consent to bind a non-loopback address."""
    assert build_config(parse("--host=0.0.0.0", "--allow-remote")).host == "0.0.0.0"
    assert build_config(parse("--host=::1")).host == "::1"


def test_run_ids_file_is_read_skipping_blanks_and_comments(tmp_path: Path) -> None:
    """Run IDs come one a line; blank lines and # comments are skipped."""
    path = tmp_path / "ids.txt"
    path.write_text("# failed yesterday\nrun-a\n\n  run-b  \n", encoding="utf-8")
    assert build_config(parse(f"--run-ids-file={path}")).run_ids == ("run-a", "run-b")


def test_missing_run_ids_file_is_a_usage_error(tmp_path: Path) -> None:
    """An unreadable run IDs file is reported, not raised."""
    with pytest.raises(UsageError, match="cannot read run IDs"):
        build_config(parse(f"--run-ids-file={tmp_path / 'nope.txt'}"))


ROOT = Path(__file__).resolve().parents[2]
SERVE = (
    "import argparse, sys\n"
    "from bulkretry._simulator._cli import configure_parser, run_from_args\n"
    "p = argparse.ArgumentParser()\n"
    "configure_parser(p)\n"
    "sys.exit(run_from_args(p.parse_args(sys.argv[1:])))\n"
)


@pytest.mark.slow
async def test_standalone_server_announces_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The server prints its URL then the failed runs, writes the ready file, exits 0 on SIGTERM."""
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        "--flows=1",
        "--runs-per-flow=2",
        "--print-failed",
        f"--ready-file={ready}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        failed = [(await proc.stdout.readline()).decode().strip() for _ in range(2)]
        assert url.startswith("http://127.0.0.1:")
        assert ready.read_text(encoding="utf-8").strip() == url
        headers = {
            "Authorization": "Bearer sim-access-token",
            "x-api-key": "sim-api-key",
            "x-gw-ims-org-id": "SIMORG0000000000000000@AdobeOrg",
            "x-sandbox-name": "prod",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/runs/{failed[0]}/action?op=re-trigger", headers=headers) as resp,
        ):
            assert resp.status == 200
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    assert b"BULKRETRY_ACCESS_TOKEN=sim-access-token" in err
    assert b'"retriggers": 1' in err or b"'retriggers': 1" in err


async def test_the_server_keeps_its_seeded_runs_out_of_garbage_collections(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once serving, the seeded state is frozen: a full collection that walked it held the
    loop for 20 ms in a batch, and the requests queued meanwhile met a quota all at once."""
    frozen = asyncio.Event()
    announced: list[str] = []

    def freeze() -> None:  # (a real freeze would hold the whole suite's objects)
        announced.append(capsys.readouterr().out)
        frozen.set()

    monkeypatch.setattr(gc, "freeze", freeze)
    task = asyncio.create_task(serve(build_config(parse("--flows=1")), parse("--flows=1")))
    try:
        await asyncio.wait_for(frozen.wait(), 10)
        assert announced[0].startswith("http://127.0.0.1:")  # seeded and serving by then
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_new_options_are_read_from_bulkretry_simulate_variables() -> None:
    """`bulkretry simulate` reads every option from BULKRETRY_SIMULATE_*, lists included."""
    from bulkretry._cli.main import build_parser

    env = {
        "BULKRETRY_SIMULATE_FATES": "run-a=fails-once,run-b=always-fails",
        "BULKRETRY_SIMULATE_FATE_SHARES": "always-fails=0.1",
        "BULKRETRY_SIMULATE_EXTRA_API_KEYS": "key-a,key-b",
        "BULKRETRY_SIMULATE_QUOTA_SHAPE": "sliding-window",
        "BULKRETRY_SIMULATE_QUOTA_PER_MINUTE": "100",
        "BULKRETRY_SIMULATE_COUNT_REJECTED": "0",
        "BULKRETRY_SIMULATE_RUN_DURATION": "2.5",
    }
    config = build_config(build_parser(env, "simulate").parse_args(["simulate"]))
    assert config.fates == {"run-a": "fails-once", "run-b": "always-fails"}
    assert config.fate_shares == {"always-fails": 0.1}
    assert config.extra_api_keys == ("key-a", "key-b")
    assert config.quota == SlidingWindowQuota(requests=100, window=60, count_rejected=False)
    assert config.run_duration == 2.5


def test_simulate_help_shows_no_python_none(capsys: pytest.CaptureFixture[str]) -> None:
    """The new options' help says defaults in words."""
    from bulkretry._cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser({}, "simulate").parse_args(["simulate", "--help"])
    text = capsys.readouterr().out
    assert "--fate-shares" in text
    assert "None" not in text
