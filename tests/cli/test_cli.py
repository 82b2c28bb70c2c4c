"""The command line: options, environment, credentials, output safety and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkretry._cli.main import main
from bulkretry._cli.options import RUN_OPTIONS

RUN_A = "4fb0418e-1804-45d6-8d56-dd51f05c0baf"
CREDS = {
    "BULKRETRY_ACCESS_TOKEN": "tok-very-secret",
    "BULKRETRY_API_KEY": "key",
    "BULKRETRY_ORG_ID": "ORG@AdobeOrg",
}


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def bulkretry_process(*argv: str, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Run ``python -m bulkretry ARGV`` from this checkout (stdin, stdout, input as given)."""
    kwargs.setdefault("stderr", subprocess.PIPE)
    if "stdout" not in kwargs:
        kwargs["stdout"] = subprocess.PIPE
    return subprocess.run(
        [sys.executable, "-m", "bulkretry", *argv],
        env={**os.environ, **(env or {}), "PYTHONPATH": os.getcwd()},
        timeout=60,
        check=False,
        **kwargs,
    )


def test_help_shows_every_run_option_with_its_environment_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--help names each option's BULKRETRY_ variable and its default."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"], env={})
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in RUN_OPTIONS:
        assert option.flags[-1] in text
        assert f"env {option.env};" in text


def test_on_ambiguous_defaults_to_check_and_help_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --on-ambiguous a maybe-processed request is looked up, never re-sent on a guess."""
    [option] = [o for o in RUN_OPTIONS if o.flags == ("--on-ambiguous",)]
    assert option.default == "check"
    with pytest.raises(SystemExit):
        main(["run", "--help"], env={})
    text = " ".join(capsys.readouterr().out.split())
    assert "env BULKRETRY_ON_AMBIGUOUS; default check]" in text


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints 'bulkretry X.Y.Z'."""
    from bulkretry import __version__

    with pytest.raises(SystemExit):
        main(["--version"], env={})
    assert capsys.readouterr().out.strip() == f"bulkretry {__version__}"


def test_missing_credentials_exit_2_naming_each_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without credentials the run stops before reading, naming what is missing."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN_A + "\n")
    code = main(["run", str(ids), "-o", str(tmp_path / "out.jsonl")], env={})
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    for name in ("BULKRETRY_ACCESS_TOKEN", "BULKRETRY_API_KEY", "BULKRETRY_ORG_ID"):
        assert name in err
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").stat().st_size == 0


def test_bad_option_value_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-numeric --rate is a usage error: exit 2, one line, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--rate", "fast"], env={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--rate" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "words",
    [
        ["run", "--rat", "5", "--dry-run"],
        ["run", "--dry", "--rate", "5"],
        ["list-failed", "--all", "--since", "1h"],
        ["check", "--time", "5"],
    ],
)
def test_an_abbreviated_flag_is_a_typo_not_the_flag_it_begins(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--rat is not --rate: exit 2 before anything runs, naming what was not understood."""
    with pytest.raises(SystemExit) as exit_info:
        main(words, env={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"unrecognized arguments: {words[1]}" in err


def test_bad_environment_value_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """BULKRETRY_CONCURRENCY=0 is refused with the variable's name."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--dry-run"], env={"BULKRETRY_CONCURRENCY": "0"})
    assert exit_info.value.code == 2
    assert "BULKRETRY_CONCURRENCY" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "variable"),
    [(["run", "/dev/null"], "BULKRETRY_DRY_RUN"), (["demo"], "BULKRETRY_DEMO_OVERWRITE")],
    ids=["run", "another-command"],
)
def test_a_boolean_variable_set_empty_is_a_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], argv: list[str], variable: str
) -> None:
    """`BULKRETRY_DRY_RUN=` meant a dry run, and was a real batch: on or off is not guessed."""
    assert main(argv, env={**CREDS, variable: ""}) == 2
    said = f"bulkretry {argv[0]}: error: {variable} is empty: set it to 1 or 0, or unset it\n"
    assert capsys.readouterr().err == said


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["report", "/dev/null"], ["run", "--dry-run", "-q", "/dev/null"]],
    ids=["version", "another-command", "flag-given"],
)
def test_a_boolean_variable_set_empty_stops_only_the_command_that_reads_it_unflagged(
    argv: list[str],
) -> None:
    """Every command builds run's options: an empty BULKRETRY_DRY_RUN stopped `--version` and
    `report` too, and a flag that says on or off could not get round it."""
    env = {"BULKRETRY_DRY_RUN": "", "BULKRETRY_DEMO_OVERWRITE": ""}
    try:
        code = main(argv, env=env)
    except SystemExit as exc:  # --version
        code = int(exc.code or 0)
    assert code == 0


def test_any_other_variable_set_empty_counts_as_unset(tmp_path: Path) -> None:
    """A templated env file leaves `BULKRETRY_RATE=`: the default rate, as before."""
    env = {"BULKRETRY_RATE": "", "BULKRETRY_OUTPUT": ""}
    assert main(["run", "--dry-run", "-q", "/dev/null"], env=env) == 0


def test_flag_wins_over_environment(tmp_path: Path) -> None:
    """--op on the command line overrides BULKRETRY_OP (the env value would be rejected)."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN_A + "\n")
    out = tmp_path / "out.jsonl"
    code = main(
        ["run", "--dry-run", "--op", "RE_TRIGGER", str(ids), "-o", str(out)],
        env={"BULKRETRY_OP": "bad op"},
    )
    assert code == 0


def test_dry_run_reports_would_retrigger_and_exit_0_when_all_valid(tmp_path: Path) -> None:
    """--dry-run needs no credentials and writes one line per input record."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"\ufeff{RUN_A}\r\n\n# comment\n{RUN_A.upper()}\n")
    out = tmp_path / "out.jsonl"
    assert main(["run", "--dry-run", str(ids), "-o", str(out)], env={}) == 0
    records = lines(out)
    assert [r["outcome"] for r in records] == ["would_retrigger", "duplicate"]
    assert [r["line"] for r in records] == [1, 4]
    assert records[0]["source"] == str(ids)


def test_dry_run_with_an_invalid_line_exits_1(tmp_path: Path) -> None:
    """An invalid line makes the exit code 1, even in a dry run."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{RUN_A}\nnot-an-id\n")
    assert main(["run", "--dry-run", str(ids), "-o", str(tmp_path / "o")], env={}) == 1


def test_missing_input_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing input is a usage error found before anything is sent."""
    code = main(["run", str(tmp_path / "nope.txt")], env=CREDS)
    assert code == 2
    assert "not found" in capsys.readouterr().err


def test_directory_as_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory given as input is refused with one line."""
    assert main(["run", str(tmp_path)], env=CREDS) == 2
    assert "directory" in capsys.readouterr().err


def test_existing_output_is_refused_without_append_or_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-empty results file is never clobbered by accident."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN_A + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    assert main(["run", "--dry-run", str(ids), "-o", str(out)], env={}) == 2
    assert "--append or --overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert main(["run", "--dry-run", str(ids), "-o", str(out), "--append"], env={}) == 0
    assert out.read_text().startswith("precious\n{")
    assert main(["run", "--dry-run", str(ids), "-o", str(out), "--overwrite"], env={}) == 0
    assert len(lines(out)) == 1


def test_output_that_is_also_an_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writing results over the IDs being read would destroy the input."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN_A + "\n")
    assert main(["run", "--dry-run", str(ids), "-o", str(ids), "--overwrite"], env={}) == 2
    assert "also an input" in capsys.readouterr().err
    assert ids.read_text() == RUN_A + "\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--dry-run", "-", "--overwrite"],
        ["run", "--dry-run", "--overwrite"],
        ["run", "--dry-run", "-", "--append"],
        ["check", "-", "--overwrite"],
    ],
    ids=["run-dash", "run-no-file", "run-append", "check"],
)
def test_an_output_that_is_the_file_on_stdin_is_refused(tmp_path: Path, argv: list[str]) -> None:
    """`run - -o ids.txt --overwrite < ids.txt` cut the IDs to nothing after the first 64 KiB
    read (728 of 2,500 never sent, the list gone); with --append it read its own output without
    end. Stdin redirected from the output's file is an input like any FILE."""
    ids = tmp_path / "ids.txt"
    content = "".join(f"{i:08x}-1804-45d6-8d56-dd51f05c0baf\n" for i in range(3000))
    ids.write_text(content)
    with ids.open("rb") as stdin:
        proc = bulkretry_process(*argv, "-o", str(ids), stdin=stdin, env=CREDS)
    assert proc.returncode == 2, proc.stderr
    assert b"is also the input on stdin" in proc.stderr
    assert ids.read_text() == content


@pytest.mark.parametrize("from_stdin", [True, False], ids=["stdin", "file-argument"])
def test_a_stdout_appending_to_an_input_is_refused(tmp_path: Path, from_stdin: bool) -> None:
    """`run - < ids.txt >> ids.txt` (or `run ids.txt >> ids.txt`) read its own results without
    end, and SIGTERM could not stop it (a regular file is read to its end): exit 2 at once."""
    ids = tmp_path / "ids.txt"
    content = "".join(f"{i:08x}-1804-45d6-8d56-dd51f05c0baf\n" for i in range(5))
    ids.write_text(content)
    argv = ["run", "--dry-run", "-q", "-" if from_stdin else str(ids)]
    with ids.open("rb") as stdin, ids.open("ab") as stdout:
        proc = bulkretry_process(
            *argv, stdin=stdin if from_stdin else subprocess.DEVNULL, stdout=stdout
        )
    assert proc.returncode == 2, proc.stderr
    assert b"stdout is also the input" in proc.stderr
    assert ids.read_text() == content


def test_an_output_into_stdins_own_pipe_is_refused() -> None:
    """`cat ids | run - -o /dev/stdin` opened the write end of its own input and hung."""
    proc = bulkretry_process(
        "run", "--dry-run", "-", "-o", "/dev/stdin", input=(RUN_A + "\n").encode()
    )
    assert proc.returncode == 2, proc.stderr
    assert b"is also the input on stdin" in proc.stderr


def test_http_base_url_off_loopback_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Credentials never travel in clear text to a remote host."""
    assert main(["run", "--base-url", "http://example.com/fs"], env=CREDS) == 2
    assert "https://" in capsys.readouterr().err


def test_python_dash_m_behaves_as_the_command(tmp_path: Path) -> None:
    """`python -m bulkretry` runs the same CLI, reading stdin when no file is given."""
    proc = bulkretry_process("run", "--dry-run", "-q", input=(RUN_A + "\n").encode())
    assert proc.returncode == 0, proc.stderr
    [record] = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert record["outcome"] == "would_retrigger"
    assert record["source"] == "-"
    assert proc.stderr == b""


def test_a_ctrl_c_while_the_command_is_still_imported_is_exit_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first ~0.3 s of a command are Python importing it (aiohttp above all): nothing is
    read or sent yet, and a Ctrl-C there is a stop, not a crash with 20 lines of traceback."""
    from bulkretry._cli import main as main_module

    def importing(*_: object) -> list[str]:
        raise KeyboardInterrupt  # as if it landed while list-failed's module was imported

    monkeypatch.setattr(main_module, "known_variables", importing)
    monkeypatch.setattr(sys, "argv", ["bulkretry", "run", "--dry-run"])
    with pytest.raises(SystemExit) as stopped:
        main_module.entry()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == ""


def _results_file(path: Path) -> Path:
    runs = {
        "retriggered": "10000000-1804-45d6-8d56-dd51f05c0baf",
        "failed": "20000000-1804-45d6-8d56-dd51f05c0baf",
        "in_doubt": "30000000-1804-45d6-8d56-dd51f05c0baf",
        "not_attempted": "40000000-1804-45d6-8d56-dd51f05c0baf",
    }
    lines = [
        orjson.dumps(
            {"run_id": run_id, "outcome": outcome, "new_run_id": "n-" + outcome, "etag": "e"}
        )
        for outcome, run_id in runs.items()
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_results_file_fed_back_never_resends_retriggered_or_in_doubt(tmp_path: Path) -> None:
    """A results file piped back in: retriggered lines stay done, in_doubt ones stay held."""
    results = _results_file(tmp_path / "results.jsonl")
    out = tmp_path / "again.jsonl"
    assert main(["run", "--dry-run", str(results), "-o", str(out)], env={}) == 1
    by_line = {r["line"]: r for r in lines(out)}
    assert by_line[1]["outcome"] == "already_retriggered"
    assert by_line[1]["new_run_id"] == "n-retriggered"
    assert by_line[2]["outcome"] == "would_retrigger"
    assert by_line[3]["outcome"] == "in_doubt"
    assert by_line[4]["outcome"] == "would_retrigger"


def test_only_selects_outcomes_and_skips_the_rest(tmp_path: Path) -> None:
    """--only failed,in_doubt acts on those lines; others are skipped; in_doubt still held."""
    results = _results_file(tmp_path / "results.jsonl")
    out = tmp_path / "again.jsonl"
    main(["run", "--dry-run", "--only", "failed,in_doubt", str(results), "-o", str(out)], env={})
    assert [r["outcome"] for r in lines(out)] == [
        "skipped",
        "would_retrigger",
        "in_doubt",
        "skipped",
    ]
    out2 = tmp_path / "again2.jsonl"
    main(
        [
            "run",
            "--dry-run",
            "--only",
            "in_doubt",
            "--retry-in-doubt",
            str(results),
            "-o",
            str(out2),
        ],
        env={},
    )
    assert [r["outcome"] for r in lines(out2)] == [
        "skipped",
        "skipped",
        "would_retrigger",
        "skipped",
    ]


def test_only_on_plain_ids_piped_writes_no_record_before_its_usage_error() -> None:
    """A stdin led by run IDs streams; with --only it is read whole first, as --only selects by
    what all of it says: plain IDs are exit 2 with nothing on stdout (5 `skipped` records came
    out before the error, which a consumer downstream took for results)."""
    ids = "".join(f"{i:08x}-1804-45d6-8d56-dd51f05c0baf\n" for i in range(5))
    proc = bulkretry_process("run", "--dry-run", "--only", "failed", input=ids.encode())
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == b""
    assert b"--only needs results lines as input" in proc.stderr


def test_only_with_an_unknown_outcome_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--only names outcomes from the documented list."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--dry-run", "--only", "failed,bogus"], env={})
    assert exit_info.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_run_knows_every_commands_variables_without_importing_those_commands() -> None:
    """Every command warns of a typo'd BULKRETRY_* variable, so it must know the others'
    (list-failed's, watch's, check's), yet importing those commands brought the state file's
    and the listing's modules into every start-up of run (some 25 ms)."""
    script = (
        "import sys\n"
        "from bulkretry._cli.main import build_parser, known_variables\n"
        "build_parser({}, 'run')\n"
        "print(' '.join(known_variables()))\n"
        "print(' '.join(m for m in sys.modules if m.startswith('bulkretry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    known, imported = (set(line.split()) for line in done.stdout.splitlines())
    assert {
        "BULKRETRY_LIST_FAILED_SINCE",
        "BULKRETRY_LIST_FAILED_FLOW_ID",
        "BULKRETRY_LIST_FAILED_EXCLUDE",
        "BULKRETRY_WATCH_POLL",
        "BULKRETRY_CHECK_OUTPUT",
    } <= known
    heavy = {"bulkretry._cli.list_failed", "bulkretry._cli.watch", "bulkretry._cli.check"}
    heavy |= {"bulkretry._cli.state", "bulkretry._ledger", "bulkretry._listing.lister"}
    assert not heavy & imported


@pytest.mark.parametrize("command", ["run", "list-failed", "watch", "check"])
@pytest.mark.parametrize("source", ["--ca-bundle", "SSL_CERT_FILE"])
def test_a_missing_ca_bundle_is_refused_by_every_command_and_names_its_source(
    command: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked when the settings are built, before any request: `check` over nothing in doubt
    opens no session and exited 0 with a bundle that does not exist; SSL_CERT_FILE, set for
    other tools and forgotten, is named when the path came from it."""
    done = tmp_path / "done.jsonl"
    done.write_bytes(orjson.dumps({"run_id": RUN_A, "outcome": "retriggered"}) + b"\n")
    missing = str(tmp_path / "nope.pem")
    argv = {
        "run": ["run", str(done), "-o", str(tmp_path / "out.jsonl")],
        "list-failed": ["list-failed", "--all-flows"],
        "watch": ["watch", str(done)],
        "check": ["check", str(done)],
    }[command]
    env = {**CREDS, "BULKRETRY_BASE_URL": "http://127.0.0.1:9/x"}
    if source == "--ca-bundle":
        argv += ["--ca-bundle", missing]
    else:
        env["SSL_CERT_FILE"] = missing
    assert main(argv, env=env) == 2
    named = " (named by SSL_CERT_FILE)" if source == "SSL_CERT_FILE" else ""
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f"CA bundle {missing} does not exist{named}")
    )


def test_a_dry_run_without_its_pre_flight_reads_no_ca_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run sends nothing: an SSL_CERT_FILE that names no file does not stop it."""
    ids = tmp_path / "ids.txt"
    ids.write_text(RUN_A + "\n")
    env = {"SSL_CERT_FILE": str(tmp_path / "nope.pem")}
    assert main(["run", "--dry-run", "-q", str(ids), "-o", str(tmp_path / "o.jsonl")], env=env) == 0
