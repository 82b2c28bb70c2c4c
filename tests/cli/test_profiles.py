"""Profiles in a TOML config file: precedence, warnings that prevent mistakes, clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkretry._cli.main import build_parser, main
from bulkretry._cli.options import RUN_OPTIONS
from bulkretry._cli.profiles import load_profile, merged_environment

CONFIG = """
[profiles.dev]
base_url = "http://127.0.0.1:9/dev"
org_id = "DEV@AdobeOrg"
sandbox = "dev"
rate = 20
timeout = 2.5
dry_run = true

[profiles.prod]
sandbox = "prod"
client_secret = "an-inline-secret-value"

[profiles.wrong_type]
rate = "fast"

[profiles.misspelt]
rat = 3
"""


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A temporary HOME with ~/.config/bulkretry/config.toml (mode 0600)."""
    folder = tmp_path / ".config" / "bulkretry"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(CONFIG)
    os.chmod(folder / "config.toml", 0o600)
    return {"HOME": str(tmp_path)}


def parse(env: dict[str, str], *args: str) -> object:
    profile = None
    from bulkretry._cli.main import _profile

    profile = _profile(["run", *args], env)
    return build_parser(merged_environment(env, profile), "run").parse_args(["run", *args])


def test_a_profile_fills_options_beneath_the_environment_and_flags(home: dict[str, str]) -> None:
    """Flag, then environment, then profile, then default."""
    env = {**home, "BULKRETRY_PROFILE": "dev", "BULKRETRY_TIMEOUT": "9"}
    ns = parse(env, "--rate", "7")
    assert (ns.rate, ns.timeout, ns.dry_run) == (7.0, 9.0, True)  # type: ignore[attr-defined]
    ns = parse(env)
    assert ns.rate == 20.0  # type: ignore[attr-defined]


def test_a_profile_given_on_the_command_line_beats_the_environment(home: dict[str, str]) -> None:
    """--profile dev is what the user typed now: it wins over BULKRETRY_* for its keys."""
    env = {**home, "BULKRETRY_TIMEOUT": "9", "BULKRETRY_RATE": "3"}
    ns = parse(env, "--profile", "dev")
    assert (ns.rate, ns.timeout) == (20.0, 2.5)  # type: ignore[attr-defined]


def test_a_variable_disagreeing_with_the_profile_on_the_batch_draws_a_warning(
    home: dict[str, str],
) -> None:
    """Re-triggering in prod while meaning dev is the mistake this warning prevents."""
    warnings: list[str] = []
    env = {**home, "BULKRETRY_SANDBOX": "prod"}
    load_profile("dev", env, RUN_OPTIONS, from_flag=True, warn=warnings.append)
    assert len(warnings) == 1
    assert "BULKRETRY_SANDBOX=prod" in warnings[0]
    assert "sandbox = dev" in warnings[0]


def test_an_inline_secret_in_a_readable_file_draws_a_warning(home: dict[str, str]) -> None:
    """client_secret written inline: fine in a 0600 file, a warning otherwise."""
    path = Path(home["HOME"]) / ".config" / "bulkretry" / "config.toml"
    warnings: list[str] = []
    load_profile("prod", home, RUN_OPTIONS, from_flag=True, warn=warnings.append)
    assert warnings == []
    os.chmod(path, 0o644)
    load_profile("prod", home, RUN_OPTIONS, from_flag=True, warn=warnings.append)
    assert len(warnings) == 1
    assert "chmod 600" in warnings[0]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("missing", "has no profile 'missing'"),
        ("wrong_type", "key 'rate'"),
        ("misspelt", "unknown key 'rat'"),
    ],
)
def test_a_wrong_profile_is_exit_2_naming_the_file_and_the_key(
    home: dict[str, str], profile: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A profile that does not exist, an unknown key or a wrongly typed value: one line, exit 2."""
    assert main(["run", "--dry-run", "--profile", profile, os.devnull], env=home) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "config.toml" in err
    assert err.count("\n") == 1


def test_config_shows_each_setting_and_where_it_came_from_with_secrets_masked(
    home: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`bulkretry config`: value and source per setting; a secret never printed whole."""
    env = {**home, "BULKRETRY_TIMEOUT": "9", "BULKRETRY_ACCESS_TOKEN": "a-long-access-token"}
    assert main(["config", "--profile", "prod"], env=env) == 0
    out = capsys.readouterr().out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines()}
    assert "[environment BULKRETRY_TIMEOUT]" in lines["timeout"]
    assert "[profile prod (" in lines["sandbox"]
    assert "[default]" in lines["rate"]
    assert "an-inline-secret-value" not in out
    assert "a-long-access-token" not in out
    assert "****" in lines["client_secret"]
    # Defaults as --help says them, and each command's own -o under its own variable's name.
    assert "= on; off with --dry-run  [default]" in lines["preflight"]
    assert "= off  [default]" in lines["follow"]
    assert {"output", "watch_output", "check_output", "list_failed_output"} <= lines.keys()
    names = [line.split("=")[0].strip() for line in out.splitlines()]
    assert len(names) == len(set(names))  # run and list-failed share --rate: said once


def test_config_into_a_reader_that_went_away_exits_0_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`bulkretry config | head -1`: the reader has what it wanted; no BrokenPipeError trace."""
    read, write = os.pipe()
    os.close(read)  # gone before a line is written: every write fails, whatever the timing
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bulkretry", "config"],
            stdout=write,
            stderr=subprocess.PIPE,
            env={**os.environ, "HOME": str(tmp_path)},
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (0, b"")


@pytest.mark.slow
async def test_a_profile_drives_a_real_batch_against_the_simulator(tmp_path: Path) -> None:
    """Credentials and base URL from a profile, over a socket: the runs are re-triggered."""
    import asyncio
    import sys

    from bulkretry._simulator import Simulator, SimulatorConfig

    ids = [f"{i:08x}-1804-45d6-8d56-dd51f05c0baf" for i in range(20)]
    async with Simulator(SimulatorConfig(run_ids=tuple(ids))) as sim:
        config = tmp_path / "config.toml"
        config.write_text(
            "[profiles.sim]\n"
            f'base_url = "{sim.base_url}"\n'
            'access_token = "sim-access-token"\n'
            'api_key = "sim-api-key"\n'
            'org_id = "SIMORG0000000000000000@AdobeOrg"\n'
            "rate = 500\n"
        )
        os.chmod(config, 0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKRETRY_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bulkretry", "run", "--profile", "sim",
            env={**env, "HOME": str(tmp_path), "BULKRETRY_CONFIG": str(config)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate("\n".join(ids).encode()), 60)
        counts = sim.retrigger_counts()
    assert proc.returncode == 0, err.decode()
    assert len(out.splitlines()) == 20
    assert sorted(counts) == sorted(ids)
