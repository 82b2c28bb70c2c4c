"""Help that reads like a man page, booleans with --no-, no BULKRETRY_* variable ignored."""

from __future__ import annotations

import pytest

from bulkretry._cli.main import build_parser, main
from bulkretry._cli.variables import unknown_variables

COMMANDS = [
    "run",
    "list-failed",
    "watch",
    "status",
    "report",
    "config",
    "completion",
    "simulate",
    "demo",
]


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        build_parser({}, command).parse_args([command, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_examples_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each subcommand's --help says what it does, shows examples and lists its exit codes."""
    text = help_of(command, capsys)
    assert "examples:" in text
    assert "exit codes:" in text
    assert f"bulkretry {command}" in text.split("examples:")[1]
    description = text.split("\n\n")[1]
    assert len(description.split()) > 10, description


@pytest.mark.parametrize("command", COMMANDS)
def test_no_help_text_shows_a_python_none(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults are said in words (stdout, none, all), never as Python's None."""
    text = help_of(command, capsys)
    assert "None" not in text


def test_run_help_says_defaults_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    """The output defaults to stdout, --only to all, numbers without a trailing .0."""
    text = " ".join(help_of("run", capsys).split())
    assert "BULKRETRY_OUTPUT; default stdout" in text
    assert "BULKRETRY_ONLY; default all" in text
    assert "BULKRETRY_RATE; default 5]" in text
    assert "BULKRETRY_RUN_ID_PATTERN; default a UUID" in text


def test_a_boolean_set_in_the_environment_is_turned_off_by_its_no_flag() -> None:
    """BULKRETRY_DRY_RUN=1 and --no-dry-run: the flag wins, as for every option."""
    parser = build_parser({"BULKRETRY_DRY_RUN": "1", "BULKRETRY_QUIET": "1"}, "run")
    assert parser.parse_args(["run"]).dry_run is True
    ns = parser.parse_args(["run", "--no-dry-run", "--no-quiet"])
    assert (ns.dry_run, ns.quiet) == (False, False)


def test_a_misspelt_variable_draws_a_warning_naming_the_closest_known_one() -> None:
    """BULKRETRY_DRYRUN is not silently ignored: the warning suggests BULKRETRY_DRY_RUN."""
    warnings = unknown_variables(
        {"BULKRETRY_DRYRUN": "1", "BULKRETRY_RATE": "3", "PATH": "/bin"},
        ["BULKRETRY_DRY_RUN", "BULKRETRY_RATE"],
    )
    assert warnings == [
        "unknown variable BULKRETRY_DRYRUN is ignored (did you mean BULKRETRY_DRY_RUN?)"
    ]


def test_the_command_line_warns_of_unknown_variables_before_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real invocation prints the warning on stderr and goes on."""
    code = main(["run", "--dry-run", "/dev/null"], env={"BULKRETRY_DRYRUN": "1"})
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: unknown variable BULKRETRY_DRYRUN" in err
    assert "BULKRETRY_DRY_RUN?" in err


def test_credentials_and_every_commands_variables_are_known(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No warning for the variables README documents, list-failed's own ones included."""
    env = {
        "BULKRETRY_ACCESS_TOKEN": "t",
        "BULKRETRY_CLIENT_SECRET": "s",
        "BULKRETRY_IMS_URL": "https://ims.example.test",
        "BULKRETRY_LIST_FAILED_FORMAT": "jsonl",
        "BULKRETRY_LIST_FAILED_FLOW_ID": "x",
        "BULKRETRY_STATE": "",
    }
    main(["run", "--dry-run", "/dev/null"], env=env)
    assert "unknown variable" not in capsys.readouterr().err


def test_list_failed_reads_its_own_options_from_its_own_variables() -> None:
    """BULKRETRY_LIST_FAILED_<OPTION> for options of list-failed alone, so names never collide."""
    flow = "0a5b6c7d-1804-45d6-8d56-dd51f05c0baf"
    env = {
        "BULKRETRY_LIST_FAILED_FORMAT": "jsonl",
        "BULKRETRY_LIST_FAILED_ALL_FLOWS": "1",
        "BULKRETRY_LIST_FAILED_FLOW_ID": flow,
        "BULKRETRY_LIST_FAILED_SINCE": "2d",
        "BULKRETRY_OUTPUT": "not-for-list-failed.txt",
    }
    ns = build_parser(env, "list-failed").parse_args(["list-failed"])
    assert (ns.format, ns.all_flows, ns.flow_ids, ns.output) == ("jsonl", True, [flow], None)
    assert ns.since is not None


def test_every_subcommand_reads_its_own_options_from_its_own_variables() -> None:
    """status --state reads run's BULKRETRY_STATE; report's and demo's own options theirs."""
    env = {
        "BULKRETRY_STATE": "b.db",
        "BULKRETRY_STATUS_FORMAT": "json",
        "BULKRETRY_REPORT_FORMAT": "json",
        "BULKRETRY_DEMO_RUNS": "7",
        "BULKRETRY_DEMO_OVERWRITE": "1",
    }
    status = build_parser(env, "status").parse_args(["status"])
    assert (status.state, status.format) == ("b.db", "json")
    assert build_parser(env, "report").parse_args(["report"]).format == "json"
    demo = build_parser(env, "demo").parse_args(["demo"])
    assert (demo.runs, demo.overwrite) == (7, True)


def test_a_subcommand_variable_the_option_refuses_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """BULKRETRY_REPORT_FORMAT=xml names the variable, exit 2."""
    with pytest.raises(SystemExit) as stopped:
        build_parser({"BULKRETRY_REPORT_FORMAT": "xml"}, "report")
    assert stopped.value.code == 2
    assert "BULKRETRY_REPORT_FORMAT" in capsys.readouterr().err


def test_another_commands_variables_draw_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """BULKRETRY_SIMULATE_PORT set while running `run` is known, not a typo."""
    main(["run", "--dry-run", "/dev/null"], env={"BULKRETRY_SIMULATE_PORT": "8080"})
    assert "unknown variable" not in capsys.readouterr().err
